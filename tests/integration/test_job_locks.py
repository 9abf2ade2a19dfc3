"""Run locks on jobs: one run of a job at a time across processes, freed with the session."""

from __future__ import annotations

import uuid
from typing import Any

from service.database.job_locks import JobLocks
from tests.helpers import eventually


async def test_a_job_held_by_one_process_is_refused_to_another_until_released(services: Any) -> None:
    first, second = JobLocks(services.database_url), JobLocks(services.database_url)
    job = str(uuid.uuid4())
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
