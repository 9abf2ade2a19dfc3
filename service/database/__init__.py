"""PostgreSQL access: the pool, migration, and the queries of every domain.

asyncpg errors are translated here (``translate``) so callers see only our error tree.
Every pool call has a command timeout; acquiring waits at most ``ACQUIRE_TIMEOUT_S``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeAlias
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from service.errors import ConfigurationError, IntegrationError, NetworkError

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schema.sql"
COMMAND_TIMEOUT_S = 30.0
ACQUIRE_TIMEOUT_S = 10.0
CONNECT_TIMEOUT_S = 10.0

Pool: TypeAlias = asyncpg.Pool


# The database, or the way to it, failed, not the data: the same work can succeed later.
# A consumer hands such a delivery back (and pauses) instead of dead-lettering it.
INFRASTRUCTURE_ERRORS: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,  # a command timeout
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,  # e.g. a connection closed under us
    asyncpg.OperatorInterventionError,  # admin shutdown, cannot connect now, query cancelled
    asyncpg.InsufficientResourcesError,  # too many connections, disk full
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.ReadOnlySQLTransactionError,  # a failover's old primary
)


def schema_sql() -> str:
    """The schema, from the installed package's source tree."""
    return SCHEMA_PATH.read_text(encoding="utf-8")


def describe_dsn(dsn: str) -> str:
    """host:port/dbname of a DSN, without user or password, for messages."""
    parts = urlsplit(dsn)
    host = parts.hostname or "localhost"
    port = parts.port or 5432
    return f"{host}:{port}{parts.path}"


def translate(exc: BaseException, dsn: str) -> IntegrationError:
    """Map an asyncpg / OS error to our error tree, naming the database but no password."""
    where = describe_dsn(dsn)
    if isinstance(exc, asyncpg.InvalidCatalogNameError):
        return ConfigurationError(f"database {where} does not exist; run `integration-service migrate`")
    if isinstance(exc, asyncpg.InvalidPasswordError | asyncpg.InvalidAuthorizationSpecificationError):
        return ConfigurationError(f"database {where} refused the credentials in DATABASE_URL")
    if isinstance(exc, asyncpg.UndefinedTableError):
        return ConfigurationError(f"database {where} has no schema; run `integration-service migrate`")
    if isinstance(exc, OSError | TimeoutError | asyncpg.CannotConnectNowError):
        return NetworkError(f"cannot reach PostgreSQL at {where}: {exc.__class__.__name__}")
    if isinstance(exc, asyncpg.PostgresError):
        return NetworkError(f"PostgreSQL at {where} failed: {exc.__class__.__name__}: {exc}")
    return NetworkError(f"PostgreSQL at {where} failed: {exc}")


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name, encoder=json.dumps, decoder=json.loads, schema="pg_catalog"
        )


async def _keep_session(conn: asyncpg.Connection) -> None:
    """Release a pooled connection without asyncpg's reset query (one round trip per release).

    asyncpg still rolls back a transaction left open; beyond that our code keeps no session
    state on pooled connections: no LISTEN, no session advisory lock (only
    ``pg_advisory_xact_lock``), no ``SET`` but ``SET LOCAL``, no open cursors outside a
    transaction. tests/integration/test_database_pool.py checks that a released connection comes
    back clean.
    """


REPLAN_AFTER_S = 10.0  # a generic-plans pool prepares its statements again this often


