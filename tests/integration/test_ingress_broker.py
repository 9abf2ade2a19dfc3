"""The ingress against the real RabbitMQ vhost and PostgreSQL vault of this test run."""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiohttp
import pytest

from consumers.publishers import AmqpPublisher
from consumers.topology import declare_on
from providers import webhooks as hooks
from service.database import ping
from service.ingress import VaultDirectory
from service.vault import Vault, key_provider_from_settings
from tests.integration.ingress_support import Running, drain_published, received, serve_ingress

SECRET = "whsec_broker_test_secret"


@pytest.fixture
async def amqp(services: Any) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """The topology declared and a connection named after the test."""
    await declare_on(services.amqp_url)
    connection = await aio_pika.connect(
        services.amqp_url, timeout=10, client_properties={"connection_name": "test_ingress_broker"}
    )
    try:
        yield connection
    finally:
        await connection.close()


@pytest.fixture
async def vault(pool: Any, settings: Any) -> Vault:
    return Vault(pool, key_provider_from_settings(settings))


@pytest.fixture
async def directory(pool: Any, vault: Vault) -> VaultDirectory:
    return VaultDirectory(pool, vault, min_refresh_s=0.0)


@pytest.fixture
async def ingress(
    amqp: aio_pika.abc.AbstractConnection, directory: VaultDirectory, pool: Any
) -> AsyncIterator[Running]:
    channel = await amqp.channel(publisher_confirms=True)

    async def broker() -> None:
        if amqp.is_closed or channel.is_closed:
            raise ConnectionError("broker connection closed")

    async with serve_ingress(
        directory=directory,
        publisher=AmqpPublisher(channel),
        readiness={"database": lambda: ping(pool), "broker": broker},
    ) as running:
        yield running


def event(marker: str) -> bytes:
    return f'{{"id":"evt_{marker}","object":"event","type":"customer.updated"}}'.encode()


async def post_stripe(url: str, venue_id: str, body: bytes, secret: str = SECRET) -> int:
    headers = {"Stripe-Signature": hooks.sign_stripe(body, secret), "Content-Type": "application/json"}
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=10)) as session:
        async with session.post(f"{url}/webhooks/stripe/{venue_id}", data=body, headers=headers) as response:
            return response.status


async def test_signed_stripe_webhook_reaches_the_queue(
    ingress: Running, vault: Vault, venue_id: str, services: Any
) -> None:
    """A signed webhook is confirmed, then found on integration.webhook-events exactly as sent."""
    await vault.set(venue_id, "stripe", "webhook_secret", SECRET)
    marker = uuid.uuid4().hex
    body = event(marker)
    assert 200 == await post_stripe(ingress.url, venue_id, body)
    [(data, raw, message)] = await drain_published(services.amqp_url, marker.encode())
    assert body == raw
    assert ("integration.webhook.v1", "stripe", venue_id) == (
        data["schema"],
        data["provider"],
        data["venue_id"],
    )
    assert {"stripe-signature", "content-type"} == set(data["headers"])
    assert ("webhook.stripe", "application/json", aio_pika.DeliveryMode.PERSISTENT) == (
        message.routing_key,
        message.content_type,
        message.delivery_mode,
    )
    assert message.message_id


async def test_same_event_twice_is_published_twice(
    ingress: Running, vault: Vault, venue_id: str, services: Any
) -> None:
    """The same event delivered twice is 200 twice and on the queue twice (the daemon dedupes)."""
    await vault.set(venue_id, "stripe", "webhook_secret", SECRET)
    marker = uuid.uuid4().hex
    body = event(marker)
    assert [200, 200] == [await post_stripe(ingress.url, venue_id, body) for _ in range(2)]
    found = await drain_published(services.amqp_url, marker.encode())
    assert [body, body] == [raw for _, raw, _ in found]
    assert 2 == len({m.message_id for _, _, m in found})


