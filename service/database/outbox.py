"""SQL for the transactional outbox, scheduled retries, dead letters and webhook dedupe."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeAlias

import asyncpg

Conn: TypeAlias = asyncpg.Connection | asyncpg.Pool


@dataclass(frozen=True, slots=True)
class OutboxMessage:
    """A message to publish after the transaction that produced it commits."""

    exchange: str
    routing_key: str
    body: bytes
    message_id: str
    headers: dict[str, Any] = field(default_factory=dict)
    correlation_id: str | None = None
    reply_to: str | None = None
    available_at: datetime | None = None  # a future time makes it a scheduled retry


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: int
    message: OutboxMessage
    # When the row was first written, on this process's monotonic clock (its age as the
    # database saw it, from the statement that returned it): an inline publish starts only
    # while the row is young enough to be confirmed and marked inside INLINE_GRACE_S,
    # before another relay may take it.
    stored_at: float = field(default_factory=time.monotonic, compare=False)


def insert_sql(first: int = 1, *, owned_by: str | None = None) -> str:
    """An INSERT of outbox rows from eight array parameters starting at ``$first`` (see
    insert_args), returning what ``pending`` needs; usable as a CTE of a larger statement.

    ``owned_by``: a subquery of keys; a ninth array parameter then names each message's
    owner, and only messages whose owner the subquery returns are inserted."""
    p = [f"${first + i}" for i in range(9)]
    owner, where = (f", {p[8]}::text[]", f" WHERE o IN {owned_by}") if owned_by else ("", "")
    return f"""INSERT INTO outbox (exchange, routing_key, message_id, correlation_id, headers,
               reply_to, body, available_at)
           SELECT e, r, m, c, h, t, b, COALESCE(a, now())
           FROM unnest({p[0]}::text[], {p[1]}::text[], {p[2]}::text[], {p[3]}::text[], {p[4]}::jsonb[],
                       {p[5]}::text[], {p[6]}::bytea[], {p[7]}::timestamptz[]{owner})
               AS u(e, r, m, c, h, t, b, a{", o" if owned_by else ""}){where}
           ON CONFLICT (message_id) DO UPDATE SET message_id = EXCLUDED.message_id
           RETURNING id, message_id, published_at IS NULL AS pending,
               extract(epoch FROM now() - created_at)::float8 AS age"""


def unique(messages: list[OutboxMessage]) -> list[OutboxMessage]:
    """One message per message id (a row cannot be inserted twice in one statement)."""
    return list({m.message_id: m for m in messages}.values())


def insert_args(messages: list[OutboxMessage]) -> list[list[Any]]:
    """The eight arrays insert_sql reads, for messages passed through ``unique``."""
    return [
        [m.exchange for m in messages],
        [m.routing_key for m in messages],
        [m.message_id for m in messages],
        [m.correlation_id for m in messages],
        [m.headers for m in messages],
        [m.reply_to for m in messages],
        [m.body for m in messages],
        [m.available_at for m in messages],
    ]


def pending(messages: list[OutboxMessage], rows: list[asyncpg.Record]) -> list[StoredMessage]:
    """The rows still to publish, in message order: new ones, and earlier ones with the same
    message id not yet published (a redone page re-announces nothing that already went out)."""
    by_message_id = {row["message_id"]: row for row in rows}
    now = time.monotonic()
    return [
        # An earlier row (a redone page's) is as old as its first insert: the relay's grace
        # runs from then, so its inline publish is bounded from then too.
        StoredMessage(by_message_id[m.message_id]["id"], m, stored_at=now - (by_message_id[m.message_id]["age"] or 0.0))
        for m in messages
        if by_message_id[m.message_id]["pending"]
    ]


async def enqueue(conn: asyncpg.Connection, messages: list[OutboxMessage]) -> list[StoredMessage]:
    """Insert messages in the caller's transaction, in one statement; return those still to
    publish (see ``pending``)."""
    messages = unique(messages)
    if not messages:
        return []
    return pending(messages, await conn.fetch(insert_sql(), *insert_args(messages)))


def is_due(stored: StoredMessage, now: datetime) -> bool:
    """Publish now (not a retry scheduled for later)?"""
    return stored.message.available_at is None or stored.message.available_at <= now


def _stored(row: asyncpg.Record) -> StoredMessage:
    return StoredMessage(
        row["id"],
        OutboxMessage(
            exchange=row["exchange"],
            routing_key=row["routing_key"],
            body=bytes(row["body"]),
            message_id=row["message_id"],
            headers=row["headers"],
            correlation_id=row["correlation_id"],
            reply_to=row["reply_to"],
        ),
    )


# A fresh row belongs to the consumer publishing it inline for this long. Well above the
# inline publish's own bound (consumers/publishers.py: a start within INLINE_START_MAX_S,
# a confirm within CONFIRM_TIMEOUT_S, the mark within MARK_WINDOW_S), so a publish
# confirmed at the end of its wait is marked before a relay takes the row again.
INLINE_GRACE_S = 15.0


async def claim_due(conn: asyncpg.Connection, *, limit: int) -> list[StoredMessage]:
    """Lock due, unpublished rows (SKIP LOCKED: several relays share the work). A row made
    for immediate publishing is left to its consumer for INLINE_GRACE_S first; a scheduled
    retry is taken as soon as it is due."""
    rows = await conn.fetch(
        """SELECT id, exchange, routing_key, message_id, correlation_id, headers, reply_to, body
           FROM outbox WHERE published_at IS NULL AND available_at <= now()
             AND (available_at > created_at OR created_at < now() - make_interval(secs => $2))
           ORDER BY available_at, id LIMIT $1 FOR UPDATE SKIP LOCKED""",
        limit,
        INLINE_GRACE_S,
    )
    return [_stored(r) for r in rows]


async def mark_published(conn: Conn, ids: list[int]) -> None:
    if ids:
        await conn.execute("UPDATE outbox SET published_at = now() WHERE id = ANY($1::bigint[])", ids)


PRUNE_BATCH = 5000  # rows per DELETE: each statement stays well inside the command timeout


async def prune_in_batches(conn: Conn, delete_sql: str, older_than_s: float, *, batch: int = PRUNE_BATCH) -> int:
    """Run ``delete_sql`` (parameters: the age in seconds, the batch size) until a batch
    comes back short; return how many rows went. One DELETE of a whole day's rows could
    outlast the command timeout, be rolled back, and leave twice as many for the next try."""
    total = 0
    while True:
        result: str = await conn.execute(delete_sql, older_than_s, batch)
        deleted = int(result.split()[-1])
        total += deleted
        if deleted < batch:
            return total


async def prune_published(conn: Conn, *, older_than_s: float, batch: int = PRUNE_BATCH) -> int:
    """Delete rows published more than ``older_than_s`` ago (found by outbox_published_idx)."""
    return await prune_in_batches(
        conn,
        """DELETE FROM outbox WHERE id IN (
               SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => $1) LIMIT $2)""",
        older_than_s,
        batch=batch,
    )


async def pending_count(conn: Conn) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM outbox WHERE published_at IS NULL"))


# Dead letters --------------------------------------------------------------------------

DEAD_COLUMNS = (
    "id, message_id, job_id, exchange, routing_key, body, headers, properties, reason, category, "
    "severity, dead_lettered_at, replayed_at, replay_message_id"
)


async def store_dead_letter(
    conn: asyncpg.Connection,
    *,
    message_id: str | None,
    job_id: str | None,
    exchange: str,
    routing_key: str,
    body: bytes,
    headers: dict[str, Any],
    properties: dict[str, Any],
    reason: str,
    category: str,
    severity: str,
) -> int | None:
    """Store a dead letter; None when the same message is already stored (a redelivery)."""
    row_id: int | None = await conn.fetchval(
        """INSERT INTO dead_letters (message_id, job_id, exchange, routing_key, body, headers,
               properties, reason, category, severity)
           VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
           ON CONFLICT (message_id, routing_key) WHERE message_id IS NOT NULL AND replayed_at IS NULL
           DO NOTHING RETURNING id""",
        message_id,
        job_id,
        exchange,
        routing_key,
        body,
        headers,
        properties,
        reason,
        category,
        severity,
    )
    return row_id


async def list_dead_letters(conn: Conn, *, limit: int = 1000) -> list[asyncpg.Record]:
    """The newest ``limit`` dead letters, oldest of them first (the oldest ``limit`` would
    hide every new one once that many are kept)."""
    rows = await conn.fetch(f"SELECT {DEAD_COLUMNS} FROM dead_letters ORDER BY id DESC LIMIT $1", limit)
    return list(reversed(rows))


async def get_dead_letters(
    conn: asyncpg.Connection, ids: list[int] | None, *, for_update: bool = True
) -> list[asyncpg.Record]:
    """Rows by id (all unreplayed when ids is None), locked for a replay."""
    lock = " FOR UPDATE SKIP LOCKED" if for_update else ""
    if ids is None:
        return await conn.fetch(
            f"SELECT {DEAD_COLUMNS} FROM dead_letters WHERE replayed_at IS NULL ORDER BY id{lock}"
        )
    return await conn.fetch(
        f"SELECT {DEAD_COLUMNS} FROM dead_letters WHERE id = ANY($1::bigint[]) ORDER BY id{lock}", ids
    )


async def mark_replayed(conn: asyncpg.Connection, dead_letter_id: int, replay_message_id: str) -> None:
    await conn.execute(
        "UPDATE dead_letters SET replayed_at = now(), replay_message_id = $2 WHERE id = $1",
        dead_letter_id,
        replay_message_id,
    )


# Webhook dedupe ------------------------------------------------------------------------


async def claim_webhook_event(
    conn: asyncpg.Connection, provider: str, event_id: str, venue_id: str | None, received_at: datetime
) -> bool:
    """True the first time (provider, event_id) is seen; False for a duplicate."""
    inserted = await conn.fetchval(
        """INSERT INTO webhook_events (provider, event_id, venue_id, received_at)
           VALUES ($1, $2, $3, $4) ON CONFLICT (provider, event_id) DO NOTHING RETURNING 1""",
        provider,
        event_id,
        venue_id,
        received_at,
    )
    return inserted is not None


async def prune_webhook_events(conn: Conn, *, older_than_s: float, batch: int = PRUNE_BATCH) -> int:
    return await prune_in_batches(
        conn,
        """DELETE FROM webhook_events WHERE (provider, event_id) IN (
               SELECT provider, event_id FROM webhook_events
               WHERE processed_at < now() - make_interval(secs => $1) LIMIT $2)""",
        older_than_s,
        batch=batch,
    )
