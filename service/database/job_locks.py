"""One run of a job at a time, across every process: session advisory locks.

A job that runs the long way (start, pages or batches, finish) first takes the advisory
lock named after its ``job_id`` on this process's lock connection. A second delivery of
the same job meanwhile (a publisher that sent it twice, or a redelivery after a lost
channel while the first run goes on) finds the lock taken and is put off by the engine:
scheduled again after a backoff, by when the job has usually finished and the delivery
ends as a duplicate. Two runs at once were safe for the providers (the same idempotency
keys), but spent the quota twice and wrote the job's progress and cursor in turns.

Why session locks on one connection, not a lease column: a session lock goes with its
session, so a process that dies (kill -9) frees its jobs the moment PostgreSQL sees the
connection close, and the redelivery of a crashed job runs at once instead of waiting for
a lease to run out. One connection holds every lock of the process; tries and releases of
jobs starting and ending at the same moment share one statement (group commit). A lost
lock connection loses its locks: the runs in progress go on (keyed writes, as without the
lock) and new runs take their locks on a new connection. The empty pull's one-statement
path needs no lock: it writes only where no row exists yet.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
from dataclasses import dataclass
from typing import Any

import asyncpg
import structlog

from service.database.batching import Coalescer

log = structlog.get_logger(__name__)

CONNECT_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 5.0
# A daemon whose host vanishes without closing its socket (power loss, a partition) would
# keep its jobs locked until the server's TCP keepalive gives up, two hours by default:
# these make the server probe an idle lock session after 10 s and drop it after 3 more
# unanswered probes 5 s apart, so a lost holder's jobs are free within about 25 s.
LOCK_SESSION_SETTINGS = {
    "application_name": "integration-service job locks",
    "tcp_keepalives_idle": "10",
    "tcp_keepalives_interval": "5",
    "tcp_keepalives_count": "3",
}
# Locks in the order asked; a job released and tried again in one batch is released first.
# Keys are hashed here, so no job_id (whatever characters it holds) can fail the statement.
_LOCK_OR_UNLOCK = """
    SELECT CASE WHEN u.take THEN pg_try_advisory_lock(u.key) ELSE pg_advisory_unlock(u.key) END AS done
    FROM unnest($1::int8[], $2::bool[]) WITH ORDINALITY AS u(key, take, n)
    ORDER BY u.n
"""


def lock_key(job_id: str) -> int:
    """The advisory lock key of a job: 64 bits of BLAKE2b of its name, as a signed bigint."""
    digest = hashlib.blake2b(f"sync-job:{job_id}".encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


@dataclass(frozen=True, slots=True)
class _Ask:
    job_id: str
    take: bool  # False: release
    generation: int = 0  # a release: the connection its lock was taken on


class JobLocks:
    """This process's run locks on jobs; ``close`` frees them all."""

    def __init__(self, dsn: str) -> None:
        self._dsn = dsn
        self._conn: asyncpg.Connection | None = None
        self._generation = 0  # which connection: a lock of an earlier one is gone
        self._held: dict[str, int] = {}  # job_id -> generation of its lock (0: being asked)
        self._asks: Coalescer[_Ask, tuple[bool, int]] = Coalescer(self._run)
        self._connecting = asyncio.Lock()
        self._abandoned: set[asyncio.Future[Any]] = set()  # asks and releases nobody awaits

    async def ping(self) -> None:
        """Raise unless the lock connection is open or can be opened now (part of the
        database probe: without it no job can start the long way)."""
        await self._connection()

    async def try_hold(self, job_id: str) -> bool:
        """Take the job's run lock; False when a run holds it here or in another process.
        Raises what the database raises when it cannot be asked (the caller hands back).
        A caller cancelled while asking leaves the ask to finish: a lock taken all the same
        is given back, never left on the session for nobody to release."""
        if job_id in self._held:
            return False  # another delivery runs it in this process (a session lock nests)
        self._held[job_id] = 0
        asking = asyncio.ensure_future(self._asks.submit(_Ask(job_id, True)))
        try:
            taken, generation = await asyncio.shield(asking)
        except asyncio.CancelledError:
            self._abandoned.add(asking)
            asking.add_done_callback(functools.partial(self._after_abandoned, job_id))
            raise
        except BaseException:
            self._held.pop(job_id, None)
            raise
        if not taken:
            self._held.pop(job_id, None)
            return False
        self._held[job_id] = generation
        return True

    def _after_abandoned(self, job_id: str, asking: asyncio.Future[tuple[bool, int]]) -> None:
        self._abandoned.discard(asking)
        if asking.cancelled() or asking.exception() is not None or not asking.result()[0]:
            self._held.pop(job_id, None)
            return
        self._held[job_id] = asking.result()[1]
        releasing = asyncio.ensure_future(self.release(job_id))
        self._abandoned.add(releasing)
        releasing.add_done_callback(self._abandoned.discard)

    async def release(self, job_id: str) -> None:
        """Give the lock back (also while being cancelled); a failure only logs (the
        statement's failure dropped the connection, and with it the lock)."""
        generation = self._held.pop(job_id, None)
        if generation is None or generation != self._generation:
            return  # never held, or lost with an earlier connection
        try:
            await asyncio.shield(self._asks.submit(_Ask(job_id, False, generation)))
        except Exception as exc:
            log.warning("job_lock_release_failed", error=exc.__class__.__name__)

    async def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            await conn.close(timeout=CONNECT_TIMEOUT_S)

    async def _run(self, asks: list[_Ask]) -> list[tuple[bool, int]]:
        """One statement for these tries and releases. If it fails, the connection is
        dropped with every lock on it: a timed-out try may have taken its lock after all, or
        a failed release kept one, and a lock nobody knows of would put that job's
        deliveries off for good. The runs holding locks then go on unlocked. A release of a
        lock taken on an earlier connection is not sent (it went with that connection, and
        the unlock could only undo somebody's new lock of the same job)."""
        conn = await self._connection()
        generation = self._generation
        sent = [a for a in asks if a.take or a.generation == generation]
        done: dict[int, bool] = {}
        if sent:
            try:
                rows = await conn.fetch(
                    _LOCK_OR_UNLOCK, [lock_key(a.job_id) for a in sent], [a.take for a in sent],
                    timeout=COMMAND_TIMEOUT_S,
                )
            except BaseException:
                conn.terminate()
                raise
            done = {id(a): bool(row["done"]) for a, row in zip(sent, rows, strict=True)}
        return [(done.get(id(a), False), generation) for a in asks]

    async def _connection(self) -> asyncpg.Connection:
        async with self._connecting:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            lost = sum(1 for generation in self._held.values() if generation == self._generation)
            if self._conn is not None and lost:
                log.warning("job_locks_lost", running=lost)  # their runs go on unlocked
            self._conn = await asyncpg.connect(
                self._dsn, timeout=CONNECT_TIMEOUT_S, server_settings=LOCK_SESSION_SETTINGS
            )
            self._generation += 1
            return self._conn
