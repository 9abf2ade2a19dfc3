"""`run`, `sync`, `jobs` and `dead-letters`: the daemon and what talks to it."""

from __future__ import annotations

import json
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import click

from service.cli import CommandError, ExitStatus, format_table, load, run_async
from service.config import PROVIDERS

PROVIDER = click.Choice(PROVIDERS)
JOB_STATUSES = ("pending", "running", "succeeded", "partial", "failed")


@click.command()
@click.option(
    "--port", type=click.IntRange(1, 65535), help="HTTP port for health and metrics [DAEMON_PORT, 8081]."
)
def run(port: int | None) -> None:
    """Run the daemon: consume sync requests and webhooks, relay events, check provider health.

    Serves /healthz, /readyz, /health and /metrics. SIGTERM stops consuming, lets in-flight
    work finish within SHUTDOWN_GRACE_SECONDS, hands back the rest, and exits 0.
    """
    settings = load(long_running=True)
    from service.lifecycle import run_daemon

    run_async(run_daemon(settings, port=port or settings.daemon_port))


def _parse_options(pairs: tuple[str, ...]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise CommandError(f"--option {pair!r}: expected KEY=VALUE", 2)
        options[key] = value
    return options


def _read_records(source: str | None) -> list[dict[str, Any]] | None:
    if source is None:
        return None
    try:
        text = sys.stdin.read() if source == "-" else Path(source).read_text(encoding="utf-8")
    except OSError as exc:
        raise CommandError(f"--records: cannot read {source}: {exc.strerror}", 2) from None
    except UnicodeDecodeError as exc:
        raise CommandError(f"--records: {source} is not UTF-8 text (byte {exc.start})", 2) from None
    try:
        records = json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"--records: not JSON: {exc.msg} at line {exc.lineno}", 2) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise CommandError("--records: expected a JSON array of objects", 2)
    return records


@click.command()
@click.option("--venue", required=True)
@click.option("--provider", required=True, type=PROVIDER)
@click.option("--entity", required=True)
@click.option("--direction", type=click.Choice(("pull", "push")), default="pull", show_default=True)
@click.option("--mode", type=click.Choice(("full", "incremental")), default="incremental", show_default=True)
@click.option("--records", "records_source", help="JSON array of records (push): a file, or - for stdin.")
@click.option("--option", "option_pairs", multiple=True, help="KEY=VALUE, e.g. list_id=abc (repeatable).")
@click.option("--job-id", help="Idempotency key of the job [a new UUID].")
@click.option("--wait", is_flag=True, help="Wait for the job result; print it as one JSON line.")
@click.option(
    "--timeout",
    type=click.FloatRange(min=1),
    default=300,
    show_default=True,
    help="Seconds to wait with --wait.",
)
def sync(
    venue: str,
    provider: str,
    entity: str,
    direction: str,
    mode: str,
    records_source: str | None,
    option_pairs: tuple[str, ...],
    job_id: str | None,
    wait: bool,
    timeout: float,
) -> None:
    """Publish a sync request and print {"job_id": ...}.

    With --wait, progress goes to stderr and stdout is exactly one line, the job result JSON;
    the exit status is 0 only if the job succeeded.
    """
    from pydantic import ValidationError as PydanticValidationError

    from service.entities import check_supported
    from service.messages import SyncRequest, first_error_line

    check_supported(provider, entity, direction)
    records = _read_records(records_source)
    try:
        request = SyncRequest(
            job_id=job_id or str(uuid.uuid4()),
            venue_id=venue,
            provider=provider,
            entity=entity,
            direction=direction,
            mode=mode,
            records=records,
            options=_parse_options(option_pairs),
        )
    except PydanticValidationError as exc:
        raise CommandError(f"invalid request: {first_error_line(exc)}", 2) from None
    settings = load()
    result = run_async(_publish_and_wait(settings, request, wait=wait, timeout_s=timeout))
    if result is None:
        click.echo(json.dumps({"job_id": request.job_id}))
        return
    click.echo(json.dumps(result, sort_keys=True))
    if result.get("status") != "succeeded":
        raise ExitStatus(1)  # CONTRACT section 1: exit 0 only if the job succeeded


