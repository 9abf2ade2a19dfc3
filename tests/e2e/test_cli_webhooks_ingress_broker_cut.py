"""`integration-service ingress` with its broker link cut and restored through a TCP proxy:
503 and not ready while cut, nothing published; 200 again once it has reconnected."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from aiohttp.test_utils import unused_port

from providers import webhooks as hooks
from service.vault import Vault, key_provider_from_settings
from tests.helpers import eventually
from tests.integration.ingress_support import drain_published
from tests.tcp_proxy import TcpProxy

COMMAND = str(Path(sys.executable).parent / "integration-service")
SECRET = "whsec_e2e_broker_cut_secret"


async def _post(session: aiohttp.ClientSession, base: str, venue_id: str, body: bytes) -> int:
    headers = {"Stripe-Signature": hooks.sign_stripe(body, SECRET)}
    async with session.post(f"{base}/webhooks/stripe/{venue_id}", data=body, headers=headers) as response:
        return response.status


async def _ready(session: aiohttp.ClientSession, base: str) -> int | None:
    try:
        async with session.get(f"{base}/readyz") as response:
            return response.status
    except aiohttp.ClientError:
        return None


async def _ready_is(session: aiohttp.ClientSession, base: str, status: int) -> bool:
    return await _ready(session, base) == status


async def test_broker_cut_then_restored(
    service_env: dict[str, str], pool: Any, settings: Any, venue_id: str, services: Any
) -> None:
    """While the broker link is cut: 503, /readyz 503, nothing published; after: 200 again."""
    await Vault(pool, key_provider_from_settings(settings)).set(venue_id, "stripe", "webhook_secret", SECRET)
    amqp = urlsplit(services.amqp_url)
    proxy = TcpProxy(amqp.port or 5672)
    await proxy.start()
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env | {"AMQP_URL": f"amqp://guest:guest@127.0.0.1:{proxy.port}{amqp.path}"}
    process = await asyncio.create_subprocess_exec(
        COMMAND,
        "ingress",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    marker = uuid.uuid4().hex
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await eventually(lambda: _ready(session, base), timeout=20, what="ingress ready")
            before = await _post(session, base, venue_id, f'{{"id":"evt_{marker}_before"}}'.encode())
            await proxy.cut()
            await eventually(lambda: _ready_is(session, base, 503), timeout=10, what="not ready")
            during = await _post(session, base, venue_id, f'{{"id":"evt_{marker}_during"}}'.encode())
            await proxy.start()
            await eventually(lambda: _ready_is(session, base, 200), timeout=20, what="ready again")
            after = await _post(session, base, venue_id, f'{{"id":"evt_{marker}_after"}}'.encode())
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        await asyncio.wait_for(process.wait(), timeout=20)
        await proxy.cut()
    assert (200, 503, 200) == (before, during, after)
    published = sorted(
        raw.decode() for _, raw, _ in await drain_published(services.amqp_url, marker.encode())
    )
    assert [f'{{"id":"evt_{marker}_after"}}', f'{{"id":"evt_{marker}_before"}}'] == published
    assert 0 == process.returncode
