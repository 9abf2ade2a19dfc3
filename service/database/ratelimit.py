"""The rate limiter's shared state in PostgreSQL: one row per (provider, account).

Each change runs in a short transaction holding that row's lock (``SELECT ... FOR
UPDATE``), so the limiter's pure arithmetic (service/limiter.py) is applied atomically no
matter how many processes share the account, and two accounts never wait on each other.
The ``state`` column holds the JSON of ``BucketState`` except ``paused_until``, which has
its own column so an operator can read a pause at a glance.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TypeVar

import asyncpg

from service.errors import NetworkError
from service.limiter import BucketState, state_from_json, state_to_json

T = TypeVar("T")

ACQUIRE_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 5.0

# One round trip opens the transaction and skips the WAL flush wait at commit: a bucket
# lost in a database crash only forgets the last instants of spacing, while waiting for
# the disk on every grant costs milliseconds per call (bench/LIMITER.md).
_BEGIN = "BEGIN; SET LOCAL synchronous_commit TO OFF"
_SELECT = (
    "SELECT state::text AS state, paused_until FROM rate_limit_buckets"
    " WHERE provider = $1 AND account = $2"
)
_INSERT = (
    "INSERT INTO rate_limit_buckets (provider, account) VALUES ($1, $2)"
    " ON CONFLICT (provider, account) DO NOTHING"
)
_UPDATE = (
    "UPDATE rate_limit_buckets SET state = $3::text::jsonb, paused_until = $4, updated_at = now()"
    " WHERE provider = $1 AND account = $2"
)


class PostgresBucketStore:
    """BucketStore shared by every process on the same database."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    async def update(
        self, provider: str, account: str, change: Callable[[BucketState], tuple[BucketState, T]]
    ) -> T:
        """Apply ``change`` under the row lock; raises NetworkError when PostgreSQL fails."""
        try:
            async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
                await conn.execute(_BEGIN, timeout=COMMAND_TIMEOUT_S)
                try:
                    result = await self._apply(conn, provider, account, change)
                except BaseException:
                    with contextlib.suppress(Exception):
                        await conn.execute("ROLLBACK", timeout=COMMAND_TIMEOUT_S)
                    raise
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise NetworkError(f"rate-limit store failed: {exc.__class__.__name__}") from exc
        return result

    async def read(self, provider: str, account: str) -> BucketState:
        """The current state without locking; raises NetworkError when PostgreSQL fails."""
        try:
            row = await self._pool.fetchrow(_SELECT, provider, account, timeout=COMMAND_TIMEOUT_S)
        except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
            raise NetworkError(f"rate-limit store failed: {exc.__class__.__name__}") from exc
        return BucketState() if row is None else state_from_json(row["state"], row["paused_until"])

    async def _apply(
        self, conn: asyncpg.Connection, provider: str, account: str,
        change: Callable[[BucketState], tuple[BucketState, T]],
    ) -> T:
        state = await self._locked_state(conn, provider, account)
        new_state, result = change(state)
        if new_state != state:
            await conn.execute(
                _UPDATE, provider, account, state_to_json(new_state), new_state.paused_until,
                timeout=COMMAND_TIMEOUT_S,
            )
        await conn.execute("COMMIT", timeout=COMMAND_TIMEOUT_S)
        return result

    @staticmethod
    async def _locked_state(conn: asyncpg.Connection, provider: str, account: str) -> BucketState:
        locked = _SELECT + " FOR UPDATE"
        row = await conn.fetchrow(locked, provider, account, timeout=COMMAND_TIMEOUT_S)
        if row is None:  # first use of this account: create the row, then lock it
            await conn.execute(_INSERT, provider, account, timeout=COMMAND_TIMEOUT_S)
            row = await conn.fetchrow(locked, provider, account, timeout=COMMAND_TIMEOUT_S)
        return state_from_json(row["state"], row["paused_until"])
