"""Interfaces the engine, ingress and CLI depend on; consumers/ and database/ implement them.

They keep AMQP (exchange names, channels, confirms) out of the engine and the ingress:
lifecycle passes the real implementation in, tests pass fakes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from service.database.outbox import OutboxMessage, StoredMessage
from service.messages import JobResult, RecordEvent, SyncRequest, VerifiedWebhook


class Publisher(Protocol):
    """Publishes with publisher confirms; raises NetworkError when the broker is away or
    no confirm arrives within ``timeout_s``."""

    async def publish_webhook(
        self, message: VerifiedWebhook, *, message_id: str, timeout_s: float = 2.0
    ) -> None:
        """Publish a verified webhook to integration.webhooks as webhook.<provider>."""
        ...

    async def publish_sync_request(
        self,
        request: SyncRequest,
        *,
        message_id: str,
        reply_to: str | None = None,
        correlation_id: str | None = None,
        timeout_s: float = 5.0,
    ) -> None:
        """Publish a sync request to integration.commands as sync.<provider>.<entity>."""
        ...


class Routes(Protocol):
    """Where each kind of message goes: built by consumers/ (which owns exchange names),
    used by the engine to write outbox rows without knowing AMQP."""

    def record_event(self, event: RecordEvent) -> OutboxMessage: ...

    def job_result(self, result: JobResult) -> OutboxMessage: ...

    def reply(self, result: JobResult, *, reply_to: str, correlation_id: str | None) -> OutboxMessage: ...

    def retry(self, delivery: Delivery, *, attempt: int, delay_s: float) -> OutboxMessage: ...

    def dead_letter(
        self, delivery: Delivery, *, reason: str, category: str, severity: str
    ) -> OutboxMessage: ...

    def sync_request(self, request: SyncRequest, *, message_id: str) -> OutboxMessage: ...


@dataclass(frozen=True, slots=True)
class Delivery:
    """What the engine knows of one consumed message: no AMQP types past the consumer."""

    body: bytes
    exchange: str
    routing_key: str
    message_id: str | None = None
    reply_to: str | None = None
    correlation_id: str | None = None
    headers: dict[str, Any] = field(default_factory=dict)
    redelivered: bool = False


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a message ended: what to publish (already committed to the outbox) before the ack."""

    kind: Literal["done", "duplicate", "retry", "dead_lettered"]
    status: str | None = None  # the job status, or the webhook result, for metrics
    outbox: tuple[StoredMessage, ...] = ()  # committed rows to publish before the ack
    category: str | None = None
