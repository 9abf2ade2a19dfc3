"""Pooled connections are released without asyncpg's reset query, and still come back clean."""

from __future__ import annotations

import uuid
from contextlib import AsyncExitStack
from typing import Any

import asyncpg
import pytest

from service.database import create_pool, ping
from service.errors import NetworkError
from tests.helpers import eventually


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


async def test_generic_plans_are_made_again_as_a_table_grows(services: Any) -> None:
    """A statement first planned on an empty table (a sequential scan) keeps that plan as the
    table grows, unless the pool prepares it again (replan_after_s): then it looks the grown
    table up by its index."""
    table = f"grows_{uuid.uuid4().hex[:8]}"
    lookup = f"SELECT t.v FROM unnest($1::text[]) AS i(k) JOIN {table} AS t USING (k)"

    async def plan(conn: Any) -> str:
        """The plan of the statement asyncpg has cached for ``lookup`` on this connection
        ("" when the cache dropped it between two of these steps: asked again)."""
        await conn.fetch(lookup, ["k1"])
        name = await conn.fetchval(
            "SELECT name FROM pg_prepared_statements WHERE statement = $1 ORDER BY prepare_time DESC LIMIT 1",
            lookup,
        )
        try:
            rows = await conn.fetch(f"EXPLAIN EXECUTE {name}('{{k1}}')") if name else []
        except asyncpg.InvalidSQLStatementNameError:
            rows = []
        return "\n".join(row[0] for row in rows)

    async def seq_scan(conn: Any) -> bool:
        return f"Seq Scan on {table}" in await plan(conn)

    async with AsyncExitStack() as stack:
        pools = []
        for replan_after_s in (300.0, 1.0):
            pool = await create_pool(
                services.database_url, min_size=1, max_size=1, generic_plans=True, replan_after_s=replan_after_s
            )
            stack.push_async_callback(pool.close)
            pools.append(await stack.enter_async_context(pool.acquire()))
        kept, replanning = pools
        await kept.execute(f"CREATE TABLE {table} (k text PRIMARY KEY, v text)")
        stack.push_async_callback(kept.execute, f"DROP TABLE {table}")
        for conn in pools:
            await eventually(lambda conn=conn: seq_scan(conn), what="a plan made while empty")
        await kept.execute(f"INSERT INTO {table} SELECT 'k' || g, 'v' FROM generate_series(1, 20000) AS g")
        assert await seq_scan(kept)  # the plan it made first, kept for 300 s

        async def by_index() -> bool:
            return f"Index Scan using {table}_pkey" in await plan(replanning)

        await eventually(by_index, what="the statement planned again, on the index")


async def test_ping_refuses_a_database_that_cannot_take_a_write(services: Any, pool: Any) -> None:
    """A read-only database answers queries but cannot store an outcome: the consumer's
    probe and the daemon's readiness must not take it for a working one."""
    await ping(pool)
    read_only = await asyncpg.create_pool(
        services.database_url, min_size=1, max_size=1, server_settings={"default_transaction_read_only": "on"}
    )
    try:
        with pytest.raises(NetworkError, match="read-only"):
            await ping(read_only)
    finally:
        await read_only.close()
