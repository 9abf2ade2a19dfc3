"""Test doubles and helpers for the ingress tests: publishers, a directory, a server."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aiohttp import web
from aiohttp.test_utils import TestServer, unused_port

from consumers.topology import WEBHOOK_QUEUE
from service.errors import NetworkError
from service.httpcommon import ReadinessCheck
from service.ingress import IngressConfig, WebhookDirectory, create_app
from service.messages import VerifiedWebhook
from service.metrics import Metrics
from service.ports import Publisher


@dataclass
class FakePublisher:
    """Records what it is asked to publish; ``mode`` makes the broker away or silent."""

    mode: str = "ok"  # ok | down | silent
    published: list[tuple[VerifiedWebhook, str]] = field(default_factory=list)
    timeouts_s: list[float] = field(default_factory=list)

    async def publish_webhook(
        self, message: VerifiedWebhook, *, message_id: str, timeout_s: float = 2.0
    ) -> None:
        if self.mode == "down":
            raise NetworkError("broker is away")
        self.timeouts_s.append(timeout_s)
        if self.mode == "silent":  # a confirm that never comes: give up after timeout_s, as promised
            try:
                async with asyncio.timeout(timeout_s):
                    await asyncio.Event().wait()
            except TimeoutError:
                raise NetworkError("no confirm in time") from None
        self.published.append((message, message_id))

    async def publish_sync_request(self, *args: Any, **kwargs: Any) -> None:
        raise AssertionError("the ingress never publishes sync requests")


@dataclass
class FakeDirectory:
    """Venues and secrets from dicts; counts secret look-ups."""

    known: set[tuple[str, str]] = field(default_factory=set)
    secrets: dict[tuple[str, str], str] = field(default_factory=dict)
    secret_lookups: int = 0

    async def venue_known(self, venue_id: str, provider: str) -> bool:
        return (venue_id, provider) in self.known

    async def webhook_secret(self, venue_id: str, provider: str, *, refresh: bool = False) -> str | None:
        self.secret_lookups += 1
        return self.secrets.get((venue_id, provider))


@dataclass
class Running:
    """A served ingress: its base URL and what it was built with."""

    url: str
    metrics: Metrics
    config: IngressConfig


@asynccontextmanager
async def serve_ingress(
    *,
    directory: WebhookDirectory,
    publisher: Publisher,
    config: IngressConfig | None = None,
    readiness: Mapping[str, ReadinessCheck] | None = None,
    **config_fields: Any,
) -> AsyncIterator[Running]:
    """Serve an ingress app on a free loopback port whose public URL is its own."""
    port = unused_port()
    url = f"http://127.0.0.1:{port}"
    config = config or IngressConfig(public_url=url, **config_fields)
    metrics = Metrics()
    app: web.Application = create_app(
        config=config,
        directory=directory,
        publisher=publisher,
        metrics=metrics,
        readiness=readiness or {},
    )
    server = TestServer(app, host="127.0.0.1", port=port)
    await server.start_server()
    try:
        yield Running(url, metrics, config)
    finally:
        await server.close()


def received(metrics: Metrics, provider: str, status: int) -> float:
    """The webhooks_received counter for one provider and status."""
    value = metrics.registry.get_sample_value(
        "integration_webhooks_received_total", {"provider": provider, "status": str(status)}
    )
    return value or 0.0


async def drain_published(amqp_url: str, marker: bytes) -> list[tuple[dict[str, Any], bytes, Any]]:
    """Take (and ack) every message on integration.webhook-events whose raw body holds ``marker``.

    Returns (message JSON, decoded webhook body, AMQP message) tuples; other messages are
    handed back untouched (nack with requeue) so other tests' leftovers are not lost.
    """
    found: list[tuple[dict[str, Any], bytes, Any]] = []
    others = []
    connection = await aio_pika.connect(amqp_url, timeout=10)
    async with connection:
        channel = await connection.channel()
        queue = await channel.get_queue(WEBHOOK_QUEUE, ensure=True)
        while (message := await queue.get(no_ack=False, fail=False, timeout=5)) is not None:
            try:
                data = json.loads(message.body)
                raw = base64.b64decode(data["body"])
            except (ValueError, KeyError, TypeError):
                data, raw = {}, b""
            if marker and marker in raw:
                await message.ack()
                found.append((data, raw, message))
            else:
                others.append(message)
        for message in others:
            await message.nack(requeue=True)
    return found
