"""The RabbitMQ topology of CONTRACT section 3: the one home of exchange and queue names."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import aio_pika
from aio_pika.abc import AbstractChannel, ExchangeType

COMMANDS_EXCHANGE = "integration.commands"
WEBHOOKS_EXCHANGE = "integration.webhooks"
EVENTS_EXCHANGE = "integration.events"
DEAD_EXCHANGE = "integration.dead"

SYNC_QUEUE = "integration.sync-requests"
WEBHOOK_QUEUE = "integration.webhook-events"
DEAD_QUEUE = "integration.dead-letters"

EXCHANGES: tuple[str, ...] = (COMMANDS_EXCHANGE, WEBHOOKS_EXCHANGE, EVENTS_EXCHANGE, DEAD_EXCHANGE)

WORK_QUEUE_ARGUMENTS: dict[str, Any] = {
    "x-queue-type": "quorum",
    "x-delivery-limit": 20,
    "x-dead-letter-exchange": DEAD_EXCHANGE,
    "x-dead-letter-strategy": "at-least-once",
    "x-overflow": "reject-publish",
}
DEAD_QUEUE_ARGUMENTS: dict[str, Any] = {"x-queue-type": "quorum"}


@dataclass(frozen=True)
class QueueSpec:
    name: str
    exchange: str
    binding_key: str
    arguments: dict[str, Any] = field(default_factory=dict)


QUEUES: tuple[QueueSpec, ...] = (
    QueueSpec(SYNC_QUEUE, COMMANDS_EXCHANGE, "sync.#", WORK_QUEUE_ARGUMENTS),
    QueueSpec(WEBHOOK_QUEUE, WEBHOOKS_EXCHANGE, "webhook.#", WORK_QUEUE_ARGUMENTS),
    QueueSpec(DEAD_QUEUE, DEAD_EXCHANGE, "#", DEAD_QUEUE_ARGUMENTS),
)


def sync_routing_key(provider: str, entity: str) -> str:
    return f"sync.{provider}.{entity}"


def webhook_routing_key(provider: str) -> str:
    return f"webhook.{provider}"


def record_event_routing_key(provider: str, entity: str, op: str) -> str:
    return f"{provider}.{entity}.{op}"


def job_result_routing_key(status: str) -> str:
    return f"job.{status}"


async def declare_topology(channel: AbstractChannel) -> None:
    """Declare every exchange, queue and binding with exactly the contract's arguments."""
    exchanges = {}
    for name in EXCHANGES:
        exchanges[name] = await channel.declare_exchange(name, ExchangeType.TOPIC, durable=True)
    for spec in QUEUES:
        queue = await channel.declare_queue(spec.name, durable=True, arguments=spec.arguments)
        await queue.bind(exchanges[spec.exchange], routing_key=spec.binding_key)


async def declare_on(amqp_url: str, *, timeout_s: float = 15.0) -> None:
    """Connect, declare the topology, close."""
    connection = await aio_pika.connect(amqp_url, timeout=timeout_s)
    async with connection:
        channel = await connection.channel()
        await declare_topology(channel)
