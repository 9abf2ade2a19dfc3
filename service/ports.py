"""Interfaces the engine, ingress and CLI depend on; consumers/ and database/ implement them.

They keep AMQP (exchange names, channels, confirms) out of the engine and the ingress:
lifecycle passes the real implementation in, tests pass fakes.
"""

from __future__ import annotations

from typing import Protocol

from service.messages import SyncRequest, VerifiedWebhook


class Publisher(Protocol):
    """Publishes with publisher confirms; raises NetworkError when the broker is away or
    no confirm arrives within ``timeout_s``."""

    async def publish_webhook(
        self, message: VerifiedWebhook, *, message_id: str, timeout_s: float = 2.0
    ) -> None:
        """Publish a verified webhook to integration.webhooks as webhook.<provider>."""
        ...

    async def publish_sync_request(
        self, request: SyncRequest, *, message_id: str, reply_to: str | None = None,
        correlation_id: str | None = None, timeout_s: float = 5.0,
    ) -> None:
        """Publish a sync request to integration.commands as sync.<provider>.<entity>."""
        ...