async def _publish_and_wait(
    settings: Any, request: Any, *, wait: bool, timeout_s: float
) -> dict[str, Any] | None:
    import aio_pika

    from consumers.publishers import AmqpPublisher
    from consumers.topology import declare_topology
    from service.database import credentials as credentials_db
    from service.database import jobs as jobs_db
    from service.database import open_pool
    from service.errors import UnknownEntityError
    from service.lifecycle import amqp_errors

    async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2) as pool:
        if not await credentials_db.venue_known(pool, request.venue_id, request.provider):
            raise UnknownEntityError(f"unknown venue {request.venue_id!r} for {request.provider}")
        async with amqp_errors(settings):
            connection = await aio_pika.connect(
                settings.amqp_url.get_secret_value(),
                timeout=15,
                client_properties={"connection_name": "integration-service sync"},
            )
        async with connection:
            channel = await connection.channel(publisher_confirms=True)
            await declare_topology(channel)
            await AmqpPublisher(channel).publish_sync_request(request, message_id=str(uuid.uuid4()))
        if not wait:
            return None
        return await _wait_for_job(pool, jobs_db, request.job_id, timeout_s)


async def _wait_for_job(pool: Any, jobs_db: Any, job_id: str, timeout_s: float) -> dict[str, Any]:
    import asyncio

    deadline = time.monotonic() + timeout_s
    last_line = ""
    while True:
        row = await jobs_db.get_job(pool, job_id)
        if row is not None and row["status"] in ("succeeded", "partial", "failed") and row["result"]:
            return dict(row["result"])
        line = _progress_line(job_id, row)
        if line != last_line:
            click.echo(line, err=True)
            last_line = line
        if time.monotonic() > deadline:
            raise CommandError(f"job {job_id} did not finish within {timeout_s:g} s ({_status(row)})", 1)
        await asyncio.sleep(0.2)


def _status(row: Any) -> str:
    return "not started" if row is None else str(row["status"])


def _progress_line(job_id: str, row: Any) -> str:
    if row is None:
        return f"job {job_id}: queued"
    counts = row["counts"]
    extra = f", retrying: {row['last_error']}" if row["status"] == "pending" and row["last_error"] else ""
    return (
        f"job {job_id}: {row['status']}, processed {counts.get('processed', 0)} "
        f"(failed {counts.get('failed', 0)}), attempt {row['attempts']}{extra}"
    )


def _iso(value: Any) -> str | None:
    from service.messages import rfc3339

    return None if value is None else rfc3339(value)


def job_json(row: Any) -> dict[str, Any]:
    return {
        "job_id": row["job_id"],
        "venue_id": row["venue_id"],
        "provider": row["provider"],
        "entity": row["entity"],
        "direction": row["direction"],
        "mode": row["mode"],
        "status": row["status"],
        "attempts": row["attempts"],
        "counts": row["counts"],
        "errors": row["errors"],
        "started_at": _iso(row["started_at"]),
        "finished_at": _iso(row["finished_at"]),
        "created_at": _iso(row["created_at"]),
    }


@click.command()
@click.option("--venue", help="Only this venue.")
@click.option("--status", type=click.Choice(JOB_STATUSES), help="Only jobs in this status.")
@click.option("--limit", type=click.IntRange(1, 10000), default=50, show_default=True)
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
def jobs(venue: str | None, status: str | None, limit: int, as_json: bool) -> None:
    """Sync history from the database, newest first."""
    settings = load()

    async def fetch() -> list[dict[str, Any]]:
        from service.database import jobs as jobs_db
        from service.database import open_pool

        async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=1) as pool:
            return [
                job_json(r) for r in await jobs_db.list_jobs(pool, venue_id=venue, status=status, limit=limit)
            ]

    rows = run_async(fetch())
    if as_json:
        for row in rows:
            click.echo(json.dumps(row, sort_keys=True))
        return
    _table(
        ["JOB", "VENUE", "PROVIDER", "ENTITY", "DIR", "STATUS", "PROCESSED", "FAILED", "FINISHED"],
        [
            [
                r["job_id"],
                r["venue_id"],
                r["provider"],
                r["entity"],
                r["direction"],
                r["status"],
                str(r["counts"].get("processed", 0)),
                str(r["counts"].get("failed", 0)),
                r["finished_at"] or "-",
            ]
            for r in rows
        ],
    )


def _table(header: list[str], rows: list[list[str]]) -> None:
    if not rows:
        click.echo("nothing to show", err=True)
        return
    for line in format_table(header, rows):
        click.echo(line)


COMMANDS = [run, sync, jobs]
