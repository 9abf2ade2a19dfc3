"""The rate limiter's shared state in PostgreSQL: one row per (provider, account).

Every change is a compare-and-set on the row's ``version``: the limiter's pure arithmetic
(service/limiter.py) runs on the state this process last wrote or read, and one statement
writes the result only if nobody changed the row since; otherwise the same statement
returns the current row and the change is computed again. So a process alone on an
account grants in one round trip (no BEGIN, no ``SELECT ... FOR UPDATE``, no COMMIT), the
grants of several accounts made at the same moment share that statement (group commit, see
batching.py), and any number of processes still apply changes atomically, one version
after another. A change that writes nothing (no free slot, a wait too long) is confirmed
on a fresh read, so a stale copy never decides alone. The ``state`` column holds the JSON
of ``BucketState`` except ``paused_until``, which has its own column so an operator can
read a pause at a glance. Writes go through the relaxed pool (no wait for the WAL flush): a
bucket lost in a database crash only forgets the last instants of spacing.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

import asyncpg

from service.database.batching import Coalescer
from service.errors import NetworkError
from service.limiter import BucketState, state_from_json, state_to_json

T = TypeVar("T")

ACQUIRE_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 5.0
MAX_ROUNDS = 100  # compare-and-set rounds before giving up (each loses only to a real write)

_SELECT = (
    "SELECT version, state::text AS state, paused_until FROM rate_limit_buckets"
    " WHERE provider = $1 AND account = $2"
)
_INSERT = (
    "INSERT INTO rate_limit_buckets (provider, account) VALUES ($1, $2)"
    " ON CONFLICT (provider, account) DO NOTHING"
)
# Each row is written only if still at the version the caller computed from; every row
# comes back as this statement saw it (its snapshot), so a loser recomputes at once.
# One account alone (the quiet case) has its own statement: on a pool without generic plans
# PostgreSQL plans the array form afresh on every call, which costs more than the write
# (0.24 vs 0.65 ms here); the daemon's pools now keep generic plans, where the single-row
# form is still the cheaper of the two.
_COMPARE_AND_SET_ONE = """
    WITH current AS (""" + _SELECT + """),
    written AS (
        UPDATE rate_limit_buckets
        SET state = $3::text::jsonb, paused_until = $4, version = version + 1, updated_at = now()
        WHERE provider = $1 AND account = $2 AND version = $5
        RETURNING version
    )
    SELECT (SELECT version FROM written) AS written, version, state, paused_until FROM current
"""
_COMPARE_AND_SET = """
    WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bigint[])
            AS i(provider, account, state, paused_until, version)
    ), written AS (
        UPDATE rate_limit_buckets AS b
        SET state = i.state::jsonb, paused_until = i.paused_until, version = b.version + 1, updated_at = now()
        FROM input AS i
        WHERE b.provider = i.provider AND b.account = i.account AND b.version = i.version
        RETURNING b.provider, b.account, b.version
    )
    SELECT i.provider, i.account, w.version AS written, b.version, b.state::text AS state, b.paused_until
    FROM input AS i
    LEFT JOIN written AS w ON w.provider = i.provider AND w.account = i.account
    LEFT JOIN rate_limit_buckets AS b ON b.provider = i.provider AND b.account = i.account
"""

Known = tuple[int, BucketState]  # (row version, the state at that version)
KNOWN_MAX = 10_000  # accounts remembered; past it the copies are dropped and read again


@dataclass(slots=True)
class _Turn:
    """This process's tasks on one account take turns; ``users`` counts the task holding
    the lock and those waiting for it (a lock just released to a waiter that has not run
    yet reports itself unlocked, so ``locked()`` alone cannot tell a turn is still in use)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


@dataclass(frozen=True, slots=True)
class _Write:
    provider: str
    account: str
    state: BucketState
    version: int  # the version ``state`` was computed from


