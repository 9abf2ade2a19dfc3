"""`dead-letters list / replay`: inspect and re-publish dead-lettered messages."""

from __future__ import annotations

import json
import uuid
from typing import Any

import click

from service.cli import CommandError, load, run_async


def dead_letter_json(row: Any) -> dict[str, Any]:
    from service.engine import readable_job_id
    from service.messages import parse_json_object, rfc3339

    try:
        job_id = readable_job_id(parse_json_object(bytes(row["body"])))
    except ValueError:
        job_id = None
    return {
        "id": row["id"],
        "message_id": row["message_id"],
        "job_id": row["job_id"] or job_id,
        "exchange": row["exchange"],
        "routing_key": row["routing_key"],
        "reason": row["reason"],
        "category": row["category"],
        "severity": row["severity"],
        "dead_lettered_at": rfc3339(row["dead_lettered_at"]),
        "replayed_at": None if row["replayed_at"] is None else rfc3339(row["replayed_at"]),
    }


@click.group("dead-letters")
def dead_letters() -> None:
    """Inspect and replay messages the daemon dead-lettered (stored in PostgreSQL)."""


@dead_letters.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@click.option("--limit", type=click.IntRange(1, 100000), default=1000, show_default=True)
def list_dead_letters(as_json: bool, limit: int) -> None:
    """List the newest stored dead letters (--limit of them), oldest of those first."""
    settings = load()

    async def fetch() -> list[dict[str, Any]]:
        from service.database import open_pool
        from service.database import outbox as outbox_db

        async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1) as pool:
            return [dead_letter_json(r) for r in await outbox_db.list_dead_letters(pool, limit=limit)]

    rows = run_async(fetch())
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    if not rows:
        click.echo("no dead letters", err=True)
    for r in rows:
        replayed = f" (replayed {r['replayed_at']})" if r["replayed_at"] else ""
        click.echo(
            f"{r['id']}  {r['dead_lettered_at']}  {r['routing_key']}  {r['category']}: "
            f"{r['reason']}{replayed}"
        )


@dead_letters.command("replay")
@click.option("--id", "ids", type=int, multiple=True, help="The dead letter's id (repeatable).")
@click.option("--all", "replay_all", is_flag=True, help="Every dead letter not replayed yet.")
def replay(ids: tuple[int, ...], replay_all: bool) -> None:
    """Re-publish stored bodies to their original exchange and routing key (new message id)."""
    if bool(ids) == replay_all:
        raise CommandError("give --id ID (one or more) or --all", 2)
    settings = load()
    count = run_async(_replay(settings, list(ids) if ids else None))
    click.echo(f"replayed {count} dead letter{'s' if count != 1 else ''}")


async def _replay(settings: Any, ids: list[int] | None) -> int:
    """Publish each row, then mark it replayed in its own transaction (its row locked while
    it goes out): a replay that fails part way keeps the marks of what was published, so
    running it again does not publish those twice."""
    import aio_pika

    from consumers.publishers import AmqpPublisher
    from service.database import open_pool
    from service.database import outbox as outbox_db
    from service.lifecycle import amqp_errors

    async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            rows = await outbox_db.get_dead_letters(conn, ids, for_update=False)
        missing = sorted(set(ids or []) - {r["id"] for r in rows})
        if missing:
            raise CommandError(f"unknown dead-letter id {missing[0]}", 2)
        async with amqp_errors(settings):
            connection = await aio_pika.connect(settings.amqp_url.get_secret_value(), timeout=15)
        replayed = 0
        async with connection:
            publisher = AmqpPublisher(await connection.channel(publisher_confirms=True))
            for row in rows:
                async with pool.acquire() as conn, conn.transaction():
                    locked = await outbox_db.get_dead_letters(conn, [row["id"]])
                    if not locked or (ids is None and locked[0]["replayed_at"] is not None):
                        continue  # another replay has it, or had it meanwhile
                    message_id = str(uuid.uuid4())
                    await publisher.publish(_replayed_message(locked[0], message_id))
                    await outbox_db.mark_replayed(conn, row["id"], message_id)
                replayed += 1
                click.echo(f"replayed {row['id']} to {row['exchange']} {row['routing_key']}", err=True)
    return replayed


def _replayed_message(row: Any, message_id: str) -> Any:
    from service.database.outbox import OutboxMessage

    props = row["properties"] or {}
    return OutboxMessage(
        exchange=row["exchange"],
        routing_key=row["routing_key"],
        body=bytes(row["body"]),
        message_id=message_id,
        correlation_id=props.get("correlation_id"),
        reply_to=props.get("reply_to"),
        headers={k: v for k, v in (row["headers"] or {}).items() if not k.startswith("x-")},
    )


COMMANDS = [dead_letters]
