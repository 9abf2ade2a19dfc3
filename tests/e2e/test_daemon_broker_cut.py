"""`integration-service run` with its broker link cut and restored through a TCP proxy: it
stops being ready, and once the link is back it consumes again (a request published while
it was cut runs) and publishes again (a later `sync --wait` gets its result)."""

from __future__ import annotations

import asyncio
import json
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests.e2e.daemon_process import DaemonProcess, job_status, module_env, sandbox_env, stripe_account, sync_cli
from tests.helpers import eventually
from tests.tcp_proxy import TcpProxy

pytestmark = pytest.mark.slow


def _sync(env: dict[str, str], venue: str, *args: str) -> str:
    result = sync_cli(env, venue, "--mode", "full", *args)
    assert 0 == result.returncode, result.stderr
    return result.stdout.strip()


async def _ready(daemon: DaemonProcess) -> bool:
    # Off the loop: the proxy runs on it and must keep forwarding while we ask.
    return await asyncio.to_thread(daemon.ready)


async def _not_ready(daemon: DaemonProcess) -> bool:
    return not await _ready(daemon)


async def _status(database_url: str, job_id: str) -> str | None:
    row = await asyncio.to_thread(job_status, database_url, job_id)
    return None if row is None else str(row["status"])


async def _final_status(database_url: str, job_id: str) -> str | None:
    status = await _status(database_url, job_id)
    return status if status in ("succeeded", "partial", "failed") else None


async def test_daemon_resumes_consuming_and_publishing_after_a_broker_cut(
    services: Any, sandbox_server: Any, venue_id: str, tmp_path: Path
) -> None:
    env = sandbox_env(module_env(services, tmp_path), sandbox_server)
    await asyncio.to_thread(stripe_account, sandbox_server, env, venue_id)

    amqp = urlsplit(services.amqp_url)
    proxy = TcpProxy(amqp.port or 5672)
    await proxy.start()
    proxied = env | {"AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}{amqp.path}"}
    daemon = DaemonProcess(proxied, tmp_path / "daemon.log")
    await asyncio.to_thread(daemon.start)
    try:
        before = json.loads(await asyncio.to_thread(_sync, env, venue_id, "--wait", "--timeout", "60"))
        assert "succeeded" == before["status"]

        await proxy.cut()
        await eventually(lambda: _not_ready(daemon), timeout=20, what="daemon not ready while cut")
        during = str(uuid.uuid4())
        await asyncio.to_thread(_sync, env, venue_id, "--job-id", during)  # the broker keeps it
        assert await _status(services.database_url, during) is None

        await proxy.start()
        await eventually(lambda: _ready(daemon), timeout=60, what="daemon ready again")
        finished = await eventually(
            lambda: _final_status(services.database_url, during),
            timeout=60,
            what="the request published during the cut to finish",
            interval=0.2,
        )
        assert "succeeded" == finished
        after = json.loads(await asyncio.to_thread(_sync, env, venue_id, "--wait", "--timeout", "60"))
        assert "succeeded" == after["status"]
    finally:
        code = await asyncio.to_thread(daemon.terminate)
        await proxy.cut()
    assert 0 == code
