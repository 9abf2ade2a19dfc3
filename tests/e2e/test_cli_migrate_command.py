"""`integration-service migrate` as a subprocess: idempotent, and one-line failures."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from consumers.topology import QUEUES

CLI = str(Path(sys.executable).with_name("integration-service"))
ADMIN_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
TABLES = {"credentials", "sync_jobs", "sync_record_log", "pull_cursors", "field_mappings", "schedules",
          "webhook_events", "provider_health", "outbox", "dead_letters"}


def cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=90)
    assert "Traceback" not in result.stderr + result.stdout
    return result


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def _drop(name: str) -> None:
    conn = await asyncpg.connect(ADMIN_DSN, timeout=10)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await conn.close()


@pytest.fixture
def fresh_database_env(service_env: dict[str, str]) -> Iterator[dict[str, str]]:
    """The run's environment pointed at a database that does not exist yet (dropped after)."""
    name = f"test_migrate_{uuid.uuid4().hex[:10]}"
    try:
        yield {**service_env, "DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{name}"}
    finally:
        asyncio.run(_drop(name))


async def _tables(dsn: str) -> set[str]:
    conn = await asyncpg.connect(dsn, timeout=10)
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return {r["tablename"] for r in rows}
    finally:
        await conn.close()


async def _queues_exist(amqp_url: str) -> list[str]:
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        found = []
        for spec in QUEUES:
            queue = await channel.declare_queue(spec.name, passive=True)
            found.append(queue.name)
        return found


def test_migrate_twice_creates_then_is_up_to_date(fresh_database_env: dict[str, str]) -> None:
    """The first migrate creates the database and schema, the second changes nothing and succeeds."""
    first = cli(fresh_database_env, "migrate")
    second = cli(fresh_database_env, "migrate")
    assert (0, 0) == (first.returncode, second.returncode), first.stderr + second.stderr
    assert ("created" in first.stdout, "up to date" in second.stdout) == (True, True)
    assert TABLES <= asyncio.run(_tables(fresh_database_env["DATABASE_URL"]))
    assert [q.name for q in QUEUES] == asyncio.run(_queues_exist(fresh_database_env["AMQP_URL"]))


def test_concurrent_migrates_all_succeed(fresh_database_env: dict[str, str]) -> None:
    """Several processes starting at once (compose restarts, say) all migrate cleanly."""
    procs = [subprocess.Popen([CLI, "migrate"], env=fresh_database_env, text=True,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in range(3)]
    outcomes = [(p.wait(timeout=90), p.stderr.read() if p.stderr else "") for p in procs]
    for proc in procs:
        for stream in (proc.stdout, proc.stderr):
            if stream:
                stream.close()
    assert [(0, "")] * 3 == outcomes


@pytest.mark.parametrize(("override", "exit_code", "names"), [
    ({"DATABASE_URL": "postgresql://postgres:hunter2@127.0.0.1:{port}/x"}, 1, "PostgreSQL"),
    ({"AMQP_URL": "amqp://guest:hunter2@127.0.0.1:{port}/"}, 1, "RabbitMQ"),
    ({"DAEMON_PORT": "abc"}, 2, "DAEMON_PORT"),
    ({"ENVIRONMENT": "production", "KMS_ENABLED": "false"}, 2, "ENVIRONMENT=production"),
    ({"DATABASE_URL": "mysql://root:hunter2@127.0.0.1/x"}, 2, "DATABASE_URL"),
], ids=["database-away", "broker-away", "bad-port", "production-without-kms", "bad-database-url"])
def test_migrate_failures_are_one_line(
    service_env: dict[str, str], override: dict[str, str], exit_code: int, names: str
) -> None:
    """An unreachable service exits 1, a bad setting 2: one line on stderr naming it, no password."""
    port = closed_port()
    env = {**service_env, **{k: v.format(port=port) for k, v in override.items()}}
    result = cli(env, "migrate")
    assert (exit_code, 1, True, False) == (result.returncode, len(result.stderr.splitlines()),
                                           names in result.stderr, "hunter2" in result.stderr)


def test_bad_option_exits_2(service_env: dict[str, str]) -> None:
    """An unknown option is a usage error: exit 2, one line."""
    result = cli(service_env, "migrate", "--bogus")
    assert (2, 1, "error:") == (result.returncode, len(result.stderr.splitlines()), result.stderr[:6])


def test_migrate_help(service_env: dict[str, str]) -> None:
    """migrate --help exits 0 and says what it does."""
    result = cli(service_env, "migrate", "--help")
    assert (0, True) == (result.returncode, "schema" in result.stdout)