async def create_pool(
    dsn: str, *, min_size: int = 1, max_size: int = 10, relaxed: bool = False, generic_plans: bool = False,
    replan_after_s: float = REPLAN_AFTER_S,
) -> Pool:
    """Open a pool; raise NetworkError / ConfigurationError naming the database.

    ``relaxed=True``: every commit on it returns before its WAL is flushed (see
    relaxed_commit); only for writes a redelivery redoes, never for an outcome before an ack.

    ``generic_plans=True``: prepared statements keep one generic plan instead of being planned
    again for each call's values. The daemon's statements look rows up by key, so the generic
    plan is the custom one; but PostgreSQL never trusts the generic plan of a statement that
    reads array parameters (unnest) and plans those afresh every time, which cost the job
    start and finish statements more than their execution. Not for the CLI's optional-filter
    queries (``$1 IS NULL OR ...``), where only a custom plan can use an index.

    A generic plan is made once, from the table sizes of that moment: a statement first run
    while its table was empty keeps a sequential scan as the table grows (until an ANALYZE
    invalidates it; with autovacuum off, as on our CI's server, never: the job start then
    cost 3 ms at 15,000 jobs). So such a pool prepares its statements again every
    ``replan_after_s`` (asyncpg's statement cache lifetime), one Parse per statement and
    connection, and each new plan sees the tables as they have grown.
    """
    settings = {"synchronous_commit": "off"} if relaxed else {}
    lifetime = 300.0  # asyncpg's default
    if generic_plans:
        settings["plan_cache_mode"] = "force_generic_plan"
        lifetime = replan_after_s
    try:
        pool = await asyncpg.create_pool(
            dsn, min_size=min_size, max_size=max_size, init=_init_connection,
            command_timeout=COMMAND_TIMEOUT_S, timeout=CONNECT_TIMEOUT_S, reset=_keep_session,
            server_settings=settings or None, max_cached_statement_lifetime=lifetime,
        )
    except Exception as exc:  # translated at the boundary
        raise translate(exc, dsn) from exc
    assert pool is not None
    return pool


@asynccontextmanager
async def open_pool(dsn: str, **kwargs: Any) -> AsyncIterator[Pool]:
    """A pool that is closed on exit."""
    pool = await create_pool(dsn, **kwargs)
    try:
        yield pool
    finally:
        await pool.close()


async def _connect(dsn: str) -> asyncpg.Connection:
    try:
        return await asyncpg.connect(dsn, timeout=CONNECT_TIMEOUT_S)
    except Exception as exc:
        raise translate(exc, dsn) from exc


async def ensure_database(dsn: str) -> bool:
    """Create the database named in ``dsn`` if it is missing; True when it was created."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if not name:
        raise ConfigurationError("DATABASE_URL names no database")
    admin_dsn = urlunsplit(parts._replace(path="/postgres"))
    conn = await _connect(admin_dsn)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists:
            return False
        quoted = '"' + name.replace('"', '""') + '"'
        try:
            await conn.execute(f"CREATE DATABASE {quoted}")
        except asyncpg.DuplicateDatabaseError:
            return False  # another migrate won the race
        return True
    finally:
        await conn.close()


MIGRATION_LOCK_ID = 0x1A7E5E1C  # pg_advisory_lock key: one migrate at a time


async def apply_schema(dsn: str) -> None:
    """Apply schema.sql under an advisory lock, so concurrent starts do not collide."""
    conn = await _connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_ID)
        try:
            await conn.execute(await asyncio.to_thread(schema_sql))
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_ID)
    except IntegrationError:
        raise
    except Exception as exc:
        raise translate(exc, dsn) from exc
    finally:
        await conn.close()


async def migrate_database(dsn: str) -> bool:
    """Create the database if missing and apply the schema; True when it was created."""
    created = await ensure_database(dsn)
    await apply_schema(dsn)
    return created


async def relaxed_commit(conn: asyncpg.Connection) -> None:
    """Let this transaction's commit return before its WAL is flushed.

    Only for work that is safe to lose in a crash because a redelivery redoes it (job start,
    a page or batch stored mid-job, limiter state, outbox marks): the outcome transaction
    committed before each ack stays synchronous, and flushing it flushes all earlier WAL.
    """
    await conn.execute("SET LOCAL synchronous_commit TO OFF")


async def ping(pool: Pool) -> None:
    """One round trip; raises NetworkError when the database is away or cannot take a
    write (a standby after a failover, or read-only by default): the daemon's probe before
    it consumes again and its readiness both mean "outcomes can be stored"."""
    try:
        async with pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            read_only = await conn.fetchval(
                "SELECT pg_is_in_recovery() OR current_setting('transaction_read_only') = 'on'", timeout=5
            )
    except Exception as exc:
        raise NetworkError(f"PostgreSQL unreachable: {exc.__class__.__name__}") from exc
    if read_only:
        raise NetworkError("PostgreSQL is read-only (a standby, or read-only by default): cannot store outcomes")
