"""`schedules set / list / delete`: periodic incremental pulls run by the daemon."""

from __future__ import annotations

import json
from typing import Any

import click

from service.cli import CommandError, load, run_async
from service.config import PROVIDERS


@click.group()
def schedules() -> None:
    """Periodic incremental pulls; every `run` process publishes each due time once."""


@schedules.command("set")
@click.option("--venue", required=True)
@click.option("--provider", required=True, type=click.Choice(PROVIDERS))
@click.option("--entity", required=True)
@click.option("--every", required=True, help="Interval <n>s, <n>m or <n>h; at least 60 s.")
@click.option("--option", "option_pairs", multiple=True, help="KEY=VALUE passed to each pull (repeatable).")
def set_schedule(venue: str, provider: str, entity: str, every: str, option_pairs: tuple[str, ...]) -> None:
    """Create or change a schedule; the first pull is due now."""
    from service.cli.daemon import _parse_options
    from service.entities import check_supported
    from service.schedules import parse_every

    check_supported(provider, entity, "pull")
    every_s = parse_every(every)
    options = _parse_options(option_pairs)
    settings = load()

    async def store() -> Any:
        from service.database import credentials as credentials_db
        from service.database import open_pool
        from service.errors import UnknownEntityError
        from service.schedules import upsert

        async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1) as pool:
            if not await credentials_db.venue_known(pool, venue, provider):
                raise UnknownEntityError(f"unknown venue {venue!r} for {provider}")
            return await upsert(
                pool, venue_id=venue, provider=provider, entity=entity, every_s=every_s, options=options
            )

    row = run_async(store())
    click.echo(
        f"scheduled {provider} {entity} for {venue} every {every_s} s; next run {_iso(row['next_run_at'])}"
    )


def _iso(value: Any) -> str:
    from service.messages import rfc3339

    return rfc3339(value)


@schedules.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def list_schedules(as_json: bool) -> None:
    """List schedules with their next due time."""
    settings = load()

    async def fetch() -> list[Any]:
        from service.database import open_pool
        from service.schedules import list_all

        async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1) as pool:
            return await list_all(pool)

    rows = run_async(fetch())
    for row in rows:
        item = {
            "venue_id": row["venue_id"],
            "provider": row["provider"],
            "entity": row["entity"],
            "every_seconds": row["every_seconds"],
            "next_run_at": _iso(row["next_run_at"]),
            "options": row["options"],
            "last_job_id": row["last_job_id"],
        }
        if as_json:
            click.echo(json.dumps(item, sort_keys=True))
        else:
            click.echo(
                f"{item['venue_id']}  {item['provider']}  {item['entity']}  every {item['every_seconds']} s  "
                f"next {item['next_run_at']}"
            )
    if not rows and not as_json:
        click.echo("no schedules", err=True)


@schedules.command("delete")
@click.option("--venue", required=True)
@click.option("--provider", required=True, type=click.Choice(PROVIDERS))
@click.option("--entity", required=True)
def delete_schedule(venue: str, provider: str, entity: str) -> None:
    """Delete a schedule."""
    settings = load()

    async def remove() -> int:
        from service.database import open_pool
        from service.schedules import delete

        async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1) as pool:
            return await delete(pool, venue_id=venue, provider=provider, entity=entity)

    if run_async(remove()) == 0:
        raise CommandError(f"no schedule for {venue} {provider} {entity}", 2)
    click.echo(f"deleted the schedule of {provider} {entity} for {venue}")


COMMANDS = [schedules]
