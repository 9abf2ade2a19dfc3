"""One OAuth refresh at a time per credential, across every process (PostgreSQL).

:meth:`PgCredentialLocks.hold` opens a transaction, takes a transaction-scoped advisory lock
named after the credential (``pg_advisory_xact_lock``), then reads the credential row
``FOR UPDATE``. The caller double-checks expiry on that fresh row, refreshes, and stores the
new token set with ``Vault.replace_secret`` on the same connection: it commits with the lock
released in the same instant, so the next holder always sees the new tokens. An asyncio
lock per credential in front of it keeps one process's concurrent callers from each
holding a pool connection while they wait. This implements providers.oauth.CredentialLocks.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg

from service.database import ACQUIRE_TIMEOUT_S
from service.database import credentials as db
from service.errors import NetworkError, UnknownEntityError

LOCK_TIMEOUT_S = 60.0  # a refresh is one HTTP call with a 20 s timeout; waiting longer means trouble


@dataclass(slots=True)
class LockedCredential:
    """A credential row held under the refresh lock, with the connection of its transaction."""

    conn: asyncpg.Connection
    row: Any

    async def mark_invalid(self, message: str) -> None:
        """Mark the credential invalid in this transaction (a refused refresh)."""
        await db.record_use(self.conn, self.row["id"], ok=False, error=message)


class PgCredentialLocks:
    """The PostgreSQL advisory lock for OAuth refreshes (one per credential, all processes)."""

    def __init__(self, pool: asyncpg.Pool, *, lock_timeout_s: float = LOCK_TIMEOUT_S) -> None:
        self._pool = pool
        self._lock_timeout_s = lock_timeout_s
        self._local: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()

    def _local_lock(self, key: str) -> asyncio.Lock:
        lock = self._local.get(key)
        if lock is None:
            lock = asyncio.Lock()
            self._local[key] = lock
        return lock

    @asynccontextmanager
    async def hold(
        self, venue_id: str, provider: str, kind: str = "oauth"
    ) -> AsyncIterator[LockedCredential]:
        """Hold the refresh lock of one credential; commit on exit, roll back on an error.

        Raises UnknownEntityError when the credential is gone, NetworkError when the lock or
        the database cannot be had in time."""
        key = f"oauth-refresh:{venue_id}:{provider}:{kind}"
        async with self._local_lock(key), self._connection(venue_id, provider) as conn, conn.transaction():
            row = await self._lock_and_read(conn, key, venue_id, provider, kind)
            yield LockedCredential(conn, row)

    @asynccontextmanager
    async def _connection(self, venue_id: str, provider: str) -> AsyncIterator[asyncpg.Connection]:
        try:
            conn = await self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S)
        except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
            raise _lock_error(venue_id, provider, exc) from exc
        try:
            yield conn
        finally:
            await self._pool.release(conn)

    async def _lock_and_read(self, conn: asyncpg.Connection, key: str, venue_id: str, provider: str,
                             kind: str) -> Any:
        try:
            await conn.execute("SELECT pg_advisory_xact_lock(hashtextextended($1, 0))", key,
                               timeout=self._lock_timeout_s)
            row = await db.fetch_one(conn, venue_id, provider, kind, for_update=True)
        except (TimeoutError, asyncpg.PostgresError, OSError) as exc:
            raise _lock_error(venue_id, provider, exc) from exc
        if row is None:
            raise UnknownEntityError(f"no {kind} credential for venue {venue_id!r} at {provider}")
        return row


def _lock_error(venue_id: str, provider: str, exc: BaseException) -> NetworkError:
    return NetworkError(f"could not take the refresh lock for the {provider} credential of venue "
                        f"{venue_id}: {exc.__class__.__name__}")
