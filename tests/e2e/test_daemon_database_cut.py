"""`integration-service run` with its PostgreSQL link cut and restored through a TCP proxy: it
stops being ready, hands back what it cannot store instead of acknowledging it, and once the
link is back the push published during the cut runs once (one object per record at the
sandbox) and the daemon is ready again. While the database is away the consumer is paused,
so the message waits in the queue instead of being redelivered towards x-delivery-limit."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.daemon_process import (
    DaemonProcess,
    customers_at_sandbox,
    job_status,
    module_env,
    sandbox_env,
    stripe_account,
    sync_cli,
)
from tests.helpers import eventually
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow

RECORDS = 5


def _requeued(daemon: DaemonProcess) -> float:
    """integration_messages_consumed_total of sync requests handed back (0 before the first)."""
    _, text = daemon.get("/metrics")
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == "integration_messages_consumed_total"
        and sample.labels == {"queue": "integration.sync-requests", "outcome": "requeued"}
    )


async def _final_status(database_url: str, job_id: str) -> str | None:
    row = await asyncio.to_thread(job_status, database_url, job_id)
    status = None if row is None else str(row["status"])
    return status if status in ("succeeded", "partial", "failed") else None


async def _daemon_behind_proxy(services: Any, env: dict[str, str], tmp_path: Path) -> tuple[TcpProxy, DaemonProcess]:
    """A started daemon whose PostgreSQL link goes through a TCP proxy the test can cut."""
    database = urlsplit(services.database_url)
    proxy = TcpProxy(database.port or 5432)
    await proxy.start()
    user = database.netloc.rsplit("@", 1)[0]
    proxied = env | {"DATABASE_URL": database._replace(netloc=f"{user}@127.0.0.1:{proxy.port}").geturl()}
    daemon = DaemonProcess(proxied, tmp_path / "daemon.log")
    await asyncio.to_thread(daemon.start)
    return proxy, daemon


async def test_sigterm_while_the_database_is_away_still_exits_0(
    services: Any, sandbox_server: Any, tmp_path: Path
) -> None:
    """The shutdown's last relay pass cannot reach PostgreSQL: it says so and the process
    still exits 0 (the rows wait in the outbox for the next process)."""
    env = sandbox_env(module_env(services, tmp_path), sandbox_server)
    proxy, daemon = await _daemon_behind_proxy(services, env, tmp_path)
    try:
        await proxy.cut()
        await eventually(lambda: asyncio.to_thread(lambda: not daemon.ready()), timeout=20, what="not ready while cut")
    finally:
        code = await asyncio.to_thread(daemon.terminate)
        await proxy.cut()
    assert 0 == code
    assert "final_relay_failed" in (tmp_path / "daemon.log").read_text()


async def test_daemon_hands_back_and_resumes_after_a_database_cut(
    services: Any, sandbox_server: Any, venue_id: str, tmp_path: Path
) -> None:
    env = sandbox_env(module_env(services, tmp_path), sandbox_server)
    key = await asyncio.to_thread(stripe_account, sandbox_server, env, venue_id)
    proxy, daemon = await _daemon_behind_proxy(services, env, tmp_path)
    records = tmp_path / "records.json"
    records.write_text(json.dumps([{"id": f"cut-{i}", "email": f"cut{i}@example.com"} for i in range(RECORDS)]))
    job_id = str(uuid.uuid4())
    try:
        await proxy.cut()
        await eventually(lambda: asyncio.to_thread(lambda: not daemon.ready()), timeout=20, what="not ready while cut")
        published = await asyncio.to_thread(
            sync_cli, env, venue_id, "--direction", "push", "--records", str(records), "--job-id", job_id
        )
        assert 0 == published.returncode, published.stderr
        await eventually(
            lambda: asyncio.to_thread(lambda: _requeued(daemon) >= 1), timeout=30, what="the push handed back"
        )
        assert [] == customers_at_sandbox(sandbox_server, key)  # nothing ran without its job row
        status, body = await asyncio.to_thread(daemon.get, "/readyz")
        assert 503 == status
        assert "paused" in body["checks"]["consumers"]  # waiting in the queue, not spinning its delivery count

        await proxy.start()
        finished = await eventually(
            lambda: _final_status(services.database_url, job_id), timeout=60, what="the push to finish", interval=0.2
        )
        assert "succeeded" == finished
        emails = sorted(c["email"] for c in customers_at_sandbox(sandbox_server, key))
        assert [f"cut{i}@example.com" for i in range(RECORDS)] == emails
        await eventually(lambda: asyncio.to_thread(daemon.ready), timeout=20, what="ready again")
    finally:
        code = await asyncio.to_thread(daemon.terminate)
        await proxy.cut()
    assert 0 == code
