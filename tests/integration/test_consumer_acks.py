"""Coalesced acknowledgements on the real RabbitMQ (a quorum queue, as in production): the
deliveries finishing together are settled by one multiple ack, and a delivery still running
when the others finish is left to the broker to redeliver."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aio_pika
import aiormq
import pytest

from consumers.consumer import QueueConsumer
from service.config import Settings
from service.metrics import Metrics
from service.ports import Delivery, Outcome
from tests.helpers import eventually


class Relay:
    """Nothing to publish: the outcomes name no messages."""

    async def publish_stored(self, stored: Any) -> None:
        return None


class Handler:
    """Each delivery waits for ``finish``; those named in ``held`` until the end of the test."""

    def __init__(self, held: frozenset[str] = frozenset()) -> None:
        self.held = held
        self.started: list[str] = []
        self.finish = asyncio.Event()
        self._never = asyncio.Event()

    async def __call__(self, delivery: Delivery) -> Outcome:
        assert delivery.message_id is not None
        self.started.append(delivery.message_id)
        await (self._never if delivery.message_id in self.held else self.finish).wait()
        return Outcome("done", "succeeded")


@pytest.fixture
async def connection(settings: Settings) -> AsyncIterator[Any]:
    opened = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def queue(connection: Any) -> AsyncIterator[Any]:
    channel = await connection.channel(publisher_confirms=True)
    name = f"acks-{uuid.uuid4().hex[:10]}"
    declared = await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    try:
        yield declared
    finally:
        await channel.queue_delete(name)


@pytest.fixture
def acks_sent(monkeypatch: pytest.MonkeyPatch) -> dict[Any, list[tuple[int, bool]]]:
    """The Basic.Ack frames each aiormq channel sends: (delivery tag, multiple)."""
    sent: dict[Any, list[tuple[int, bool]]] = {}
    basic_ack = aiormq.Channel.basic_ack

    async def recording(self: Any, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        await basic_ack(self, delivery_tag, multiple, wait)
        sent.setdefault(self, []).append((delivery_tag, multiple))

    monkeypatch.setattr(aiormq.Channel, "basic_ack", recording)
    return sent


async def publish(queue: Any, *message_ids: str) -> None:
    for message_id in message_ids:
        message = aio_pika.Message(message_id.encode(), message_id=message_id)
        await queue.channel.default_exchange.publish(message, routing_key=queue.name)


async def consuming(settings: Settings, queue: Any, handler: Handler) -> tuple[Any, QueueConsumer]:
    """A consumer on a connection of its own (to cut while a delivery is in flight)."""
    connection = await aio_pika.connect_robust(settings.amqp_url.get_secret_value())
    consumer = QueueConsumer(
        await connection.channel(), queue.name, handler, relay=Relay(),  # type: ignore[arg-type]
        metrics=Metrics(), probe=_nothing,
    )
    await consumer.start()
    return connection, consumer


async def _nothing() -> None:
    return None


async def left_in(queue: Any) -> list[Any]:
    """What the queue holds once the consumer's connection is closed. A marker published
    after the close comes to the queue after anything the close handed back."""
    marker = f"marker-{uuid.uuid4().hex}"
    await publish(queue, marker)
    found: list[Any] = []
    async with asyncio.timeout(10):
        while marker not in [m.message_id for m in found]:
            message = await queue.get(no_ack=True, fail=False)
            if message is None:
                await asyncio.sleep(0.05)
            else:
                found.append(message)
    while (message := await queue.get(no_ack=True, fail=False)) is not None:
        found.append(message)
    return [m for m in found if m.message_id != marker]


async def test_deliveries_finishing_together_are_settled_by_one_multiple_ack(
    settings: Settings, queue: Any, acks_sent: dict[Any, list[tuple[int, bool]]]
) -> None:
    """Five deliveries finish in one loop iteration: one Basic.Ack settles them, and once
    the consumer's connection is closed the queue is empty (nothing redelivered)."""
    ids = [f"m{i}" for i in range(1, 6)]
    await publish(queue, *ids)
    handler = Handler()
    connection, consumer = await consuming(settings, queue, handler)
    try:
        await eventually(lambda: len(handler.started) == 5, what="five deliveries in flight")
        handler.finish.set()
        await eventually(lambda: consumer.idle.is_set(), what="the deliveries done")
        await consumer.drain(5)
        underlay = await consumer._channel.get_underlay_channel()
    finally:
        await consumer.stop_consuming()
        await connection.close()
    assert [] == await left_in(queue)
    assert [(5, True)] == acks_sent[underlay]


async def test_a_delivery_still_running_is_not_settled_by_the_others_multiple_ack(
    settings: Settings, queue: Any, acks_sent: dict[Any, list[tuple[int, bool]]]
) -> None:
    """m3 is still running when the others finish: 1 and 2 share a multiple ack, 4 and 5 go
    alone, and m3, its connection closed in flight, comes back redelivered (alone)."""
    ids = [f"m{i}" for i in range(1, 6)]
    await publish(queue, *ids)
    handler = Handler(held=frozenset({"m3"}))
    connection, consumer = await consuming(settings, queue, handler)
    try:
        await eventually(lambda: len(handler.started) == 5, what="five deliveries in flight")
        assert ids == handler.started  # so m3 has delivery tag 3
        handler.finish.set()
        await eventually(lambda: len(consumer._in_flight) == 1, what="all but m3 done")
        await consumer.flush_acks()
        underlay = await consumer._channel.get_underlay_channel()
    finally:
        await consumer.stop_consuming()
        await connection.close()  # m3 in flight
    left = await left_in(queue)
    assert [("m3", True)] == [(m.message_id, m.redelivered) for m in left]
    assert [(2, True), (4, False), (5, False)] == acks_sent[underlay]
