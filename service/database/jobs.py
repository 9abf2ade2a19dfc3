"""SQL for sync jobs, per-record outcomes, pull cursors and what was last seen of records."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from service.database import outbox as outbox_db
from service.database.batching import JOB_SETTLE_TURNS, Coalescer
from service.database.outbox import OutboxMessage, StoredMessage

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool

JOB_COLUMNS = (
    "job_id, venue_id, provider, entity, direction, mode, status, attempts, options, counts, "
    "errors, message_id, reply_to, correlation_id, result, progress, last_error, created_at, "
    "started_at, finished_at, updated_at"
)
FINAL = ("succeeded", "partial", "failed")


async def get_job(conn: Conn, job_id: str, *, for_update: bool = False) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(f"SELECT {JOB_COLUMNS} FROM sync_jobs WHERE job_id = $1{lock}", job_id)


def _one_row_each(jobs: list[Start] | list[Finish] | list[Done]) -> None:
    """A statement cannot write one row twice: a batch holding a job_id twice (the same job
    delivered twice at once) is refused, and the Coalescer then runs its jobs one by one."""
    if len({job.job_id for job in jobs}) < len(jobs):
        raise ValueError("one job_id twice in a batch")


@dataclass(frozen=True, slots=True)
class Start:
    """One job to mark running, for ``start_jobs``."""

    job_id: str
    venue_id: str
    provider: str
    entity: str
    direction: str
    mode: str
    options: dict[str, Any]
    message_id: str | None
    reply_to: str | None
    correlation_id: str | None


async def start_jobs(conn: Conn, jobs: list[Start]) -> list[asyncpg.Record]:
    """Create each job or mark it running again, in one statement (group commit); a re-run
    of a failed job starts clean (its failed record outcomes are forgotten, so they are
    tried again) and counts attempts from 1. Per job, in order, the started row.

    A job already succeeded or partial is left alone: its row's job columns are then NULL
    and ``previous_status`` / ``previous_result`` say how it ended (a duplicate)."""
    _one_row_each(jobs)
    rows = await conn.fetch(
        f"""
        WITH input AS (
            SELECT job_id, venue_id, provider, entity, direction, mode, options::jsonb, message_id,
                   reply_to, correlation_id
            FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[],
                        $7::text[], $8::text[], $9::text[], $10::text[])
                AS i(job_id, venue_id, provider, entity, direction, mode, options, message_id, reply_to,
                     correlation_id)
        ), previous AS (
            SELECT j.job_id, j.status, j.result FROM sync_jobs AS j JOIN input USING (job_id)
        ), cleared AS (
            DELETE FROM sync_record_log AS l USING previous AS p
            WHERE l.job_id = p.job_id AND p.status = 'failed' AND l.outcome = 'failed'
        ), started AS (
            INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, options,
                message_id, reply_to, correlation_id, status, attempts, started_at)
            SELECT job_id, venue_id, provider, entity, direction, mode, options, message_id, reply_to,
                correlation_id, 'running', 1, now()
            FROM input
            ON CONFLICT (job_id) DO UPDATE SET
                status = 'running',
                attempts = CASE WHEN sync_jobs.status = 'failed' THEN 1 ELSE sync_jobs.attempts + 1 END,
                counts = CASE WHEN sync_jobs.status = 'failed' THEN
                    '{{"processed":0,"created":0,"updated":0,"skipped":0,"failed":0}}'::jsonb
                    ELSE sync_jobs.counts END,
                errors = CASE WHEN sync_jobs.status = 'failed' THEN '[]'::jsonb ELSE sync_jobs.errors END,
                result = NULL, finished_at = NULL,
                started_at = COALESCE(sync_jobs.started_at, now()),
                message_id = EXCLUDED.message_id,
                reply_to = COALESCE(EXCLUDED.reply_to, sync_jobs.reply_to),
                correlation_id = COALESCE(EXCLUDED.correlation_id, sync_jobs.correlation_id),
                updated_at = now()
            WHERE sync_jobs.status NOT IN ('succeeded', 'partial')
            RETURNING {JOB_COLUMNS}
        )
        SELECT input.job_id AS asked, started.*, previous.status AS previous_status,
               previous.result AS previous_result
        FROM input LEFT JOIN started ON started.job_id = input.job_id
                   LEFT JOIN previous ON previous.job_id = input.job_id
        """,
        [job.job_id for job in jobs],
        [job.venue_id for job in jobs],
        [job.provider for job in jobs],
        [job.entity for job in jobs],
        [job.direction for job in jobs],
        [job.mode for job in jobs],
        [json.dumps(job.options) for job in jobs],
        [job.message_id for job in jobs],
        [job.reply_to for job in jobs],
        [job.correlation_id for job in jobs],
    )
    by_job = {row["asked"]: row for row in rows}
    return [by_job[job.job_id] for job in jobs]


async def set_progress(
    conn: Conn, job_id: str, progress: dict[str, Any] | None, counts: dict[str, int]
) -> None:
    await conn.execute(
        "UPDATE sync_jobs SET progress = $2, counts = $3, updated_at = now() WHERE job_id = $1",
        job_id,
        progress,
        counts,
    )


async def set_pending_retry(conn: Conn, job_id: str, error: str) -> None:
    await conn.execute(
        "UPDATE sync_jobs SET status = 'pending', last_error = $2, updated_at = now()"
        " WHERE job_id = $1 AND status NOT IN ('succeeded', 'partial')",  # another delivery finished it
        job_id,
        error,
    )


Cursor = tuple[str, str, str, dict[str, Any]]  # (venue_id, provider, entity, cursor)


@dataclass(frozen=True, slots=True)
class Finish:
    """One job's final state for ``finish_jobs``: status, counts, errors and the result
    JSON; the messages that announce it; the pull cursor it reached, if any."""

    job_id: str
    status: str
    counts: dict[str, int]
    errors: list[dict[str, Any]]
    result: str  # the job result as JSON text (pydantic writes it faster than a dict goes through json)
    finished_at: datetime
    announce: list[OutboxMessage]
    cursor: Cursor | None = None


def _announced_tail(written: str, cursor_first: int) -> str:
    """The end of a statement that wrote jobs in the CTE named ``written`` (returning
    job_id): the pull cursors they reached and the messages announcing them, for those jobs
    only; then one row per written job and per outbox row. Parameters: $1-$9 the outbox
    arrays with their owners (_announced_args), ``$cursor_first``.. the five cursor arrays."""
    c = [f"${cursor_first + i}" for i in range(5)]
    return f"""
        reached AS (
            INSERT INTO pull_cursors (venue_id, provider, entity, cursor)
            SELECT DISTINCT ON (v, p, e) v, p, e, c::jsonb  -- two pulls of one entity: the later wins
            FROM unnest({c[0]}::text[], {c[1]}::text[], {c[2]}::text[], {c[3]}::text[], {c[4]}::text[])
                WITH ORDINALITY AS u(j, v, p, e, c, n)
            WHERE j IN (SELECT job_id FROM {written})
            ORDER BY v, p, e, n DESC
            ON CONFLICT (venue_id, provider, entity) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()
        ), announced AS (
            {outbox_db.insert_sql(1, owned_by=f"(SELECT job_id FROM {written})")}
        )
        SELECT job_id AS written, NULL::bigint AS id, NULL::text AS message_id, NULL::boolean AS pending,
            NULL::float8 AS age
        FROM {written}
        UNION ALL
        SELECT NULL, id, message_id, pending, age FROM announced"""


def _announced_args(jobs: list[Finish]) -> tuple[list[list[Any]], list[list[Any]]]:
    """The outbox arrays (with each message's job) and the cursor arrays of _announced_tail."""
    announce = outbox_db.unique([m for job in jobs for m in job.announce])
    owner = {m.message_id: job.job_id for job in jobs for m in job.announce}
    cursors = [(job.job_id, *job.cursor) for job in jobs if job.cursor is not None]
    outbox_args = [*outbox_db.insert_args(announce), [owner[m.message_id] for m in announce]]
    cursor_args = [[c[0] for c in cursors], [c[1] for c in cursors], [c[2] for c in cursors],
                   [c[3] for c in cursors], [json.dumps(c[4]) for c in cursors]]
    return outbox_args, cursor_args


def _per_job(jobs: list[Finish], rows: list[asyncpg.Record]) -> list[list[StoredMessage] | None]:
    written = {row["written"] for row in rows if row["written"] is not None}
    announced = [row for row in rows if row["written"] is None]
    return [
        outbox_db.pending(outbox_db.unique(job.announce), announced) if job.job_id in written else None
        for job in jobs
    ]


async def finish_jobs(conn: Conn, jobs: list[Finish]) -> list[list[StoredMessage] | None]:
    """Store jobs' final states, the pull cursors they reached and the messages announcing
    them, in one statement (atomic on its own, or part of the caller's transaction): group
    commit for concurrent jobs. Per job, in order, the outbox rows to publish; None for a
    job that had already succeeded or ended partial (another delivery of it finished
    first): nothing of it is written, so a job never goes back on its outcome and is
    announced once. Two jobs of one batch may not share a job_id."""
    _one_row_each(jobs)
    outbox_args, cursor_args = _announced_args(jobs)
    rows = await conn.fetch(
        f"""
        WITH input AS (
            SELECT job_id, status, counts::jsonb, errors::jsonb, result::jsonb, finished_at
            FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::timestamptz[])
                AS i(job_id, status, counts, errors, result, finished_at)
        ), finished AS (
            UPDATE sync_jobs AS j SET status = i.status, counts = i.counts, errors = i.errors,
                result = i.result, finished_at = i.finished_at, progress = NULL, updated_at = now(),
                last_error = CASE WHEN i.status = 'failed' THEN (i.errors -> -1 ->> 'message') ELSE NULL END
            FROM input AS i WHERE j.job_id = i.job_id AND j.status NOT IN ('succeeded', 'partial')
            RETURNING j.job_id
        ), {_announced_tail("finished", 16)}
        """,
        *outbox_args,
        [job.job_id for job in jobs],
        [job.status for job in jobs],
        [json.dumps(job.counts) for job in jobs],  # as text: a list would read as an array dimension
        [json.dumps(job.errors) for job in jobs],
        [job.result for job in jobs],
        [job.finished_at for job in jobs],
        *cursor_args,
    )
    return _per_job(jobs, rows)


@dataclass(frozen=True, slots=True)
class Done:
    """A new job that ended before anything about it was stored (a pull whose first page was
    its last and held nothing new), for ``create_finished_jobs``."""

    start: Start
    finish: Finish
    started_at: datetime

    @property
    def job_id(self) -> str:
        return self.start.job_id


async def create_finished_jobs(conn: Conn, jobs: list[Done]) -> list[list[StoredMessage] | None]:
    """Insert new jobs already finished, with the pull cursors they reached and the messages
    announcing them, in one statement: one round trip for a job instead of a start and a
    finish. Per job, in order, the outbox rows to publish, or None when its job_id already
    had a row (a redelivery, a re-run, a duplicate): nothing of that job was written, and it
    takes the usual way (start_jobs) that knows what to do with an earlier run."""
    _one_row_each(jobs)
    outbox_args, cursor_args = _announced_args([job.finish for job in jobs])
    rows = await conn.fetch(
        f"""
        WITH input AS (
            SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[],
                $15::text[], $16::text[], $17::text[], $18::text[], $19::text[], $20::text[],
                $21::text[], $22::text[], $23::text[], $24::timestamptz[], $25::timestamptz[])
                AS i(job_id, venue_id, provider, entity, direction, mode, options, message_id, reply_to,
                     correlation_id, status, counts, errors, result, started_at, finished_at)
        ), created AS (
            INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, options,
                message_id, reply_to, correlation_id, status, attempts, counts, errors, result,
                started_at, finished_at, last_error)
            SELECT job_id, venue_id, provider, entity, direction, mode, options::jsonb, message_id,
                reply_to, correlation_id, status, 1, counts::jsonb, errors::jsonb, result::jsonb,
                started_at, finished_at,
                CASE WHEN status = 'failed' THEN (errors::jsonb -> -1 ->> 'message') ELSE NULL END
            FROM input
            ON CONFLICT (job_id) DO NOTHING
            RETURNING job_id
        ), {_announced_tail("created", 26)}
        """,
        *outbox_args,
        [job.start.job_id for job in jobs],
        [job.start.venue_id for job in jobs],
        [job.start.provider for job in jobs],
        [job.start.entity for job in jobs],
        [job.start.direction for job in jobs],
        [job.start.mode for job in jobs],
        [json.dumps(job.start.options) for job in jobs],
        [job.start.message_id for job in jobs],
        [job.start.reply_to for job in jobs],
        [job.start.correlation_id for job in jobs],
        [job.finish.status for job in jobs],
        [json.dumps(job.finish.counts) for job in jobs],
        [json.dumps(job.finish.errors) for job in jobs],
        [job.finish.result for job in jobs],
        [job.started_at for job in jobs],
        [job.finish.finished_at for job in jobs],
        *cursor_args,
    )
    return _per_job([job.finish for job in jobs], rows)


async def ensure_job_row(
    conn: asyncpg.Connection,
    *,
    job_id: str,
    venue_id: str,
    provider: str,
    entity: str,
    direction: str,
    mode: str,
) -> None:
    """Make sure a job row exists (for requests dead-lettered before they started)."""
    await conn.execute(
        """INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, status, started_at)
           VALUES ($1, $2, $3, $4, $5, $6, 'running', now()) ON CONFLICT (job_id) DO NOTHING""",
        job_id,
        venue_id,
        provider,
        entity,
        direction,
        mode,
    )


async def prune_finished_jobs(conn: Conn, *, older_than_s: float, batch: int = outbox_db.PRUNE_BATCH) -> int:
    """Delete jobs that finished more than ``older_than_s`` ago, with their record log (ON
    DELETE CASCADE), a batch per statement (found by sync_jobs_status_idx); running and
    pending jobs stay whatever their age. By finish time, not creation: an old job finished
    only now (a replayed dead letter) keeps its result for the whole retention, so a
    redelivery still finds it done. Return how many jobs went."""
    return await outbox_db.prune_in_batches(
        conn,
        """DELETE FROM sync_jobs WHERE job_id IN (
               SELECT job_id FROM sync_jobs
               WHERE status IN ('succeeded', 'partial', 'failed')
                 AND COALESCE(finished_at, updated_at) < now() - make_interval(secs => $1)
               LIMIT $2)""",
        older_than_s,
        batch=batch,
    )


async def list_jobs(
    conn: Conn, *, venue_id: str | None, status: str | None, limit: int
) -> list[asyncpg.Record]:
    return await conn.fetch(
        f"""SELECT {JOB_COLUMNS} FROM sync_jobs
            WHERE ($1::text IS NULL OR venue_id = $1) AND ($2::text IS NULL OR status = $2)
            ORDER BY created_at DESC, job_id LIMIT $3""",
        venue_id,
        status,
        limit,
    )


# Per-record outcomes -------------------------------------------------------------------


async def recorded_outcomes(conn: Conn, job_id: str) -> dict[tuple[str, str], asyncpg.Record]:
    """(record id, operation) → stored outcome, for resuming a push after a crash."""
    rows = await conn.fetch(
        "SELECT record_id, operation, outcome, external_id, category, severity, message "
        "FROM sync_record_log WHERE job_id = $1",
        job_id,
    )
    return {(r["record_id"], r["operation"]): r for r in rows}


async def outcome_tally(conn: Conn, job_id: str) -> tuple[dict[str, int], list[dict[str, Any]]]:
    """Counts and record errors rebuilt from the stored per-record outcomes."""
    rows = await conn.fetch(
        "SELECT record_id, outcome, category, severity, message FROM sync_record_log WHERE job_id = $1 ORDER BY id",
        job_id,
    )
    counts = {"processed": len(rows), "created": 0, "updated": 0, "skipped": 0, "failed": 0}
    errors = []
    for row in rows:
        counts[row["outcome"]] += 1
        if row["outcome"] == "failed":
            errors.append(
                {
                    "record_id": row["record_id"],
                    "category": row["category"] or "unknown",
                    "severity": row["severity"] or "medium",
                    "message": row["message"] or "",
                }
            )
    return counts, errors


async def log_records(conn: asyncpg.Connection, job_id: str, rows: list[tuple[Any, ...]]) -> None:
    """Insert outcome rows: (record_id, operation, outcome, external_id, key, category, severity, message)."""
    if not rows:
        return
    await conn.executemany(
        """INSERT INTO sync_record_log (job_id, record_id, operation, outcome, external_id,
               idempotency_key, category, severity, message)
           VALUES ($1, $2, $3, $4, $5, $6::uuid, $7, $8, $9)
           ON CONFLICT (job_id, record_id, operation) DO UPDATE SET
               outcome = EXCLUDED.outcome, external_id = EXCLUDED.external_id,
               category = EXCLUDED.category, severity = EXCLUDED.severity,
               message = EXCLUDED.message, at = now()""",
        [(job_id, *row) for row in rows],
    )


# Cursors and record state -------------------------------------------------------------


CursorKey = tuple[str, str, str]  # (venue_id, provider, entity)


async def get_cursors(conn: Conn, keys: list[CursorKey]) -> list[dict[str, Any] | None]:
    """The stored pull cursors of several (venue, provider, entity) in one statement (the
    incremental pulls starting at the same moment), in order; None where there is none."""
    rows = await conn.fetch(
        """SELECT i.n, c.cursor
           FROM unnest($1::text[], $2::text[], $3::text[]) WITH ORDINALITY AS i(v, p, e, n)
           LEFT JOIN pull_cursors AS c ON c.venue_id = i.v AND c.provider = i.p AND c.entity = i.e""",
        [k[0] for k in keys],
        [k[1] for k in keys],
        [k[2] for k in keys],
    )
    found = {row["n"]: row["cursor"] for row in rows}
    return [found[n] for n in range(1, len(keys) + 1)]


async def put_cursor(conn: Conn, venue_id: str, provider: str, entity: str, cursor: dict[str, Any]) -> None:
    await conn.execute(
        """INSERT INTO pull_cursors (venue_id, provider, entity, cursor) VALUES ($1, $2, $3, $4)
           ON CONFLICT (venue_id, provider, entity) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()""",
        venue_id,
        provider,
        entity,
        cursor,
    )


async def record_states(
    conn: Conn, venue_id: str, provider: str, entity: str, external_ids: list[str]
) -> dict[str, asyncpg.Record]:
    rows = await conn.fetch(
        """SELECT external_id, platform_id, version, updated_at, content_hash, deleted FROM record_state
           WHERE venue_id = $1 AND provider = $2 AND entity = $3 AND external_id = ANY($4::text[])""",
        venue_id,
        provider,
        entity,
        external_ids,
    )
    return {r["external_id"]: r for r in rows}


async def platform_links(
    conn: Conn, venue_id: str, provider: str, entity: str, platform_ids: list[str]
) -> dict[str, str]:
    """platform id → provider id for records already linked."""
    rows = await conn.fetch(
        """SELECT platform_id, external_id FROM record_state
           WHERE venue_id = $1 AND provider = $2 AND entity = $3 AND platform_id = ANY($4::text[])""",
        venue_id,
        provider,
        entity,
        platform_ids,
    )
    return {r["platform_id"]: r["external_id"] for r in rows}


async def upsert_record_states(
    conn: asyncpg.Connection, venue_id: str, provider: str, entity: str, rows: list[tuple[Any, ...]]
) -> None:
    """Rows: (external_id, platform_id, version, updated_at, content_hash, deleted)."""
    if not rows:
        return
    await conn.executemany(
        """INSERT INTO record_state (venue_id, provider, entity, external_id, platform_id, version,
               updated_at, content_hash, deleted)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
           ON CONFLICT (venue_id, provider, entity, external_id) DO UPDATE SET
               platform_id = COALESCE(EXCLUDED.platform_id, record_state.platform_id),
               version = EXCLUDED.version, updated_at = EXCLUDED.updated_at,
               content_hash = EXCLUDED.content_hash, deleted = EXCLUDED.deleted, seen_at = now()""",
        [(venue_id, provider, entity, *row) for row in rows],
    )


async def get_mapping_override(
    conn: Conn, venue_id: str, provider: str, entity: str
) -> list[dict[str, Any]] | None:
    value: list[dict[str, Any]] | None = await conn.fetchval(
        "SELECT document FROM field_mappings WHERE venue_id = $1 AND provider = $2 AND entity = $3",
        venue_id,
        provider,
        entity,
    )
    return value


class GroupCommit:
    """The job writes that concurrent jobs share a statement for: starts (on the relaxed
    pool: a crash before the outcome redoes them), finishes outside a page's transaction and
    jobs created finished (on the synchronous pool: an outcome is durable before its ack);
    and the pull cursors they read."""

    def __init__(self, pool: asyncpg.Pool, relaxed_pool: asyncpg.Pool) -> None:
        turns = JOB_SETTLE_TURNS
        self.start: Coalescer[Start, asyncpg.Record] = Coalescer(
            lambda jobs: start_jobs(relaxed_pool, jobs), settle_turns=turns)
        self.finish: Coalescer[Finish, list[StoredMessage] | None] = Coalescer(
            lambda jobs: finish_jobs(pool, jobs), settle_turns=turns)
        self.create: Coalescer[Done, list[StoredMessage] | None] = Coalescer(
            lambda jobs: create_finished_jobs(pool, jobs), settle_turns=turns)
        self.cursor: Coalescer[CursorKey, dict[str, Any] | None] = Coalescer(
            lambda keys: get_cursors(pool, keys), settle_turns=turns)
