"""Housekeeping deletes old published outbox rows and old webhook dedupe rows a batch at a
time, by index, and nothing that is still to publish or still within its retention."""

from __future__ import annotations

import uuid
from typing import Any

from service.database import outbox as outbox_db

DAY_S = 24 * 3600


async def test_published_rows_older_than_a_day_go_in_batches_and_nothing_else(pool: Any) -> None:
    tag = uuid.uuid4().hex
    rows = [  # (published how long ago, or None for not yet published; created long ago)
        *[(2 * DAY_S, f"{tag}-old-{i}") for i in range(5)],
        (60.0, f"{tag}-recent"),
        (None, f"{tag}-unpublished"),
    ]
    for age_s, message_id in rows:
        await pool.execute(
            """INSERT INTO outbox (exchange, routing_key, message_id, body, created_at, published_at)
               VALUES ('integration.events', 'job.succeeded', $1, '\\x7b7d', now() - interval '3 days',
                       CASE WHEN $2::float8 IS NULL THEN NULL ELSE now() - make_interval(secs => $2) END)""",
            message_id, age_s,
        )  # fmt: skip

    deleted = await outbox_db.prune_published(pool, older_than_s=DAY_S, batch=2)

    assert deleted >= 5  # other tests' old rows may go too; ours certainly
    left = await pool.fetch("SELECT message_id FROM outbox WHERE message_id LIKE $1", f"{tag}-%")
    assert {f"{tag}-recent", f"{tag}-unpublished"} == {r["message_id"] for r in left}


async def test_old_webhook_dedupe_rows_go_in_batches(pool: Any) -> None:
    tag = uuid.uuid4().hex
    for i, age_days in enumerate((5, 5, 5, 1)):
        await pool.execute(
            """INSERT INTO webhook_events (provider, event_id, received_at, processed_at)
               VALUES ('stripe', $1, now(), now() - make_interval(days => $2))""",
            f"{tag}-{i}", age_days,
        )  # fmt: skip

    deleted = await outbox_db.prune_webhook_events(pool, older_than_s=4 * DAY_S, batch=2)

    assert deleted >= 3
    left = await pool.fetch("SELECT event_id FROM webhook_events WHERE event_id LIKE $1", f"{tag}-%")
    assert [f"{tag}-3"] == [r["event_id"] for r in left]


async def test_old_published_rows_are_found_by_index(pool: Any) -> None:
    """The batch's lookup uses outbox_published_idx, not a scan of the whole outbox."""
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL enable_seqscan = off")  # the planner shows whether an index can serve
        plan = "\n".join(
            row[0] for row in await conn.fetch(
                "EXPLAIN SELECT id FROM outbox WHERE published_at < now() - make_interval(secs => 86400) LIMIT 5000"
            )
        )
    assert "outbox_published_idx" in plan
