"""Group commit of job starts and finishes: one statement for many jobs, each job's own answer."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

from service.database import jobs as jobs_db
from service.database.outbox import OutboxMessage
from service.messages import utcnow


def start(job_id: str, venue_id: str) -> jobs_db.Start:
    return jobs_db.Start(
        job_id=job_id, venue_id=venue_id, provider="stripe", entity="customers", direction="pull",
        mode="full", options={"limit": 5}, message_id=str(uuid.uuid4()), reply_to=None, correlation_id=None,
    )


def finish(job_id: str, status: str = "succeeded", cursor: Any = None) -> jobs_db.Finish:
    counts = {"processed": 1, "created": 1, "updated": 0, "skipped": 0, "failed": 0}
    errors = [{"record_id": "r1", "category": "validation", "severity": "low", "message": "bad email"}]
    return jobs_db.Finish(
        job_id=job_id, status=status, counts=counts, errors=errors if status == "partial" else [],
        result=json.dumps({"job_id": job_id, "status": status}), finished_at=utcnow(),
        announce=[OutboxMessage("integration.events", f"job.{status}", b"{}", f"result-{job_id}")],
        cursor=cursor,
    )


async def test_one_statement_starts_new_failed_and_finished_jobs_each_as_it_should(
    pool: Any, venue_id: str
) -> None:
    new, failed, done = (f"job-{uuid.uuid4()}" for _ in range(3))
    await jobs_db.start_jobs(pool, [start(failed, venue_id), start(done, venue_id)])
    await pool.execute(
        "INSERT INTO sync_record_log (job_id, record_id, operation, outcome) VALUES ($1, 'r1', 'pull', 'failed'),"
        " ($1, 'r2', 'pull', 'created')", failed,
    )
    await jobs_db.finish_jobs(pool, [finish(failed, "failed"), finish(done)])

    rows = await jobs_db.start_jobs(pool, [start(new, venue_id), start(failed, venue_id), start(done, venue_id)])

    assert [new, failed, None] == [row["job_id"] for row in rows]
    assert [None, "failed", "succeeded"] == [row["previous_status"] for row in rows]
    assert {"job_id": done, "status": "succeeded"} == rows[2]["previous_result"]
    assert [("running", 1), ("running", 1)] == [(r["status"], r["attempts"]) for r in rows[:2]]
    assert {"limit": 5} == rows[0]["options"]
    kept = await pool.fetch("SELECT record_id FROM sync_record_log WHERE job_id = $1", failed)
    assert ["r2"] == [r["record_id"] for r in kept]  # the failed record is tried again, the created one not


async def test_one_statement_finishes_jobs_with_their_cursor_and_announcements(pool: Any, venue_id: str) -> None:
    first, second = f"job-{uuid.uuid4()}", f"job-{uuid.uuid4()}"
    await jobs_db.start_jobs(pool, [start(first, venue_id), start(second, venue_id)])
    key = (venue_id, "stripe", "customers")
    stored = await jobs_db.finish_jobs(
        pool, [finish(first, cursor=(*key, {"n": 1})), finish(second, "partial", cursor=(*key, {"n": 2}))]
    )
    assert [[f"result-{first}"], [f"result-{second}"]] == [[s.message.message_id for s in job] for job in stored]
    rows = {r["job_id"]: r for r in await pool.fetch(
        "SELECT job_id, status, errors, last_error, finished_at FROM sync_jobs WHERE job_id = ANY($1)", [first, second]
    )}
    assert ("succeeded", None) == (rows[first]["status"], rows[first]["last_error"])
    assert ("partial", "bad email") == (rows[second]["status"], rows[second]["errors"][0]["message"])
    assert {"n": 2} == (await jobs_db.get_cursors(pool, [key]))[0]  # two pulls of one entity: the later one wins
    again = await jobs_db.finish_jobs(pool, [finish(first, "failed"), finish(second)])
    assert [None, None] == again  # finished by another delivery: nothing overwritten, nothing announced
    rows = {r["job_id"]: r["status"] for r in await pool.fetch(
        "SELECT job_id, status FROM sync_jobs WHERE job_id = ANY($1)", [first, second]
    )}
    assert {first: "succeeded", second: "partial"} == rows
    announced = await pool.fetchval(
        "SELECT count(*) FROM outbox WHERE message_id = ANY($1)", [f"result-{first}", f"result-{second}"]
    )
    assert 2 == announced  # the first finish's two rows, no more


async def test_concurrent_jobs_share_statements(pool: Any, venue_id: str) -> None:
    group = jobs_db.GroupCommit(pool, pool)
    ids = [f"job-{uuid.uuid4()}" for _ in range(12)]
    started = await asyncio.gather(*(group.start.submit(start(i, venue_id)) for i in ids))
    assert ids == [row["job_id"] for row in started]
    finished = await asyncio.gather(*(group.finish.submit(finish(i)) for i in ids))
    assert [[f"result-{i}"] for i in ids] == [[s.message.message_id for s in job] for job in finished]
    assert group.start.batches < len(ids) and group.finish.batches < len(ids)
    statuses = await pool.fetch("SELECT DISTINCT status FROM sync_jobs WHERE job_id = ANY($1)", ids)
    assert ["succeeded"] == [r["status"] for r in statuses]


def done(job_id: str, venue_id: str, cursor: Any = None) -> jobs_db.Done:
    started_at = utcnow()
    return jobs_db.Done(start(job_id, venue_id), finish(job_id, cursor=cursor), started_at)


async def test_one_statement_creates_new_jobs_finished_and_leaves_known_ones_alone(
    pool: Any, venue_id: str
) -> None:
    """New jobs are stored finished with their cursor and announcements; a job_id that has a
    row already (running here, succeeded there) gets None and nothing of it is written."""
    new, later, running, succeeded = (f"job-{uuid.uuid4()}" for _ in range(4))
    await jobs_db.start_jobs(pool, [start(running, venue_id), start(succeeded, venue_id)])
    await jobs_db.finish_jobs(pool, [finish(succeeded)])
    key = (venue_id, "stripe", "customers")

    stored = await jobs_db.create_finished_jobs(pool, [
        done(new, venue_id, cursor=(*key, {"n": 1})),
        done(running, venue_id, cursor=(*key, {"n": 9})),
        done(later, venue_id, cursor=(*key, {"n": 2})),
        done(succeeded, venue_id),
    ])

    assert [[f"result-{new}"], None, [f"result-{later}"], None] == [
        None if s is None else [m.message.message_id for m in s] for s in stored
    ]
    rows = {r["job_id"]: r for r in await pool.fetch(
        "SELECT job_id, status, attempts, options, result, started_at, finished_at FROM sync_jobs"
        " WHERE job_id = ANY($1)", [new, later, running, succeeded],
    )}
    assert ("succeeded", 1, {"limit": 5}) == (rows[new]["status"], rows[new]["attempts"], rows[new]["options"])
    assert rows[new]["started_at"] <= rows[new]["finished_at"]
    assert ("running", None) == (rows[running]["status"], rows[running]["result"])  # untouched
    assert {"n": 2} == (await jobs_db.get_cursors(pool, [key]))[0]  # the later new one; not the running job's
    announced = await pool.fetch(
        "SELECT message_id FROM outbox WHERE message_id = ANY($1)",
        [f"result-{j}" for j in (new, later, running, succeeded)],
    )
    # the succeeded job's result row is the one its own finish stored, not a second one
    assert {f"result-{new}", f"result-{later}", f"result-{succeeded}"} == {r["message_id"] for r in announced}


async def test_cursors_are_read_together_in_order(pool: Any, venue_id: str) -> None:
    """Concurrent reads of pull cursors share a statement; each gets its own, None if unset."""
    other = f"venue-{uuid.uuid4()}"
    await jobs_db.put_cursor(pool, venue_id, "stripe", "customers", {"since": 1})
    await jobs_db.put_cursor(pool, other, "stripe", "customers", {"since": 2})
    group = jobs_db.GroupCommit(pool, pool)
    keys = [(venue_id, "stripe", "customers"), (venue_id, "stripe", "products"), (other, "stripe", "customers")]
    read = await asyncio.gather(*(group.cursor.submit(key) for key in [*keys, keys[0]]))
    assert [{"since": 1}, None, {"since": 2}, {"since": 1}] == read
    assert group.cursor.batches < 4
