"""An in-process daemon for integration tests: real RabbitMQ and PostgreSQL, a fake provider.

It wires the same engine, consumers and outbox relay as `integration-service run`, with
an in-memory provider client in place of the HTTP ones, and a probe queue bound to
integration.events and integration.dead so tests can read what was published.
"""

from __future__ import annotations

import asyncio
import functools
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from consumers.consumer import QueueConsumer
from consumers.publishers import AmqpPublisher, MessageRoutes, OutboxRelay
from consumers.topology import DEAD_EXCHANGE, EVENTS_EXCHANGE, SYNC_QUEUE, WEBHOOK_QUEUE, declare_topology
from providers.base import Page, ParsedWebhook, ProviderRecord, PushItem, PushResult, WebhookChange
from service.config import Settings
from service.database import create_pool, ping
from service.database.job_locks import JobLocks
from service.database.outbox import OutboxMessage
from service.engine import Engine, EngineDeps
from service.errors import IntegrationError, NetworkError, ValidationError
from service.messages import SyncRequest, VerifiedWebhook
from service.metrics import Metrics
from service.vault import Vault, key_provider_from_settings
from service.webhook_processing import WebhookProcessor


@dataclass
class FakeAuth:
    venue_id: str
    provider: str
    account_id: str = "acct-1"
    test_mode: bool = True

    async def headers(self) -> dict[str, str]:
        return {}

    async def on_unauthorized(self) -> bool:
        return False

    def value(self, name: str) -> str | None:
        return None