class PostgresBucketStore:
    """BucketStore shared by every process on the same database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        """``pool``: the relaxed pool (``create_pool(relaxed=True)``) in production, so a
        grant does not wait for the WAL flush; any pool is correct."""
        self._pool = pool
        self._known: dict[tuple[str, str], Known] = {}
        self._turns: dict[tuple[str, str], _Turn] = {}
        self._writes: Coalescer[_Write, Mapping[str, Any]] = Coalescer(self._write_many)

    async def update(
        self, provider: str, account: str, change: Callable[[BucketState], tuple[BucketState, T]]
    ) -> T:
        """Apply ``change`` atomically; raises NetworkError when PostgreSQL fails."""
        key = (provider, account)
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn()
        turn.users += 1
        try:
            async with turn.lock:
                known = self._known.get(key) or await self._fetch(provider, account)
                for _ in range(MAX_ROUNDS):
                    version, state = known
                    new_state, result = change(state)
                    if new_state == state:
                        fresh = await self._fetch(provider, account)
                        if fresh[0] == version:
                            self._remember(key, fresh)
                            return result
                        known = fresh
                        continue
                    row = await self._writes.submit(_Write(provider, account, new_state, version))
                    if row["written"] is not None:
                        self._remember(key, (row["written"], new_state))
                        return result
                    known = (
                        await self._fetch(provider, account) if row["version"] is None
                        else (row["version"], state_from_json(row["state"], row["paused_until"]))
                    )
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            self._known.pop(key, None)
            raise NetworkError(f"rate-limit store failed: {exc.__class__.__name__}") from exc
        finally:
            turn.users -= 1
        raise NetworkError(f"rate-limit store: {provider} {account} changed {MAX_ROUNDS} times under us")

    async def _write_many(self, writes: list[_Write]) -> list[Mapping[str, Any]]:
        """Compare-and-set the accounts of concurrent grants in one statement, in key order
        (so two processes writing overlapping accounts lock them in the same order)."""
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            if len(writes) == 1:
                w = writes[0]
                row = await conn.fetchrow(
                    _COMPARE_AND_SET_ONE, w.provider, w.account, state_to_json(w.state),
                    w.state.paused_until, w.version, timeout=COMMAND_TIMEOUT_S,
                )
                return [row or {"written": None, "version": None}]  # the row is gone: fetched again
            ordered = sorted(writes, key=lambda w: (w.provider, w.account))
            if len({(w.provider, w.account) for w in ordered}) < len(ordered):
                # One statement would report both writes of one row as written: refused, the
                # Coalescer runs them one by one and the second loses its compare-and-set.
                raise ValueError("one account twice in a batch")
            rows = await conn.fetch(
                _COMPARE_AND_SET,
                [w.provider for w in ordered],
                [w.account for w in ordered],
                [state_to_json(w.state) for w in ordered],
                [w.state.paused_until for w in ordered],
                [w.version for w in ordered],
                timeout=COMMAND_TIMEOUT_S,
            )
        by_key = {(row["provider"], row["account"]): row for row in rows}
        return [by_key[(w.provider, w.account)] for w in writes]

    async def read(self, provider: str, account: str) -> BucketState:
        """The current state; raises NetworkError when PostgreSQL fails."""
        try:
            row = await self._pool.fetchrow(_SELECT, provider, account, timeout=COMMAND_TIMEOUT_S)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise NetworkError(f"rate-limit store failed: {exc.__class__.__name__}") from exc
        return BucketState() if row is None else state_from_json(row["state"], row["paused_until"])

    def _remember(self, key: tuple[str, str], known: Known) -> None:
        if len(self._known) >= KNOWN_MAX and key not in self._known:
            self._known.clear()
            self._turns = {k: turn for k, turn in self._turns.items() if turn.users}
        self._known[key] = known

    async def _fetch(self, provider: str, account: str) -> Known:
        """The row as it is now, created empty on first use of the account."""
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            row = await conn.fetchrow(_SELECT, provider, account, timeout=COMMAND_TIMEOUT_S)
            if row is None:
                await conn.execute(_INSERT, provider, account, timeout=COMMAND_TIMEOUT_S)
                row = await conn.fetchrow(_SELECT, provider, account, timeout=COMMAND_TIMEOUT_S)
        return row["version"], state_from_json(row["state"], row["paused_until"])
