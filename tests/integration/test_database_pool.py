"""Pooled connections are released without asyncpg's reset query, and still come back clean."""

from __future__ import annotations

from typing import Any

from service.database import create_pool


async def test_a_transaction_left_open_is_rolled_back_on_release(pool: Any) -> None:
    conn = await pool.acquire()
    await conn.execute("BEGIN")
    await conn.execute("CREATE TEMP TABLE left_open (x int)")
    await pool.release(conn)
    async with pool.acquire() as again:
        assert not again.is_in_transaction()
        exists = await again.fetchval("SELECT to_regclass('pg_temp.left_open') IS NOT NULL")
        assert exists is False


async def test_set_local_and_xact_locks_end_with_their_transaction(pool: Any) -> None:
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute("SET LOCAL synchronous_commit TO OFF")
        await conn.execute("SELECT pg_advisory_xact_lock(4242)")
    async with pool.acquire() as conn:
        assert await conn.fetchval("SHOW synchronous_commit") == "on"
        held = await conn.fetchval("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 4242")
        assert held == 0


async def test_relaxed_pool_skips_the_flush_and_the_main_pool_does_not(services: Any) -> None:
    relaxed = await create_pool(services.database_url, min_size=1, max_size=1, relaxed=True)
    try:
        async with relaxed.acquire() as conn:
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
        async with relaxed.acquire() as conn:  # released and taken again: still its own setting
            assert await conn.fetchval("SHOW synchronous_commit") == "off"
    finally:
        await relaxed.close()


async def test_generic_plans_pool_plans_once_and_the_default_pool_per_call(services: Any) -> None:
    """A pool made with generic_plans executes a prepared statement on its generic plan."""

    async def plan(pool: Any) -> str:
        async with pool.acquire() as conn:
            await conn.execute("PREPARE counted(name) AS SELECT count(*) FROM pg_class WHERE relname = $1")
            try:
                rows = await conn.fetch("EXPLAIN EXECUTE counted('pg_class')")
            finally:
                await conn.execute("DEALLOCATE counted")
        return "\n".join(row[0] for row in rows)

    generic = await create_pool(services.database_url, min_size=1, max_size=1, generic_plans=True)
    default = await create_pool(services.database_url, min_size=1, max_size=1)
    try:
        assert "$1" in await plan(generic)  # a generic plan names the parameter
        assert "$1" not in await plan(default)  # a custom plan has the value in its place
    finally:
        await generic.close()
        await default.close()
