"""Publishing: the AMQP Publisher (confirms on every publish), the Routes that name where
each message goes, and the outbox relay that publishes committed outbox rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
import uuid
from datetime import timedelta
from typing import Any, cast

import aiormq
import asyncpg
import structlog
from aio_pika.abc import AbstractChannel, DeliveryMode
from aiormq import spec

from consumers import topology
from service.database import outbox as outbox_db
from service.database import relaxed_commit
from service.database.outbox import OutboxMessage, StoredMessage
from service.errors import NetworkError
from service.messages import JobResult, RecordEvent, SyncRequest, VerifiedWebhook, utcnow, without_nul
from service.ports import Delivery

log = structlog.get_logger(__name__)

CONFIRM_TIMEOUT_S = 5.0
# Inline publishes' marks gather this long before the one statement that writes them: far
# inside INLINE_GRACE_S, and one statement for many publishes instead of one for a few.
MARK_WINDOW_S = 0.05
PERSISTENT = int(DeliveryMode.PERSISTENT)
# An inline publish starts only for a row this young; an older one (held up behind a slow
# broker) is left to the relay loop, so a confirm at the end of its wait, and the mark
# after it, still come inside outbox INLINE_GRACE_S, before another relay takes the row.
INLINE_START_MAX_S = outbox_db.INLINE_GRACE_S - CONFIRM_TIMEOUT_S - 5.0


class AmqpPublisher:
    """Publishes persistent JSON messages on one confirm channel; implements ports.Publisher.

    Straight through aiormq's channel, as aio-pika's ``Exchange.publish`` does underneath:
    building an aio-pika ``Message`` (a locked object whose every attribute set is checked)
    and its properties again cost more than the rest of a publish but the frames."""

    def __init__(self, channel: AbstractChannel) -> None:
        self._channel = channel

    async def publish(self, message: OutboxMessage, *, timeout_s: float = CONFIRM_TIMEOUT_S) -> None:
        """Publish and wait for the broker's confirm; raise NetworkError otherwise."""
        properties = spec.Basic.Properties(
            content_type="application/json",
            content_encoding="utf-8",
            delivery_mode=PERSISTENT,
            message_id=message.message_id,
            correlation_id=message.correlation_id,
            reply_to=message.reply_to,
            headers=message.headers or None,  # no empty table to encode
            timestamp=utcnow(),
        )
        try:
            # The wait for a robust channel's reconnect is inside the timeout too.
            async with asyncio.timeout(timeout_s):  # no task per publish, unlike wait_for
                channel = cast(aiormq.Channel, await self._channel.get_underlay_channel())
                if channel.is_closed:  # the broker closed it, and its reopening is under way:
                    # a publish queued now would reach a dead or a reopened channel number
                    raise aiormq.exceptions.ChannelInvalidStateError(f"{channel!r} closed")
                # Not mandatory: nothing here acts on a returned message, and an event nobody
                # has bound a queue for is dropped by design (pub/sub); returns only cost frames.
                # wait=False: the confirm is what is waited for, not also the writer task
                # putting the frame on the socket (holding the channel's lock meanwhile).
                await channel.basic_publish(
                    message.body, exchange=message.exchange, routing_key=message.routing_key,
                    properties=properties, mandatory=False, wait=False,
                )
        except TimeoutError as exc:
            raise NetworkError(f"no publisher confirm within {timeout_s:g}s") from exc
        except asyncio.CancelledError as exc:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task is being cancelled
            # aiormq fails a pending confirm with CancelledError when its connection's reader
            # is cancelled: the broker is away, not this task.
            raise NetworkError(f"publish to {message.exchange or 'default'} failed: connection closed") from exc
        except aiormq.exceptions.DeliveryError as exc:  # aiormq's form of a Basic.Nack
            raise NetworkError("the broker refused the message (nack)") from exc
        except Exception as exc:  # aiormq / connection errors
            raise NetworkError(
                f"publish to {message.exchange or 'default'} failed: {exc.__class__.__name__}"
            ) from exc

    async def publish_webhook(
        self, message: VerifiedWebhook, *, message_id: str, timeout_s: float = 2.0
    ) -> None:
        await self.publish(
            OutboxMessage(
                exchange=topology.WEBHOOKS_EXCHANGE,
                routing_key=topology.webhook_routing_key(message.provider),
                body=message.to_json_bytes(),
                message_id=message_id,
            ),
            timeout_s=timeout_s,
        )

    async def publish_sync_request(
        self,
        request: SyncRequest,
        *,
        message_id: str,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        await self.publish(
            OutboxMessage(
                exchange=topology.COMMANDS_EXCHANGE,
                routing_key=topology.sync_routing_key(request.provider, request.entity),
                body=request.to_json_bytes(),
                message_id=message_id,
                reply_to=reply_to,
                correlation_id=correlation_id,
            ),
            timeout_s=timeout_s,
        )


def _suffix() -> str:
    """What makes one publish's message_id unique beside its job_id: 64 random bits, without
    uuid4's system call (a job's result is published on every message's hot path)."""
    return f"{random.getrandbits(64):016x}"


class MessageRoutes:
    """Implements ports.Routes: the exchange and routing key of every outgoing message."""

    def record_event(self, event: RecordEvent) -> OutboxMessage:
        return OutboxMessage(
            exchange=topology.EVENTS_EXCHANGE,
            routing_key=topology.record_event_routing_key(event.provider, event.entity, event.op),
            body=event.to_json_bytes(),
            message_id=f"event-{event.event_id}",
        )

    def job_result(self, result: JobResult) -> OutboxMessage:
        return OutboxMessage(
            exchange=topology.EVENTS_EXCHANGE,
            routing_key=topology.job_result_routing_key(result.status),
            body=result.to_json_bytes(),
            message_id=f"result-{result.job_id}-{_suffix()}",
        )

    def reply(self, result: JobResult, *, reply_to: str, correlation_id: str | None) -> OutboxMessage:
        return OutboxMessage(
            exchange="",
            routing_key=reply_to,
            body=result.to_json_bytes(),
            message_id=f"reply-{result.job_id}-{_suffix()}",
            correlation_id=correlation_id,
        )

    def retry(self, delivery: Delivery, *, attempt: int, delay_s: float) -> OutboxMessage:
        headers = {k: v for k, v in delivery.headers.items() if not k.startswith("x-")}
        headers.update({"x-retry-attempt": attempt, "x-original-message-id": delivery.message_id or ""})
        return OutboxMessage(
            exchange=delivery.exchange,
            routing_key=delivery.routing_key,
            body=delivery.body,
            message_id=str(uuid.uuid4()),
            headers=_plain(headers),
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
            available_at=utcnow() + timedelta(seconds=delay_s),
        )

    def dead_letter(self, delivery: Delivery, *, reason: str, category: str, severity: str) -> OutboxMessage:
        headers = _plain(dict(delivery.headers))
        headers.update(
            {
                "x-death-reason": reason,
                "x-error-category": category,
                "x-error-severity": severity,
                "x-original-exchange": delivery.exchange,
                "x-original-routing-key": delivery.routing_key,
            }
        )
        return OutboxMessage(
            exchange=topology.DEAD_EXCHANGE,
            routing_key=delivery.routing_key,
            body=delivery.body,
            message_id=f"dead-{delivery.message_id or uuid.uuid4()}-{uuid.uuid4().hex[:8]}",
            headers=headers,
            correlation_id=delivery.correlation_id,
            reply_to=delivery.reply_to,
        )

    def sync_request(self, request: SyncRequest, *, message_id: str) -> OutboxMessage:
        return OutboxMessage(
            exchange=topology.COMMANDS_EXCHANGE,
            routing_key=topology.sync_routing_key(request.provider, request.entity),
            body=request.to_json_bytes(),
            message_id=message_id,
        )


def _plain(headers: dict[str, Any]) -> dict[str, Any]:
    """Headers that survive a JSON round trip through the outbox."""
    out: dict[str, Any] = {}
    for key, value in headers.items():
        if isinstance(value, bytes):
            value = value.decode("utf-8", "replace")
        if isinstance(value, str):
            out[without_nul(key)] = without_nul(value)  # jsonb refuses NUL
        elif isinstance(value, int | float | bool) or value is None:
            out[without_nul(key)] = value
        else:
            out[without_nul(key)] = without_nul(str(value))
    return out


class OutboxRelay:
    """Publishes committed outbox rows: inline right after a commit, and in a polling loop
    that catches what a crash or a broker outage left behind (and due scheduled retries)."""

    def __init__(
        self, pool: asyncpg.Pool, publisher: AmqpPublisher, *, batch: int = 200, metrics: Any = None
    ) -> None:
        self._pool = pool
        self._publisher = publisher
        self._batch = batch
        self._metrics = metrics
        self._gauge_at = 0.0
        self._sent: list[int] = []  # published inline, to be marked in the next batch
        self.wakeup = asyncio.Event()
        self._marks_due = asyncio.Event()  # inline publishes wait to be marked

    async def publish_stored(self, stored: tuple[StoredMessage, ...] | list[StoredMessage]) -> None:
        """Publish these just-committed rows now, from memory (scheduled retries wait for
        the relay loop); their published marks are written in bulk by the relay loop. A
        crash before the mark republishes them: at-least-once, as everywhere."""
        now, young = utcnow(), time.monotonic() - INLINE_START_MAX_S
        due = [item for item in stored if outbox_db.is_due(item, now)]
        late = [item for item in due if item.stored_at < young]
        if late:  # the relay loop publishes them
            due = [item for item in due if item.stored_at >= young]
            log.info("inline_publish_left_to_relay", messages=len(late))
        if due:
            confirmed = await self._publish(due)
            self._sent.extend(confirmed)  # not ``+=``: a flush may have swapped the list meanwhile
            if confirmed:
                self._marks_due.set()

    async def _publish(self, stored: list[outbox_db.StoredMessage]) -> list[int]:
        """Publish with confirms; return the ids that were confirmed."""
        if not stored:
            return []
        results: list[BaseException | None]
        if len(stored) == 1:  # the usual case (a job result): no task for a gather of one
            try:
                await self._publisher.publish(stored[0].message)
                results = [None]
            except Exception as exc:
                results = [exc]
        else:
            results = await asyncio.gather(
                *(self._publisher.publish(item.message) for item in stored), return_exceptions=True
            )
        failures = [r for r in results if isinstance(r, BaseException)]
        if failures:
            log.warning("outbox_publish_failed", failed=len(failures), error=str(failures[0]))
        return [item.id for item, result in zip(stored, results, strict=True) if result is None]

    async def _publish_all(self, conn: asyncpg.Connection, stored: list[outbox_db.StoredMessage]) -> int:
        confirmed = await self._publish(stored)
        await outbox_db.mark_published(conn, confirmed)
        return len(confirmed)

    async def flush_marks(self) -> None:
        """Write the published marks of inline publishes in one statement, committed on
        its own: on the daemon's relaxed pool its commit does not wait for the disk (a lost
        mark only republishes), and a transaction around it would cost three more round
        trips (BEGIN, SET LOCAL, COMMIT) for each flush."""
        sent, self._sent = self._sent, []
        if not sent:
            return
        try:
            await outbox_db.mark_published(self._pool, sent)
        except BaseException:  # cancelled at shutdown too: kept for whoever flushes next
            self._sent = sent + self._sent  # try again next tick
            raise

    async def _observe_backlog(self, every_s: float = 5.0) -> None:
        """Set integration_outbox_pending_messages now and then (a count is not free)."""
        now = asyncio.get_running_loop().time()
        if self._metrics is None or now - self._gauge_at < every_s:
            return
        self._gauge_at = now
        try:
            self._metrics.outbox_pending.set(await outbox_db.pending_count(self._pool))
        except Exception as exc:
            log.warning("outbox_count_failed", error=exc.__class__.__name__)

    async def relay_once(self) -> int:
        """Mark inline publishes, then publish one batch of due rows; return how many the
        broker confirmed."""
        await self.flush_marks()
        async with self._pool.acquire() as conn, conn.transaction():
            await relaxed_commit(conn)
            stored = await outbox_db.claim_due(conn, limit=self._batch)
            return await self._publish_all(conn, stored)

    async def _mark_loop(self, stop: asyncio.Event, interval_s: float) -> None:
        """Write inline publishes' marks as they come, not only between relay batches: a
        batch that takes seconds to publish (a slow broker) left them unmarked past
        INLINE_GRACE_S, for another replica's relay to publish them a second time."""
        while not stop.is_set():
            await self._marks_due.wait()
            await asyncio.sleep(MARK_WINDOW_S)  # the marks of the publishes confirmed meanwhile join
            self._marks_due.clear()
            try:
                await self.flush_marks()
            except Exception as exc:  # kept for the next flush (here or in relay_once)
                log.warning("outbox_marks_failed", error=exc.__class__.__name__)
                await asyncio.sleep(interval_s)
                self._marks_due.set()

    async def run(self, stop: asyncio.Event, *, interval_s: float = 0.25) -> None:
        """Relay until ``stop`` is set; errors are logged and retried, never fatal."""
        marks = asyncio.ensure_future(self._mark_loop(stop, interval_s))
        try:
            await self._relay_loop(stop, interval_s)
        finally:
            marks.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await marks

    async def _relay_loop(self, stop: asyncio.Event, interval_s: float) -> None:
        while not stop.is_set():
            try:
                claimed = await self.relay_once()
            except Exception as exc:
                log.warning("outbox_relay_error", error=f"{exc.__class__.__name__}: {exc}")
                claimed = 0
            await self._observe_backlog()
            if claimed >= self._batch:  # a full batch confirmed: more may be due at once
                continue  # (a batch that failed, with the broker away, waits like an idle one)
            self.wakeup.clear()
            sleep = asyncio.ensure_future(self.wakeup.wait())
            halt = asyncio.ensure_future(stop.wait())
            await asyncio.wait({sleep, halt}, timeout=interval_s, return_when=asyncio.FIRST_COMPLETED)
            sleep.cancel()
            halt.cancel()
