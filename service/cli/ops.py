"""Process commands: `migrate`, `run`, `ingress`, `sandbox`, `demo`."""

from __future__ import annotations

import click

from service.cli import load, run_async


@click.command()
def migrate() -> None:
    """Create the database if missing, apply schema.sql, declare the RabbitMQ topology.

    Idempotent and safe on every start.
    """
    settings = load()

    async def go() -> bool:
        from consumers.topology import declare_on
        from service.database import migrate_database
        from service.lifecycle import amqp_errors

        created = await migrate_database(settings.database_url.get_secret_value())
        async with amqp_errors(settings):
            await declare_on(settings.amqp_url.get_secret_value())
        return created

    created = run_async(go())
    click.echo(f"migrated: database {'created' if created else 'up to date'}, topology declared")


COMMANDS = [migrate]
