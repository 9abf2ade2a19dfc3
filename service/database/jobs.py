"""SQL for sync jobs, per-record outcomes, pull cursors and what was last seen of records."""

from __future__ import annotations

from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

from service.database import outbox as outbox_db
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


async def start_job(
    conn: Conn,
    *,
    job_id: str,
    venue_id: str,
    provider: str,
    entity: str,
    direction: str,
    mode: str,
    options: dict[str, Any],
    message_id: str | None,
    reply_to: str | None,
    correlation_id: str | None,
    count_attempt: bool,
) -> asyncpg.Record:
    """Create the job or mark it running again, in one statement; a re-run of a failed job
    starts clean (its failed record outcomes are forgotten, so they are tried again).

    A job already succeeded or partial is left alone: the row's job columns are then NULL
    and ``previous_status`` / ``previous_result`` say how it ended (a duplicate)."""
    return await conn.fetchrow(
        f"""
        WITH previous AS (
            SELECT status, result FROM sync_jobs WHERE job_id = $1
        ), cleared AS (
            DELETE FROM sync_record_log
            WHERE job_id = $1 AND outcome = 'failed'
              AND EXISTS (SELECT 1 FROM previous WHERE status = 'failed')
        ), started AS (
            INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, options,
                message_id, reply_to, correlation_id, status, attempts, started_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, 'running', CASE WHEN $11 THEN 1 ELSE 0 END, now())
            ON CONFLICT (job_id) DO UPDATE SET
                status = 'running',
                attempts = CASE WHEN sync_jobs.status = 'failed' THEN 1
                                ELSE sync_jobs.attempts + CASE WHEN $11 THEN 1 ELSE 0 END END,
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
        SELECT started.*, previous.status AS previous_status, previous.result AS previous_result
        FROM (SELECT 1) AS one LEFT JOIN started ON true LEFT JOIN previous ON true
        """,
        job_id,
        venue_id,
        provider,
        entity,
        direction,
        mode,
        options,
        message_id,
        reply_to,
        correlation_id,
        count_attempt,
    )


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
        "UPDATE sync_jobs SET status = 'pending', last_error = $2, updated_at = now() WHERE job_id = $1",
        job_id,
        error,
    )


Cursor = tuple[str, str, str, dict[str, Any]]  # (venue_id, provider, entity, cursor)


async def finish_job(
    conn: Conn,
    job_id: str,
    *,
    status: str,
    counts: dict[str, int],
    errors: list[dict[str, Any]],
    result: dict[str, Any],
    finished_at: datetime,
    announce: list[OutboxMessage],
    cursor: Cursor | None = None,
) -> list[StoredMessage]:
    """Store a job's final state, the pull cursor it reached and the messages that announce
    it, in one statement (atomic on its own, or part of the caller's transaction); return
    the outbox rows to publish."""
    announce = outbox_db.unique(announce)
    venue_id, provider, entity, position = cursor if cursor is not None else (None, None, None, None)
    rows = await conn.fetch(
        f"""
        WITH finished AS (
            UPDATE sync_jobs SET status = $9, counts = $10, errors = $11, result = $12,
                finished_at = $13, progress = NULL, updated_at = now(),
                last_error = CASE WHEN $9 = 'failed' THEN ($11::jsonb -> -1 ->> 'message') ELSE NULL END
            WHERE job_id = $14
        ), reached AS (
            INSERT INTO pull_cursors (venue_id, provider, entity, cursor)
            SELECT $15, $16, $17, $18::jsonb WHERE $18::jsonb IS NOT NULL
            ON CONFLICT (venue_id, provider, entity) DO UPDATE SET cursor = EXCLUDED.cursor, updated_at = now()
        ), announced AS (
            {outbox_db.insert_sql(1)}
        )
        SELECT id, message_id, pending FROM announced
        """,
        *outbox_db.insert_args(announce),
        status,
        counts,
        errors,
        result,
        finished_at,
        job_id,
        venue_id,
        provider,
        entity,
        position,
    )
    return outbox_db.pending(announce, rows)


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


async def get_cursor(conn: Conn, venue_id: str, provider: str, entity: str) -> dict[str, Any] | None:
    value: dict[str, Any] | None = await conn.fetchval(
        "SELECT cursor FROM pull_cursors WHERE venue_id = $1 AND provider = $2 AND entity = $3",
        venue_id,
        provider,
        entity,
    )
    return value


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
