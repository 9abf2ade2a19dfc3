"""Queue consumers: turn AMQP deliveries into Deliveries, hand them to a handler, publish
what the stored outcome names, and only then acknowledge.

A handler that cannot store an outcome (the database is away) raises; the delivery is then
handed back to the broker, never acknowledged, and the consumer pauses: it cancels its
consumer and probes the database with backoff, consuming again once the probe succeeds. So an
outage of any length leaves the messages waiting in the queue instead of spinning their
delivery count up to x-delivery-limit. Messages that crash the process are the broker's to
dead-letter once x-delivery-limit is reached (the backstop).

The acknowledgements of the deliveries done in one loop iteration go out together at its
end, in one frame where they can (consumers/acks.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

import aiormq
import structlog
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, AbstractQueue
from aiormq.abc import DeliveredMessage

from consumers.acks import AckBatcher
from consumers.publishers import OutboxRelay
from service.messages import without_nul
from service.metrics import Metrics
from service.ports import Delivery, Outcome

log = structlog.get_logger(__name__)

Handler = Callable[[Delivery], Awaitable[Outcome]]
Probe = Callable[[], Awaitable[None]]  # raises while the outcome store is away
PUBLISHING_PER_PREFETCH = 4  # acknowledged deliveries still publishing, per prefetch slot
INFRA_BACKOFF_S = (0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0)
REPAUSE_WINDOW_S = 60.0  # a pause this soon after the last resume keeps that pause's backoff


def to_delivery(message: AbstractIncomingMessage) -> Delivery:
    """The delivery as the engine sees it; its text properties without NUL characters, which
    PostgreSQL cannot store (a message_id holding one would fail every outcome it is part of,
    its dead letter included, and go round until the broker's delivery limit)."""
    return Delivery(
        body=message.body,
        exchange=without_nul(message.exchange or ""),
        routing_key=without_nul(message.routing_key or ""),
        message_id=_text(message.message_id),
        reply_to=_text(message.reply_to),
        correlation_id=_text(message.correlation_id),
        headers=dict(message.headers or {}),
        redelivered=bool(message.redelivered),
    )


def delivery_of(message: DeliveredMessage) -> Delivery:
    """``to_delivery`` of a delivery as aiormq hands it over, without an aio-pika
    IncomingMessage (whose construction cost more than the rest of taking a delivery)."""
    properties = message.header.properties
    return Delivery(
        body=message.body,
        exchange=without_nul(message.exchange or ""),
        routing_key=without_nul(message.routing_key or ""),
        message_id=_text(properties.message_id or None),  # aio-pika reads "" as absent
        reply_to=_text(properties.reply_to or None),
        correlation_id=_text(properties.correlation_id or None),
        headers=dict(properties.headers or {}),
        redelivered=bool(message.redelivered),
    )


def _text(value: str | None) -> str | None:
    return None if value is None else without_nul(value)


@dataclass(frozen=True, slots=True)
class Received:
    """One delivery, whichever way it came in: what the engine sees, and what acks it."""

    delivery: Delivery
    channel: aiormq.abc.AbstractChannel
    tag: int
    published: datetime | None  # the AMQP timestamp property


class QueueConsumer:
    """Consumes one queue with bounded prefetch; acks only after the outcome is stored."""

    def __init__(
        self,
        channel: AbstractChannel,
        queue_name: str,
        handler: Handler,
        *,
        relay: OutboxRelay,
        metrics: Metrics,
        probe: Probe,
        prefetch: int = 16,
    ) -> None:
        self._channel = channel
        self.queue_name = queue_name
        self._handler = handler
        self._relay = relay
        self._metrics = metrics
        self._prefetch = prefetch
        self._queue: AbstractQueue | None = None
        self._tag: str | None = None
        self._in_flight: set[asyncio.Task[Any]] = set()
        self._acks: dict[aiormq.abc.AbstractChannel, AckBatcher] = {}  # a reconnect brings a new channel
        # Acknowledged deliveries whose messages are still being published: bounded, so a
        # broker slow to confirm slows consumption down instead of growing our memory.
        self._publishing = asyncio.Semaphore(PUBLISHING_PER_PREFETCH * prefetch)
        self._probe = probe
        self._paused: asyncio.Task[None] | None = None  # probing the store before consuming again
        self._resumed: tuple[float, int] = (-math.inf, 0)  # (when the last pause ended, its probes)
        self._stopping = False
        self.idle = asyncio.Event()
        self.idle.set()

    async def check_consuming(self, *, timeout_s: float = 1.0) -> None:
        """Raise unless the broker side of our channel holds our consumer now: after a
        reconnect only a restored consumer gets deliveries, so this is what ready means."""
        if self._paused is not None:
            raise RuntimeError(f"consuming {self.queue_name} paused: outcomes cannot be stored")
        if self._tag is None:
            raise RuntimeError(f"not consuming {self.queue_name}")
        async with asyncio.timeout(timeout_s):  # a robust channel waits while reconnecting
            underlay = cast(aiormq.Channel, await self._channel.get_underlay_channel())
        if self._tag not in underlay.consumers:
            raise RuntimeError(f"consumer of {self.queue_name} not restored")

    async def start(self) -> None:
        await self._channel.set_qos(prefetch_count=self._prefetch)
        # A passive declare, not get_queue(ensure=False): only a declared queue is registered
        # with the robust channel, and only a registered queue gets its consumer back after a
        # reconnect (aio-pika 10 restores nothing else).
        self._queue = await self._channel.declare_queue(self.queue_name, passive=True)
        await self._attach()

    async def _attach(self) -> None:
        assert self._queue is not None
        # Through the queue, so the robust channel restores the consumer after a reconnect;
        # then straight from aiormq (see _on_delivered), on this channel and on every
        # channel a reconnect restores it to (the first delivery there switches it).
        self._tag = await self._queue.consume(self._on_message, no_ack=False)
        # Best effort: the consumer is attached now, and a failure here must not make the
        # caller attach a second one (the first delivery through aio-pika switches it anyway).
        with contextlib.suppress(Exception):
            async with asyncio.timeout(1.0):  # a robust channel waits while reconnecting
                self._take_deliveries_raw(await self._channel.get_underlay_channel())
        self._metrics.consumers_attached.labels(queue=self.queue_name).set(1)
        log.info("consumer_attached", queue=self.queue_name, prefetch=self._prefetch)

    def _take_deliveries_raw(self, channel: aiormq.abc.AbstractChannel) -> None:
        """Have aiormq call _on_delivered for our consumer tag instead of aio-pika's wrapper,
        which builds an IncomingMessage and runs the callback in a second task."""
        consumers = cast(aiormq.Channel, channel).consumers
        if self._tag is not None and self._tag in consumers:
            consumers[self._tag] = self._on_delivered

    async def stop_consuming(self) -> None:
        """Take no new deliveries; those in flight go on."""
        self._stopping = True
        if self._paused is not None:
            self._paused.cancel()
        await self._detach()

    async def _detach(self) -> None:
        if self._queue is not None and self._tag is not None:
            try:
                await asyncio.wait_for(self._queue.cancel(self._tag), timeout=5)
            except Exception as exc:
                log.warning("consumer_cancel_failed", queue=self.queue_name, error=str(exc))
        self._tag = None
        self._metrics.consumers_attached.labels(queue=self.queue_name).set(0)

    def _pause(self) -> None:
        """Stop taking deliveries until the probe passes (once, however many fail at once)."""
        if self._paused is not None or self._stopping:
            return
        # A fresh context: the failed delivery's log bindings (its job_id) are not the pause's.
        self._paused = asyncio.create_task(
            self._recover(), name=f"recover-{self.queue_name}", context=contextvars.Context()
        )

    async def _recover(self) -> None:
        """Probe with backoff until the database answers and the broker takes the consumer
        again (a consume refused, say by a channel closing meanwhile, is tried again too:
        given up, nothing would ever pause or resume this consumer again)."""
        await self._detach()
        log.warning("consumer_paused", queue=self.queue_name)
        # Paused again soon after resuming (a database that answers a probe but cannot take
        # an outcome, say a read-only failover): carry on from the last pause's backoff
        # instead of cycling every half second.
        resumed_at, probes = self._resumed
        failures = probes if time.monotonic() - resumed_at < REPAUSE_WINDOW_S else 0
        try:
            while not self._stopping:
                await asyncio.sleep(INFRA_BACKOFF_S[min(failures, len(INFRA_BACKOFF_S) - 1)])
                try:
                    await self._probe()
                    await self._attach()
                except Exception as exc:
                    failures += 1
                    log.warning("consumer_still_paused", queue=self.queue_name, error=str(exc), probes=failures)
                    continue
                log.info("consumer_resumed", queue=self.queue_name, probes=failures + 1)
                self._resumed = (time.monotonic(), failures + 1)
                return
        finally:
            self._paused = None

    async def drain(self, grace_s: float) -> int:
        """Wait up to grace_s for in-flight deliveries; cancel the rest (the broker
        redelivers them). Return how many were cancelled, once the acks of those that
        finished are sent (the channel is closed next)."""
        still: set[asyncio.Task[Any]] = set()
        pending = set(self._in_flight)
        if pending:
            _, still = await asyncio.wait(pending, timeout=grace_s)
            for task in still:
                task.cancel()
            if still:
                await asyncio.gather(*still, return_exceptions=True)
        await self.flush_acks()
        return len(still)

    async def flush_acks(self) -> None:
        """Send the acks waiting for the end of this loop iteration now."""
        for acks in list(self._acks.values()):
            await acks.flush()

    def _acks_for(self, channel: aiormq.abc.AbstractChannel) -> AckBatcher:
        acks = self._acks.get(channel)
        if acks is None:  # a new channel: the closed ones' deliveries are the broker's again
            self._acks = {c: a for c, a in self._acks.items() if not c.is_closed}
            acks = self._acks[channel] = AckBatcher(channel)
        return acks

    async def _on_message(self, message: AbstractIncomingMessage) -> None:
        """A delivery through aio-pika: the first on a channel a reconnect restored our
        consumer to. The rest on that channel come straight to _on_delivered."""
        self._take_deliveries_raw(message.channel)
        assert message.delivery_tag is not None  # consumed with no_ack=False
        await self._on_received(
            Received(to_delivery(message), message.channel, message.delivery_tag, message.timestamp))

    async def _on_delivered(self, message: DeliveredMessage) -> None:
        """A delivery straight from aiormq, in the task aiormq runs it in."""
        assert message.delivery_tag is not None  # a Basic.Deliver always has one
        await self._on_received(
            Received(delivery_of(message), message.channel, message.delivery_tag,
                     message.header.properties.timestamp))

    async def _on_received(self, received: Received) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._in_flight.add(task)
        self.idle.clear()
        try:
            await self._process(received)
        finally:
            self._in_flight.discard(task)
            if not self._in_flight:
                self.idle.set()

    async def _process(self, message: Received) -> None:
        self._observe_age(message.published)
        try:
            outcome = await self._handler(message.delivery)
        except asyncio.CancelledError:
            await self._hand_back(message)
            raise
        except Exception as exc:
            await self._infra_failure(message, exc)
            return
        # The outcome and the messages announcing it are committed: acknowledge first, so the
        # prefetch slot is free while the broker confirms our publishes (the relay loop
        # publishes whatever this process does not live to publish). A dead letter keeps
        # the contract's order: stored, published to integration.dead, then acknowledged.
        ack_first = outcome.kind != "dead_lettered"
        async with self._publishing:
            if ack_first:
                self._ack(message, outcome)
            try:
                await self._relay.publish_stored(outcome.outbox)
            except Exception as exc:  # committed: the relay loop publishes it later
                log.warning("inline_publish_failed", error=f"{exc.__class__.__name__}: {exc}")
            if not ack_first:
                self._ack(message, outcome)

    def _ack(self, message: Received, outcome: Outcome) -> None:
        # Sent at the end of this loop iteration with the others done in it, straight to the
        # channel the delivery came on and without waiting for the writer task to put the
        # frame on the socket: an ack that a dying connection (or process) loses is a
        # redelivery, which finds the job finished.
        self._acks_for(message.channel).done(message.tag)
        self._metrics.child(self._metrics.messages_consumed, self.queue_name, _metric_outcome(outcome)).inc()

    def _observe_age(self, published: datetime | None) -> None:
        if published is None:
            return
        if published.tzinfo is None:
            published = published.replace(tzinfo=UTC)
        age = (datetime.now(UTC) - published).total_seconds()
        self._metrics.child(self._metrics.message_age, self.queue_name).observe(max(0.0, age))

    async def poll_depth(self, stop: asyncio.Event, *, every_s: float = 15.0) -> None:
        """Keep integration_queue_depth_messages current (a passive declare is cheap). The
        declare goes to the broker each time: the robust channel's ``declare_queue`` hands a
        passively declared queue back from its cache, with the count of its first declare."""
        while not stop.is_set():
            try:
                queue = self._queue or await self._channel.declare_queue(self.queue_name, passive=True)
                ready = (await queue.declare(timeout=5)).message_count
                self._metrics.queue_depth.labels(queue=self.queue_name).set(ready or 0)
            except Exception as exc:
                log.warning("queue_depth_failed", queue=self.queue_name, error=exc.__class__.__name__)
            try:
                await asyncio.wait_for(stop.wait(), timeout=every_s)
            except TimeoutError:
                pass

    async def _infra_failure(self, message: Received, exc: Exception) -> None:
        log.error("outcome_not_stored", queue=self.queue_name, error=f"{exc.__class__.__name__}: {exc}")
        self._pause()
        await self._hand_back(message)
        self._metrics.messages_consumed.labels(queue=self.queue_name, outcome="requeued").inc()

    async def _hand_back(self, message: Received) -> None:
        await self._acks_for(message.channel).hand_back(message.tag)


def _metric_outcome(outcome: Outcome) -> str:
    if outcome.kind == "done":
        return outcome.status or "succeeded"
    return {"duplicate": "duplicate", "retry": "retried", "dead_lettered": "dead_lettered"}[outcome.kind]
