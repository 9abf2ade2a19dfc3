"""Housekeeping deletes old published outbox rows and old webhook dedupe rows a batch at a
time, by index, and nothing that is still to publish or still within its retention; the
relay loop waits while the broker refuses what it claims."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from service.database import outbox as outbox_db
from tests.helpers import eventually

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
    await pool.execute("DELETE FROM outbox WHERE message_id LIKE $1", f"{tag}-%")  # a later relay's to publish else
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


async def test_finished_jobs_past_retention_go_with_their_record_log(pool: Any, venue_id: str) -> None:
    """JOB_RETENTION_DAYS: jobs that finished long ago go with their record outcomes, in
    batches; old jobs still running or pending, recent finished ones, and an old job that
    finished only lately (a replayed dead letter: its result must still answer a
    redelivery) stay."""
    from service.database import jobs as jobs_db

    tag = uuid.uuid4().hex
    jobs = {f"{tag}-{status}-{age}": (status, age, age if status in ("succeeded", "failed") else None)
            for status in ("succeeded", "failed", "running", "pending") for age in (40, 1)}  # fmt: skip
    jobs[f"{tag}-succeeded-40-finished-lately"] = ("succeeded", 40, 1)
    for job_id, (status, created_days, finished_days) in jobs.items():
        await pool.execute(
            """INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, status, created_at,
                                      finished_at, updated_at)
               VALUES ($1, $2, 'stripe', 'customers', 'pull', 'full', $3, now() - make_interval(days => $4),
                       now() - make_interval(days => $5), now() - make_interval(days => COALESCE($5, 0)))""",
            job_id, venue_id, status, created_days, finished_days,
        )  # fmt: skip
        await pool.execute(
            "INSERT INTO sync_record_log (job_id, record_id, operation, outcome) VALUES ($1, 'r1', 'pull', 'created')",
            job_id,
        )

    deleted = await jobs_db.prune_finished_jobs(pool, older_than_s=30 * DAY_S, batch=1)

    assert deleted >= 2
    kept = {r["job_id"] for r in await pool.fetch("SELECT job_id FROM sync_jobs WHERE job_id LIKE $1", f"{tag}-%")}
    assert set(jobs) - {f"{tag}-succeeded-40", f"{tag}-failed-40"} == kept
    logged = await pool.fetch("SELECT DISTINCT job_id FROM sync_record_log WHERE job_id LIKE $1", f"{tag}-%")
    assert kept == {r["job_id"] for r in logged}


async def test_the_relay_waits_between_batches_the_broker_refuses(pool: Any) -> None:
    """With the broker away every publish fails at once: a full batch that was claimed but
    not confirmed must not send the relay straight into the next pass (it spun hundreds of
    times a second, a FOR UPDATE batch and a warning each, for the whole outage)."""
    from consumers.publishers import OutboxRelay
    from service.errors import NetworkError

    class Away:
        async def publish(self, message: Any, **kwargs: Any) -> None:
            raise NetworkError("channel closed")

    relay = OutboxRelay(pool, Away(), batch=2)  # type: ignore[arg-type]
    for _ in range(3):  # left behind an hour ago: due for any relay
        await pool.execute(
            """INSERT INTO outbox (exchange, routing_key, message_id, body, created_at, available_at)
               VALUES ('integration.events', 'test.away', $1, '\\x7b7d', now() - interval '1 hour',
                       now() - interval '1 hour')""",
            str(uuid.uuid4()),
        )
    passes, first_done = 0, asyncio.Event()
    relay_once = relay.relay_once

    async def counted() -> int:
        nonlocal passes
        passes += 1
        try:
            return await relay_once()
        finally:
            first_done.set()

    relay.relay_once = counted  # type: ignore[method-assign]
    stop = asyncio.Event()
    loop = asyncio.ensure_future(relay.run(stop, interval_s=30))
    try:
        await asyncio.wait_for(first_done.wait(), 10)
        for _ in range(5):
            await asyncio.sleep(0)  # a spinning loop would start its next pass within these turns
        assert 1 == passes
    finally:
        stop.set()
        await asyncio.wait_for(loop, 10)
        async with pool.acquire() as conn:  # leave nothing due for the other tests' relays
            await conn.execute("DELETE FROM outbox WHERE routing_key = 'test.away'")


async def test_inline_publishes_are_marked_while_a_relay_batch_is_still_publishing(pool: Any) -> None:
    """Marks were written only between relay batches: while a batch took seconds to publish
    (a slow broker), a job result published inline stayed unmarked past INLINE_GRACE_S, for
    another replica's relay to publish a second time."""
    from consumers.publishers import OutboxRelay

    entered, release = asyncio.Event(), asyncio.Event()

    class SlowForLeftovers:
        async def publish(self, message: Any, **kwargs: Any) -> None:
            if message.routing_key == "test.slow":
                entered.set()
                await release.wait()

    relay = OutboxRelay(pool, SlowForLeftovers())  # type: ignore[arg-type]
    await pool.execute(
        """INSERT INTO outbox (exchange, routing_key, message_id, body, created_at, available_at)
           VALUES ('integration.events', 'test.slow', $1, '\\x7b7d', now() - interval '1 hour',
                   now() - interval '1 hour')""",
        str(uuid.uuid4()),
    )  # fmt: skip
    async with pool.acquire() as conn, conn.transaction():
        inline = await outbox_db.enqueue(
            conn, [outbox_db.OutboxMessage("integration.events", "test.inline", b"{}", str(uuid.uuid4()))]
        )
    stop = asyncio.Event()
    loop = asyncio.ensure_future(relay.run(stop, interval_s=0.05))
    try:
        await asyncio.wait_for(entered.wait(), 10)  # the relay's batch is on the wire, and stays there
        await relay.publish_stored(inline)
        await eventually(
            lambda: pool.fetchval("SELECT published_at IS NOT NULL FROM outbox WHERE id = $1", inline[0].id),
            what="the inline publish marked while the batch waits",
        )
    finally:
        release.set()
        stop.set()
        await asyncio.wait_for(loop, 10)
        await pool.execute("DELETE FROM outbox WHERE routing_key IN ('test.slow', 'test.inline')")


