"""The sandbox's webhook sender → our ingress → RabbitMQ, per provider: our verification agrees
with the sandbox's signing (and so, by its tests, with each provider's)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import pytest

from consumers.publishers import AmqpPublisher
from consumers.topology import declare_on
from service.ingress import VaultDirectory
from service.vault import Vault, key_provider_from_settings
from tests.integration.ingress_support import Running, drain_published, serve_ingress

STRIPE_SECRET = "whsec_sandbox_ingress_secret"
MC_TOKEN = "mc-sandbox-token-0123456789"


@pytest.fixture
async def vault(pool: Any, settings: Any) -> Vault:
    return Vault(pool, key_provider_from_settings(settings))


@pytest.fixture
async def ingress(services: Any, pool: Any, vault: Vault, sandbox_server: Any) -> AsyncIterator[Running]:
    """A real ingress (vault directory, confirming publisher) with the sandbox's app-wide keys."""
    await declare_on(services.amqp_url)
    connection = await aio_pika.connect(
        services.amqp_url, timeout=10, client_properties={"connection_name": "test_ingress_sandbox"}
    )
    async with connection:
        publisher = AmqpPublisher(await connection.channel(publisher_confirms=True))
        async with serve_ingress(
            directory=VaultDirectory(pool, vault),
            publisher=publisher,
            square_signature_key=sandbox_server.square_webhook_signature_key,
            quickbooks_verifier_token=sandbox_server.quickbooks_webhook_verifier_token,
        ) as running:
            yield running


async def control(sandbox: Any, path: str, payload: dict[str, Any]) -> Any:
    """Call a sandbox control endpoint without blocking this loop (the ingress runs on it)."""
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.post(sandbox.url + path, json=payload) as response:
            return await response.json()


async def register(sandbox: Any, provider: str, account: str, **extra: Any) -> None:
    answer = await control(sandbox, "/_sandbox/accounts", {"provider": provider, "account": account, **extra})
    assert "error" not in answer, answer


async def test_stripe_from_sandbox(
    ingress: Running, sandbox_server: Any, vault: Vault, venue_id: str, services: Any
) -> None:
    """A Stripe event signed by the sandbox is accepted and published; a stale one is 401."""
    await vault.set(venue_id, "stripe", "webhook_secret", STRIPE_SECRET)
    await register(
        sandbox_server,
        "stripe",
        venue_id,
        api_key=f"sk_test_{uuid.uuid4().hex}",
        webhook_secret=STRIPE_SECRET,
    )
    marker = uuid.uuid4().hex
    event = {
        "id": f"evt_{marker}",
        "object": "event",
        "type": "customer.created",
        "data": {"object": {"id": "cus_1", "object": "customer"}},
    }
    url = f"{ingress.url}/webhooks/stripe/{venue_id}"
    fresh = await control(
        sandbox_server,
        "/_sandbox/webhooks/stripe",
        {"account": venue_id, "event": event, "url": url, "timestamp": int(time.time())},
    )
    stale = await control(
        sandbox_server,
        "/_sandbox/webhooks/stripe",
        {"account": venue_id, "event": event, "url": url, "timestamp": int(time.time()) - 400},
    )
    assert (200, 401) == (fresh["status"], stale["status"])
    [(data, raw, _)] = await drain_published(services.amqp_url, marker.encode())
    assert (venue_id, f"evt_{marker}") == (data["venue_id"], json.loads(raw)["id"])


async def test_square_from_sandbox(
    ingress: Running, sandbox_server: Any, venue_id: str, services: Any
) -> None:
    """A Square event signed by the sandbox over our public URL is accepted, venue_id null."""
    await register(sandbox_server, "square", venue_id, api_key=f"EAAA{uuid.uuid4().hex}")
    marker = uuid.uuid4().hex
    event = {"type": "customer.created", "event_id": marker, "data": {"type": "customer", "id": "C1"}}
    answer = await control(
        sandbox_server,
        "/_sandbox/webhooks/square",
        {"account": venue_id, "event": event, "url": f"{ingress.url}/webhooks/square"},
    )
    assert 200 == answer["status"], answer
    [(data, _, _)] = await drain_published(services.amqp_url, marker.encode())
    assert ("square", None) == (data["provider"], data["venue_id"])
    assert "x-square-hmacsha256-signature" in data["headers"]


@pytest.mark.parametrize("fmt", ["classic", "cloudevents"])
async def test_quickbooks_from_sandbox(
    ingress: Running, sandbox_server: Any, venue_id: str, services: Any, fmt: str
) -> None:
    """QuickBooks webhooks in both formats, signed by the sandbox, are accepted."""
    realm = f"9{uuid.uuid4().int % 10**14}"
    await register(
        sandbox_server,
        "quickbooks",
        venue_id,
        oauth={
            "client_id": sandbox_server.quickbooks_client_id,
            "client_secret": sandbox_server.quickbooks_client_secret,
            "access_token": f"qb-at-{uuid.uuid4().hex}",
            "refresh_token": f"qb-rt-{uuid.uuid4().hex}",
            "expires_at": None,
            "realm_id": realm,
        },
    )
    marker = uuid.uuid4().hex
    event = {"name": "Customer", "id": marker, "operation": "Create"}
    answer = await control(
        sandbox_server,
        "/_sandbox/webhooks/quickbooks",
        {"account": venue_id, "event": event, "format": fmt, "url": f"{ingress.url}/webhooks/quickbooks"},
    )
    assert 200 == answer["status"], answer
    [(data, _, _)] = await drain_published(services.amqp_url, marker.encode())
    assert ("quickbooks", None) == (data["provider"], data["venue_id"])


async def test_mailchimp_from_sandbox(
    ingress: Running, sandbox_server: Any, vault: Vault, venue_id: str, services: Any
) -> None:
    """A Mailchimp form post from the sandbox to the venue's token URL is accepted; a wrong token is 401."""
    await vault.set(venue_id, "mailchimp", "webhook_secret", MC_TOKEN)
    await register(sandbox_server, "mailchimp", venue_id, api_key=f"{uuid.uuid4().hex}-us6")
    marker = uuid.uuid4().hex
    event = {"type": "subscribe", "data": {"email": f"{marker}@example.com", "list_id": "L1"}}
    good, bad = [
        await control(
            sandbox_server,
            "/_sandbox/webhooks/mailchimp",
            {
                "account": venue_id,
                "event": event,
                "url": f"{ingress.url}/webhooks/mailchimp/{venue_id}/{token}",
            },
        )
        for token in (MC_TOKEN, MC_TOKEN[:-1])
    ]
    assert (200, 401) == (good["status"], bad["status"])
    [(data, _, _)] = await drain_published(services.amqp_url, marker.encode())
    assert ("mailchimp", venue_id) == (data["provider"], data["venue_id"])
