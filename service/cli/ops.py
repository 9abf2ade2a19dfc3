"""Process commands: `migrate` (here); `run`, `ingress`, `demo` live in their own modules."""

from __future__ import annotations

import logging

import click

from service.cli import load, run_async
from service.config import Settings

# Several `migrate`s may start at once (compose restarts, a few daemons): one wins the
# CREATE DATABASE, the others see the database on their next look.
CREATE_ATTEMPTS = 3


async def _migrate_database(dsn: str) -> bool:
    import asyncpg

    from service.database import migrate_database

    for attempt in range(1, CREATE_ATTEMPTS + 1):
        try:
            return await migrate_database(dsn)
        except (asyncpg.UniqueViolationError, asyncpg.DuplicateDatabaseError):
            if attempt == CREATE_ATTEMPTS:
                raise
    raise AssertionError("unreachable")


async def _migrate(settings: Settings) -> bool:
    from consumers.topology import declare_on
    from service.lifecycle import amqp_errors

    created = await _migrate_database(settings.database_url.get_secret_value())
    # aiormq logs its own line for a refused connection; ours below says the same in one line.
    logging.getLogger("aiormq.connection").setLevel(logging.CRITICAL)
    async with amqp_errors(settings):
        await declare_on(settings.amqp_url.get_secret_value())
    return created


@click.command()
def migrate() -> None:
    """Create the database if missing, apply schema.sql, declare the RabbitMQ topology.

    Idempotent and safe on every start, also when several processes run it at once.
    Exit status 1 with one line when PostgreSQL or RabbitMQ cannot be reached.
    """
    settings = load()
    created = run_async(_migrate(settings))
    click.echo(f"migrated: database {'created' if created else 'up to date'}, topology declared")


COMMANDS = [migrate]
