"""Schedules: parsing, the CLI, and one publish per due time across concurrent publishers."""

from __future__ import annotations

import asyncio
import json
import subprocess
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from consumers.publishers import MessageRoutes
from service.errors import ValidationError
from service.schedules import _next_due, parse_every, publish_due, upsert
from service.vault import Vault, key_provider_from_settings


@pytest.mark.parametrize(("text", "seconds"), [("60s", 60), ("15m", 900), ("2h", 7200), (" 5m ", 300)])
def test_parse_every_accepts_units(text: str, seconds: int) -> None:
    """<n>s/m/h parse to seconds."""
    assert seconds == parse_every(text)


@pytest.mark.parametrize("text", ["59s", "1m30", "15", "m", "-5m", "1d", "8761h", "99999999999h"])
def test_parse_every_refuses_bad_or_short_intervals(text: str) -> None:
    """Anything else, or under 60 s, is a one-line validation error naming --every."""
    with pytest.raises(ValidationError, match="--every"):
        parse_every(text)


def test_next_due_skips_missed_runs_and_stays_on_the_grid() -> None:
    """After downtime the next run is the first grid point after now, not a burst of catch-ups."""
    due = datetime(2026, 1, 1, tzinfo=UTC)
    now = due + timedelta(seconds=1000)
    assert due + timedelta(seconds=1200) == _next_due(due, 300, now)


async def test_concurrent_publishers_publish_each_due_time_once(
    pool: Any, settings: Any, venue_id: str
) -> None:
    """Five concurrent publish passes (as from five daemons) enqueue the due pull once."""
    await Vault(pool, key_provider_from_settings(settings)).set(venue_id, "stripe", "api_key", "sk_test_abc123")
    await upsert(pool, venue_id=venue_id, provider="stripe", entity="customers", every_s=600, options={})
    results = await asyncio.gather(*(publish_due(pool, MessageRoutes()) for _ in range(5)))
    ids = [stored.id for batch in results for stored in batch]
    bodies = await pool.fetch("SELECT body FROM outbox WHERE id = ANY($1::bigint[])", ids)
    mine = [
        json.loads(bytes(b["body"])) for b in bodies if json.loads(bytes(b["body"]))["venue_id"] == venue_id
    ]
    assert 1 == len(mine)
    assert ("pull", "incremental") == (mine[0]["direction"], mine[0]["mode"])
    next_run = await pool.fetchval("SELECT next_run_at FROM schedules WHERE venue_id = $1", venue_id)
    assert next_run > datetime.now(UTC) + timedelta(seconds=500)


async def test_schedules_cli_set_list_delete(
    pool: Any, settings: Any, service_env: dict[str, str], venue_id: str
) -> None:
    """The CLI stores, lists (JSON) and deletes a schedule; an unknown venue exits 2."""
    await Vault(pool, key_provider_from_settings(settings)).set(
        venue_id, "stripe", "api_key", "sk_test_abc123"
    )

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [".venv/bin/integration-service", "schedules", *args],
            env=service_env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    base = ["--venue", venue_id, "--provider", "stripe", "--entity", "customers"]
    assert 0 == cli("set", *base, "--every", "15m").returncode
    listed = [json.loads(line) for line in cli("list", "--json").stdout.splitlines()]
    mine = [item for item in listed if item["venue_id"] == venue_id]
    assert [900] == [item["every_seconds"] for item in mine]
    assert {"venue_id", "provider", "entity", "every_seconds", "next_run_at"} <= set(mine[0])
    unknown = cli(
        "set", "--venue", "nobody-here", "--provider", "stripe", "--entity", "customers", "--every", "5m"
    )
    assert 2 == unknown.returncode and 1 == len(unknown.stderr.strip().splitlines())
    short = cli("set", *base, "--every", "30s")
    assert 2 == short.returncode and "--every" in short.stderr
    assert 0 == cli("delete", *base).returncode
    assert 2 == cli("delete", *base).returncode


async def test_a_due_time_is_skipped_while_the_last_run_is_queued_or_running_or_the_venue_is_gone(
    pool: Any, settings: Any, venue_id: str
) -> None:
    """Each due time has its own job_id, so job locks cannot stop two scheduled pulls of one
    entity running at once (a pull longer than its interval, a backed-up queue): a due time
    whose last run is still queued or running is skipped; once that run ended, it fires. A
    venue whose credential was deleted is skipped too (each run was a dead letter)."""
    vault = Vault(pool, key_provider_from_settings(settings))
    await vault.set(venue_id, "stripe", "api_key", "sk_test_abc123")
    await upsert(pool, venue_id=venue_id, provider="stripe", entity="customers", every_s=600, options={})

    async def fire() -> int:
        await pool.execute("UPDATE schedules SET next_run_at = now() - interval '1 second' WHERE venue_id = $1",
                           venue_id)
        stored = await publish_due(pool, MessageRoutes())
        return sum(1 for item in stored if json.loads(item.message.body)["venue_id"] == venue_id)

    assert 1 == await fire()
    last = await pool.fetchval("SELECT last_job_id FROM schedules WHERE venue_id = $1", venue_id)
    assert 0 == await fire()  # published, not consumed yet (no job row)
    await pool.execute(
        """INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, status)
           VALUES ($1, $2, 'stripe', 'customers', 'pull', 'incremental', 'running')""",
        last, venue_id,
    )  # fmt: skip
    assert 0 == await fire()  # running
    assert await pool.fetchval("SELECT next_run_at > now() FROM schedules WHERE venue_id = $1", venue_id)
    await pool.execute("UPDATE sync_jobs SET status = 'succeeded' WHERE job_id = $1", last)
    assert 1 == await fire()
    last = await pool.fetchval("SELECT last_job_id FROM schedules WHERE venue_id = $1", venue_id)
    await pool.execute(
        """INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, status)
           VALUES ($1, $2, 'stripe', 'customers', 'pull', 'incremental', 'succeeded')""",
        last, venue_id,
    )  # fmt: skip
    await vault.delete(venue_id, "stripe", None)
    assert 0 == await fire()  # the venue is gone
