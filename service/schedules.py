"""Scheduled incremental pulls: stored in ``schedules``, published by every daemon's loop.

Each due row is claimed with ``FOR UPDATE SKIP LOCKED`` and moved to its next due time in
the same transaction that enqueues the sync request in the outbox, so with any number of
``run`` processes each due time is published once. The job id is derived from the schedule
and the due time, so even a replayed publish is one job.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from datetime import datetime, timedelta
from typing import Any

import asyncpg
import structlog

from service.errors import ValidationError
from service.messages import NAMESPACE, SyncRequest, rfc3339, utcnow

log = structlog.get_logger(__name__)

MIN_EVERY_S = 60
# A last run published this long ago and never started (no job row) counts as lost, not queued.
IN_FLIGHT_MAX_S = 3600.0
MAX_EVERY_S = 365 * 86400  # a year
_EVERY = re.compile(r"^\s*(\d+)\s*([smh])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600}
POLL_S = 5.0


def parse_every(text: str) -> int:
    """'15m' → 900; raise ValidationError for anything else or under 60 s."""
    match = _EVERY.match(text)
    if not match:
        raise ValidationError(f"--every {text!r}: expected <n>s, <n>m or <n>h, e.g. 15m")
    seconds = int(match[1]) * _UNIT_S[match[2]]
    if seconds < MIN_EVERY_S:
        raise ValidationError(f"--every {text!r}: at least {MIN_EVERY_S} s")
    if seconds > MAX_EVERY_S:  # the column is a 32-bit integer
        raise ValidationError(f"--every {text!r}: at most {MAX_EVERY_S // 86400} days")
    return seconds


def scheduled_job_id(venue_id: str, provider: str, entity: str, due: datetime) -> str:
    return str(uuid.uuid5(NAMESPACE, f"schedule:{venue_id}:{provider}:{entity}:{rfc3339(due)}"))


async def upsert(
    pool: Any, *, venue_id: str, provider: str, entity: str, every_s: int, options: dict[str, Any]
) -> asyncpg.Record:
    return await pool.fetchrow(
        """INSERT INTO schedules (venue_id, provider, entity, every_seconds, options, next_run_at)
           VALUES ($1, $2, $3, $4, $5, now())
           ON CONFLICT (venue_id, provider, entity) DO UPDATE SET every_seconds = EXCLUDED.every_seconds,
               options = EXCLUDED.options,
               next_run_at = LEAST(schedules.next_run_at, now() + make_interval(secs => EXCLUDED.every_seconds))
           RETURNING *""",
        venue_id,
        provider,
        entity,
        every_s,
        options,
    )


async def list_all(pool: Any) -> list[asyncpg.Record]:
    return await pool.fetch("SELECT * FROM schedules ORDER BY venue_id, provider, entity")


async def delete(pool: Any, *, venue_id: str, provider: str, entity: str) -> int:
    result: str = await pool.execute(
        "DELETE FROM schedules WHERE venue_id = $1 AND provider = $2 AND entity = $3",
        venue_id,
        provider,
        entity,
    )
    return int(result.split()[-1])


async def publish_due(pool: Any, routes: Any, *, limit: int = 100) -> list[Any]:
    """Claim due schedules, enqueue their sync requests, move them on; return the outbox rows."""
    from service.database import outbox as outbox_db

    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            """SELECT s.*, (j.status IN ('pending', 'running')
                            OR (j.job_id IS NULL AND s.last_run_at > now() - make_interval(secs => $2))
                           ) AS last_in_flight,
                      EXISTS (SELECT 1 FROM credentials AS c
                              WHERE c.venue_id = s.venue_id AND c.provider = s.provider) AS connected
               FROM schedules AS s LEFT JOIN sync_jobs AS j ON j.job_id = s.last_job_id
               WHERE s.next_run_at <= now() ORDER BY s.next_run_at
               LIMIT $1 FOR UPDATE OF s SKIP LOCKED""",
            limit,
            IN_FLIGHT_MAX_S,
        )
        messages = []
        for row in rows:
            due = row["next_run_at"]
            job_id = scheduled_job_id(row["venue_id"], row["provider"], row["entity"], due)
            if row["last_in_flight"] or not row["connected"]:
                # The last run is still queued or running (a second pull beside it would spend
                # the quota twice and write the cursor in turns), or the venue's credential was
                # deleted (each run would be a dead letter): this due time is skipped.
                reason = "last_run_in_flight" if row["last_in_flight"] else "venue_not_connected"
                log.info("schedule_skipped", reason=reason, venue_id=row["venue_id"],
                         provider=row["provider"], entity=row["entity"], last_job_id=row["last_job_id"])
                await conn.execute(
                    "UPDATE schedules SET next_run_at = $4 WHERE venue_id = $1 AND provider = $2 AND entity = $3",
                    row["venue_id"], row["provider"], row["entity"],
                    _next_due(due, row["every_seconds"], utcnow()),
                )
                continue
            request = SyncRequest(
                job_id=job_id,
                venue_id=row["venue_id"],
                provider=row["provider"],
                entity=row["entity"],
                direction="pull",
                mode="incremental",
                options=row["options"],
            )
            messages.append(routes.sync_request(request, message_id=f"schedule-{job_id}"))
            next_due = _next_due(due, row["every_seconds"], utcnow())
            await conn.execute(
                """UPDATE schedules SET next_run_at = $4, last_run_at = now(), last_job_id = $5
                   WHERE venue_id = $1 AND provider = $2 AND entity = $3""",
                row["venue_id"],
                row["provider"],
                row["entity"],
                next_due,
                job_id,
            )
        return await outbox_db.enqueue(conn, messages)


def _next_due(due: datetime, every_s: int, now: datetime) -> datetime:
    """The first due time after now on the schedule's grid (missed runs are not replayed)."""
    step = timedelta(seconds=every_s)
    missed = max(0, int((now - due) / step))
    return due + step * (missed + 1)


async def schedule_loop(pool: Any, routes: Any, relay: Any, stop: asyncio.Event) -> None:
    """The daemon's schedule publisher (lifecycle starts it beside the relay)."""
    while not stop.is_set():
        try:
            stored = await publish_due(pool, routes)
            if stored:
                log.info("schedules_published", count=len(stored))
                await relay.publish_stored(stored)
        except Exception as exc:
            log.warning("schedule_loop_error", error=f"{exc.__class__.__name__}: {exc}")
        try:
            await asyncio.wait_for(stop.wait(), timeout=POLL_S)
        except TimeoutError:
            pass
