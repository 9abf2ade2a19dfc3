"""`integration-service ingress` as a real process: ready, verifies, publishes, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp.test_utils import unused_port

from providers import webhooks as hooks
from service.vault import Vault, key_provider_from_settings
from tests.helpers import eventually
from tests.integration.ingress_support import drain_published

COMMAND = str(Path(sys.executable).parent / "integration-service")
STRIPE_SECRET = "whsec_e2e_ingress_secret"
SQUARE_KEY = "e2e-square-signature-key"


async def _status(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(url) as response:
            return response.status
    except aiohttp.ClientError:
        return None


async def test_ingress_process_serves_and_stops(
    service_env: dict[str, str], pool: Any, settings: Any, venue_id: str, services: Any
) -> None:
    """The ingress process becomes ready, publishes signed Stripe and Square webhooks, exits 0 on SIGTERM."""
    await Vault(pool, key_provider_from_settings(settings)).set(
        venue_id, "stripe", "webhook_secret", STRIPE_SECRET
    )
    port = unused_port()
    base = f"http://127.0.0.1:{port}"
    env = service_env | {"INGRESS_PUBLIC_URL": base, "SQUARE_WEBHOOK_SIGNATURE_KEY": SQUARE_KEY}
    process = await asyncio.create_subprocess_exec(
        COMMAND,
        "ingress",
        "--port",
        str(port),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    marker = uuid.uuid4().hex
    stripe_body = f'{{"id":"evt_{marker}","object":"event"}}'.encode()
    square_body = f'{{"merchant_id":"M","event_id":"{marker}"}}'.encode()
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
            await eventually(lambda: _status(session, f"{base}/readyz"), timeout=20, what="ingress /readyz")
            headers = {"Stripe-Signature": hooks.sign_stripe(stripe_body, STRIPE_SECRET)}
            async with session.post(
                f"{base}/webhooks/stripe/{venue_id}", data=stripe_body, headers=headers
            ) as r:
                stripe_status = r.status
            sig = hooks.sign_square(
                square_body, signature_key=SQUARE_KEY, notification_url=f"{base}/webhooks/square"
            )
            headers = {hooks.SQUARE_SIGNATURE: sig}
            async with session.post(f"{base}/webhooks/square", data=square_body, headers=headers) as r:
                square_status = r.status
            async with session.get(f"{base}/metrics") as r:
                metrics = await r.text()
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        _, stderr = await asyncio.wait_for(process.communicate(), timeout=20)
    assert (200, 200) == (stripe_status, square_status)
    found = await drain_published(services.amqp_url, marker.encode())
    assert [("square", None), ("stripe", venue_id)] == sorted(
        (d["provider"], d["venue_id"]) for d, _, _ in found
    )
    assert 'integration_webhooks_received_total{provider="stripe",status="200"} 1.0' in metrics
    assert 0 == process.returncode
    assert b"ingress_stopped" in stderr
    assert STRIPE_SECRET.encode() not in stderr and SQUARE_KEY.encode() not in stderr