async def test_broker_down_503_nothing_published(
    ingress: Running, amqp: aio_pika.abc.AbstractConnection, vault: Vault, venue_id: str, services: Any
) -> None:
    """With the broker connection gone the answer is 503 and nothing reaches the queue."""
    await vault.set(venue_id, "stripe", "webhook_secret", SECRET)
    marker = uuid.uuid4().hex
    await amqp.close()
    assert 503 == await post_stripe(ingress.url, venue_id, event(marker))
    assert [] == await drain_published(services.amqp_url, marker.encode())
    assert 1.0 == received(ingress.metrics, "stripe", 503)


async def test_unknown_venue_costs_no_decryption(ingress: Running, directory: VaultDirectory) -> None:
    """An unknown venue is a 404 without opening any secret."""
    assert 404 == await post_stripe(ingress.url, f"venue-unknown-{uuid.uuid4().hex}", event("x"))
    assert 0 == directory.decryptions


async def test_forged_signature_401_nothing_published(
    ingress: Running, vault: Vault, venue_id: str, services: Any
) -> None:
    """A forged signature is a 401 and nothing reaches the queue."""
    await vault.set(venue_id, "stripe", "webhook_secret", SECRET)
    marker = uuid.uuid4().hex
    assert 401 == await post_stripe(ingress.url, venue_id, event(marker), secret="whsec_forged")
    assert [] == await drain_published(services.amqp_url, marker.encode())


async def test_secret_cached_between_requests(
    ingress: Running, vault: Vault, venue_id: str, directory: VaultDirectory, services: Any
) -> None:
    """A burst of webhooks for one venue decrypts its secret once."""
    await vault.set(venue_id, "stripe", "webhook_secret", SECRET)
    marker = uuid.uuid4().hex
    statuses = [await post_stripe(ingress.url, venue_id, event(f"{marker}-{i}")) for i in range(3)]
    assert ([200, 200, 200], 1) == (statuses, directory.decryptions)
    assert 3 == len(await drain_published(services.amqp_url, marker.encode()))


async def test_readyz_follows_the_broker(ingress: Running, amqp: aio_pika.abc.AbstractConnection) -> None:
    """/readyz is 200 with broker and database up, 503 naming the broker once it is gone."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ingress.url}/readyz") as response:
            ready = (response.status, await response.json())
        await amqp.close()
        async with session.get(f"{ingress.url}/readyz") as response:
            gone = (response.status, await response.json())
    assert (200, {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}) == ready
    assert 503 == gone[0]
    assert ("unavailable", "ok") == (gone[1]["status"], gone[1]["checks"]["database"])
    assert gone[1]["checks"]["broker"].startswith("ConnectionError")


async def test_message_body_decodes_to_signed_bytes(
    ingress: Running, vault: Vault, venue_id: str, services: Any
) -> None:
    """Bytes that are not plain ASCII survive base64 exactly (the daemon sees what was signed)."""
    await vault.set(venue_id, "stripe", "webhook_secret", SECRET)
    marker = uuid.uuid4().hex
    body = f'{{"id":"evt_{marker}","object":"event","name":"Zoë — 東京"}}'.encode()
    assert 200 == await post_stripe(ingress.url, venue_id, body)
    [(data, raw, _)] = await drain_published(services.amqp_url, marker.encode())
    assert body == raw == base64.b64decode(data["body"])


async def test_rotated_secret_accepted_without_waiting_for_the_cache(
    ingress: Running, vault: Vault, venue_id: str, directory: VaultDirectory, services: Any
) -> None:
    """After the secret is replaced (webhooks register), a webhook signed with the new one passes
    at once: a mismatch re-reads the secret instead of waiting out the cache."""
    await vault.set(venue_id, "stripe", "webhook_secret", SECRET)
    marker = uuid.uuid4().hex
    assert 200 == await post_stripe(ingress.url, venue_id, event(f"{marker}-old"))
    await vault.set(venue_id, "stripe", "webhook_secret", "whsec_rotated_secret")
    assert 200 == await post_stripe(
        ingress.url, venue_id, event(f"{marker}-new"), secret="whsec_rotated_secret"
    )
    assert 401 == await post_stripe(ingress.url, venue_id, event(f"{marker}-stale-secret"))
    assert 2 == len(await drain_published(services.amqp_url, marker.encode()))