async def test_an_inline_publish_held_up_past_its_start_bound_is_left_to_the_relay(pool: Any) -> None:
    """A publish confirmed at the end of its wait must still be marked inside INLINE_GRACE_S,
    or another replica's relay takes the row and publishes it a second time. So a row held
    up before its inline publish (a slow broker) is no longer published inline once older
    than INLINE_START_MAX_S; the relay loop publishes it once its grace is over, and a fresh
    row of the same call still goes out at once."""
    import dataclasses
    import time

    from consumers.publishers import CONFIRM_TIMEOUT_S, INLINE_START_MAX_S, MARK_WINDOW_S, OutboxRelay

    assert INLINE_START_MAX_S > 0
    assert INLINE_START_MAX_S + CONFIRM_TIMEOUT_S + MARK_WINDOW_S < outbox_db.INLINE_GRACE_S

    published: list[str] = []

    class Recording:
        async def publish(self, message: Any, **kwargs: Any) -> None:
            published.append(message.routing_key)

    relay = OutboxRelay(pool, Recording())  # type: ignore[arg-type]
    async with pool.acquire() as conn, conn.transaction():
        stored = await outbox_db.enqueue(
            conn,
            [
                outbox_db.OutboxMessage("integration.events", "test.held-up", b"{}", str(uuid.uuid4())),
                outbox_db.OutboxMessage("integration.events", "test.fresh", b"{}", str(uuid.uuid4())),
            ],
        )
    held_up = dataclasses.replace(stored[0], stored_at=time.monotonic() - INLINE_START_MAX_S - 1)
    await relay.publish_stored([held_up, stored[1]])
    assert published == ["test.fresh"]

    grace = outbox_db.INLINE_GRACE_S
    stop = asyncio.Event()
    try:
        outbox_db.INLINE_GRACE_S = 0.0  # the grace is over: the relay's to publish
        loop = asyncio.ensure_future(relay.run(stop, interval_s=0.05))
        await eventually(
            lambda: pool.fetchval("SELECT published_at IS NOT NULL FROM outbox WHERE id = $1", held_up.id),
            what="the held-up row published by the relay",
        )
        stop.set()
        await asyncio.wait_for(loop, 10)
    finally:
        outbox_db.INLINE_GRACE_S = grace
        stop.set()
        await pool.execute("DELETE FROM outbox WHERE routing_key IN ('test.held-up', 'test.fresh')")
    assert published.count("test.held-up") == 1


async def test_a_redone_rows_inline_publish_is_bounded_from_its_first_insert(pool: Any) -> None:
    """A redone page gets back the earlier, still unpublished row of the same message id:
    the relay's grace for it runs from its first insert, long over, so publishing it inline
    as if new would race a relay publishing it too. It is left to the relay."""
    from consumers.publishers import INLINE_START_MAX_S, OutboxRelay

    published: list[str] = []

    class Recording:
        async def publish(self, message: Any, **kwargs: Any) -> None:
            published.append(message.message_id)

    earlier, fresh = str(uuid.uuid4()), str(uuid.uuid4())
    await pool.execute(
        """INSERT INTO outbox (exchange, routing_key, message_id, body, created_at, available_at)
           VALUES ('integration.events', 'test.redone', $1, '\\x7b7d', now() - interval '1 minute',
                   now() - interval '1 minute')""",
        earlier,
    )  # fmt: skip
    try:
        async with pool.acquire() as conn, conn.transaction():
            stored = await outbox_db.enqueue(
                conn,
                [
                    outbox_db.OutboxMessage("integration.events", "test.redone", b"{}", earlier),
                    outbox_db.OutboxMessage("integration.events", "test.redone", b"{}", fresh),
                ],
            )
        assert [s.message.message_id for s in stored] == [earlier, fresh]
        assert stored[1].stored_at - stored[0].stored_at > INLINE_START_MAX_S
        await OutboxRelay(pool, Recording()).publish_stored(stored)  # type: ignore[arg-type]
        assert published == [fresh]
    finally:
        await pool.execute("DELETE FROM outbox WHERE routing_key = 'test.redone'")
