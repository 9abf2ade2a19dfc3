"""Run locks on jobs: one run of a job at a time across processes, freed with the session."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest

from service.database import job_locks
from service.database.job_locks import JobLocks, lock_key
from tests.helpers import eventually


async def test_a_job_held_by_one_process_is_refused_to_another_until_released(services: Any) -> None:
    """Any job_id, whatever characters it holds, is a lock key (hashed before it is sent)."""
    first, second = JobLocks(services.database_url), JobLocks(services.database_url)
    job = f"job\x00{uuid.uuid4()}\ud800"
    try:
        assert await first.try_hold(job)
        assert not await first.try_hold(job)  # a second delivery in the same process
        assert not await second.try_hold(job)
        await first.release(job)
        assert await second.try_hold(job)
        assert not await first.try_hold(job)
    finally:
        await first.close()
        await second.close()


async def test_a_dead_holders_jobs_are_free_at_once_and_it_takes_new_locks_on_a_new_session(
    services: Any,
) -> None:
    """A process that dies takes its session with it: no lease to wait for. The holder
    itself, when only its lock connection died, goes on with a new one."""
    holder, other = JobLocks(services.database_url), JobLocks(services.database_url)
    running, later = str(uuid.uuid4()), str(uuid.uuid4())
    try:
        assert await holder.try_hold(running)
        assert holder._conn is not None
        holder._conn.terminate()  # the socket closes as when the process is killed
        await eventually(lambda: other.try_hold(running), what="the dead session's lock freed")
        assert await holder.try_hold(later)  # a new session for new runs
        await holder.release(running)  # its lock went with the old session: nothing to undo
        assert not await holder.try_hold(running)  # held by the other process now
        assert not await other.try_hold(later)
    finally:
        await holder.close()
        await other.close()


async def test_a_try_that_timed_out_leaves_no_lock_behind(services: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """A session lock taken by a statement that then timed out stays with the session even
    though the statement failed; kept, nobody would know of it and that job's deliveries
    would be put off for good. The failed statement's connection goes, and the lock with it."""
    locks = JobLocks(services.database_url)
    other = await asyncpg.connect(services.database_url)  # another process, asking by hand
    job = str(uuid.uuid4())
    monkeypatch.setattr(job_locks, "COMMAND_TIMEOUT_S", 0.2)
    monkeypatch.setattr(  # takes the lock, then is too slow to answer
        job_locks,
        "_LOCK_OR_UNLOCK",
        "SELECT pg_try_advisory_lock(u.key) AS done, pg_sleep(2) FROM unnest($1::int8[], $2::bool[]) AS u(key, take)",
    )
    try:
        with pytest.raises(TimeoutError):
            await locks.try_hold(job)
        free = "SELECT pg_try_advisory_lock($1)"
        await eventually(lambda: other.fetchval(free, lock_key(job)), what="the lock the timed-out try took, freed")
    finally:
        await locks.close()
        await other.close()


async def test_the_server_drops_a_silent_lock_session_within_half_a_minute(services: Any) -> None:
    """A holder whose host vanished without closing its socket keeps no job locked for the
    server's default two hours of TCP keepalive: the lock session asks for probes after
    10 s idle, 5 s apart, 3 of them."""
    locks = JobLocks(services.database_url)
    try:
        assert await locks.try_hold(str(uuid.uuid4()))
        assert locks._conn is not None
        shown = [await locks._conn.fetchval(f"SHOW {name}") for name in
                 ("tcp_keepalives_idle", "tcp_keepalives_interval", "tcp_keepalives_count")]
        assert ["10", "5", "3"] == shown  # seconds
    finally:
        await locks.close()


async def test_a_try_whose_caller_was_cancelled_gives_its_lock_back(
    services: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A delivery cancelled while its try is on the wire (a broker blip cancels the
    deliveries in flight; the process goes on): the try still ends, and a lock it took is
    released, not left on the session where nobody would ever release it."""
    locks = JobLocks(services.database_url)
    other = await asyncpg.connect(services.database_url)
    job = str(uuid.uuid4())
    monkeypatch.setattr(  # every ask is slow enough to be cancelled on the wire
        job_locks,
        "_LOCK_OR_UNLOCK",
        "SELECT CASE WHEN u.take THEN pg_try_advisory_lock(u.key) ELSE pg_advisory_unlock(u.key) END AS done,"
        " pg_sleep(0.3) FROM unnest($1::int8[], $2::bool[]) AS u(key, take)",
    )
    try:
        trying = asyncio.ensure_future(locks.try_hold(job))
        await eventually(lambda: locks._asks.batches == 1, what="the try on the wire")
        trying.cancel()
        with pytest.raises(asyncio.CancelledError):
            await trying
        free = "SELECT pg_try_advisory_lock($1)"
        await eventually(lambda: other.fetchval(free, lock_key(job)), what="the abandoned try's lock given back")
        assert not locks._held
    finally:
        await locks.close()
        await other.close()


async def test_ping_fails_when_the_lock_connection_cannot_be_opened() -> None:
    """Part of the database probe: with no lock connection no job can start the long way,
    so a consumer must stay paused instead of resuming to hand every delivery back."""
    locks = JobLocks("postgresql://postgres@127.0.0.1:9/nowhere")
    with pytest.raises(OSError):
        await locks.ping()