@dataclass
class FakeProvider:
    """An in-memory provider: records pushed writes, serves pages, fails on demand."""

    name: str = "stripe"
    size: int = 10
    objects: dict[str, dict[str, Any]] = field(default_factory=dict)  # external id → provider object
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key → external id
    calls: list[tuple[str, str]] = field(default_factory=list)  # (operation, idempotency key)
    transient_failures: int = 0  # next N calls raise NetworkError
    failing_records: set[str] = field(default_factory=set)  # record ids that fail (validation)
    page_size: int = 2

    def batch_size(self, entity: str) -> int:
        return self.size

    def _maybe_fail(self) -> None:
        if self.transient_failures > 0:
            self.transient_failures -= 1
            raise NetworkError("connection reset by fake provider")

    async def push_batch(
        self, auth: Any, entity: str, items: list[PushItem], *, options: dict[str, Any]
    ) -> list[PushResult]:
        self._maybe_fail()
        results = []
        for item in items:
            self.calls.append(("push", item.idempotency_key))
            if item.record_id in self.failing_records:
                results.append(
                    PushResult(item.record_id, "failed", error=ValidationError("email is invalid"))
                )
                continue
            external_id = (
                self.keys.get(item.idempotency_key) or item.external_id or f"cus_{len(self.objects) + 1}"
            )
            created = external_id not in self.objects
            self.keys[item.idempotency_key] = external_id
            self.objects[external_id] = {"id": external_id, **item.payload, "updated": _now_s()}
            results.append(
                PushResult(
                    item.record_id,
                    "created" if created else "updated",
                    external_id,
                    data=self.objects[external_id],
                )
            )
        return results

    async def pull_page(
        self,
        auth: Any,
        entity: str,
        *,
        cursor: dict[str, Any] | None,
        resume: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> Page:
        self._maybe_fail()
        since = (resume or {}).get("since", 0)
        ordered = sorted(
            (o for o in self.objects.values() if o["updated"] > since), key=lambda o: (o["updated"], o["id"])
        )
        start = (cursor or {}).get("offset", 0)
        chunk = ordered[start : start + self.page_size]
        self.calls.append(("pull", str(start)))
        records = [
            ProviderRecord(
                o["id"],
                dict(o),
                version=str(o["updated"]),
                updated_at=datetime.fromtimestamp(o["updated"], UTC),
            )
            for o in chunk
        ]
        more = start + self.page_size < len(ordered)
        last = chunk[-1]["updated"] if chunk else since
        return Page(
            records,
            {"offset": start + self.page_size} if more else None,
            resume_cursor={"since": last} if not more else None,
        )

    async def fetch_record(self, auth: Any, entity: str, external_id: str) -> ProviderRecord | None:
        self._maybe_fail()
        obj = self.objects.get(external_id)
        return None if obj is None else ProviderRecord(external_id, dict(obj), version=str(obj["updated"]))

    def parse_webhook(self, webhook: VerifiedWebhook, body: bytes) -> ParsedWebhook:
        from service.errors import DataError

        try:
            event = json.loads(body)
            obj = event["data"]["object"]
        except (ValueError, KeyError, TypeError):
            raise DataError("webhook body is not a Stripe event") from None
        record = ProviderRecord(
            obj["id"],
            obj,
            version=str(event.get("created")),
            updated_at=datetime.fromtimestamp(event.get("created", 0), UTC),
        )
        thin = event.get("thin", False)  # the object must then be fetched (fetch_record)
        change = WebhookChange("customers", obj["id"], "upserted", event["id"], record=None if thin else record)
        return ParsedWebhook(event["id"], [change])

    async def check_health(self) -> None:
        return None


_tick = [1_700_000_000.0]


def _now_s() -> float:
    _tick[0] += 1
    return _tick[0]


@dataclass
class Harness:
    settings: Settings
    pool: Any
    vault: Vault
    connection: Any
    publisher: AmqpPublisher
    provider: FakeProvider
    probe: asyncio.Queue[AbstractIncomingMessage]
    metrics: Metrics
    consumers: list[QueueConsumer]

    async def credential(self, venue_id: str, provider: str = "stripe") -> None:
        await self.vault.set(venue_id, provider, "api_key", f"sk_test_{uuid.uuid4().hex}")

    async def publish(
        self,
        body: bytes | dict[str, Any],
        routing_key: str,
        *,
        reply_to: str | None = None,
        exchange: str = "integration.commands",
        message_id: str | None = None,
    ) -> None:
        raw = body if isinstance(body, bytes) else json.dumps(body).encode()
        await self.publisher.publish(
            OutboxMessage(
                exchange=exchange,
                routing_key=routing_key,
                body=raw,
                message_id=message_id or str(uuid.uuid4()),
                reply_to=reply_to,
            )
        )

    async def request(self, request: SyncRequest, **kwargs: Any) -> None:
        await self.publish(request.to_json_bytes(), f"sync.{request.provider}.{request.entity}", **kwargs)

    async def job(self, job_id: str) -> Any:
        return await self.pool.fetchrow("SELECT * FROM sync_jobs WHERE job_id = $1", job_id)

    async def finished(self, job_id: str) -> Any:
        row = await self.job(job_id)
        return row if row is not None and row["status"] in ("succeeded", "partial", "failed") else None

    async def probed(self, predicate: Any, *, timeout: float = 10.0) -> AbstractIncomingMessage:
        """The next probe message matching ``predicate`` (others are dropped)."""
        async with asyncio.timeout(timeout):
            while True:
                message = await self.probe.get()
                if predicate(message):
                    return message


@asynccontextmanager
async def running_daemon(
    settings: Settings, *, name: str, provider: FakeProvider | None = None
) -> AsyncIterator[Harness]:
    """Start consumers, relay and a probe queue on this run's vhost; stop them on exit."""
    provider = provider or FakeProvider()
    metrics = Metrics()
    async with AsyncExitStack() as stack:
        pool = await create_pool(settings.database_url.get_secret_value(), min_size=1, max_size=10)
        stack.push_async_callback(pool.close)
        vault = Vault(pool, key_provider_from_settings(settings))
        connection = await aio_pika.connect_robust(
            settings.amqp_url.get_secret_value(), client_properties={"connection_name": name}
        )
        stack.push_async_callback(connection.close)
        channel = await connection.channel(publisher_confirms=True)
        await declare_topology(channel)
        await _purge(channel)
        publisher = AmqpPublisher(channel)
        relay = OutboxRelay(pool, publisher)
        job_locks = JobLocks(settings.database_url.get_secret_value())
        stack.push_async_callback(job_locks.close)
        deps = EngineDeps(
            settings=settings,
            pool=pool,
            clients={"stripe": provider},  # type: ignore[dict-item]
            auth_for=_auth,
            routes=MessageRoutes(),
            metrics=metrics,
            announce=relay.publish_stored,
            job_locks=job_locks,
        )
        engine = Engine(deps)
        webhooks = WebhookProcessor(deps, engine)
        probe: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()
        probe_channel = await connection.channel()
        probe_queue = await probe_channel.declare_queue(exclusive=True, auto_delete=True)
        await probe_queue.bind(EVENTS_EXCHANGE, "#")
        await probe_queue.bind(DEAD_EXCHANGE, "#")
        await probe_queue.consume(functools.partial(_probe, probe))
        stop = asyncio.Event()
        relay_task = asyncio.create_task(relay.run(stop, interval_s=0.05))
        stack.push_async_callback(lambda: relay_task)
        stack.callback(stop.set)
        consumers: list[QueueConsumer] = []
        for queue, handler in ((SYNC_QUEUE, engine.handle_sync), (WEBHOOK_QUEUE, webhooks.handle)):
            consumer = QueueConsumer(
                await connection.channel(), queue, handler, relay=relay, metrics=metrics,
                probe=functools.partial(ping, pool),
            )
            await consumer.start()
            stack.push_async_callback(consumer.drain, 5)
            stack.push_async_callback(consumer.stop_consuming)
            consumers.append(consumer)
        yield Harness(settings, pool, vault, connection, publisher, provider, probe, metrics, consumers)


async def _auth(venue: str, provider: str) -> FakeAuth:
    return FakeAuth(venue, provider)


async def _probe(queue: asyncio.Queue[AbstractIncomingMessage], message: AbstractIncomingMessage) -> None:
    await message.ack()
    await queue.put(message)


async def _purge(channel: Any) -> None:
    for name in (SYNC_QUEUE, WEBHOOK_QUEUE, "integration.dead-letters"):
        queue = await channel.get_queue(name, ensure=False)
        await queue.purge()


def body_of(message: AbstractIncomingMessage) -> dict[str, Any]:
    value: dict[str, Any] = json.loads(message.body)
    return value


__all__ = ["FakeProvider", "Harness", "IntegrationError", "running_daemon", "body_of"]
