"""Turning verified webhooks into record events (the daemon side of issue 7).

Per change: dedupe on (provider, event id) with a unique row, fetch the record through the
provider client when the payload is thin, map it to the platform shape, ignore it when what
we already know is newer (out-of-order delivery), and publish one record event through the
outbox. The dedupe row, the record state and the event are committed together, so the same
event delivered twice, or to two processes, yields one record event.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

import structlog
from pydantic import ValidationError as PydanticValidationError

from providers.base import ParsedWebhook, ProviderRecord, WebhookChange
from service.database import INFRASTRUCTURE_ERRORS
from service.database import credentials as credentials_db
from service.database import jobs as jobs_db
from service.database import outbox as outbox_db
from service.engine import Engine, EngineDeps
from service.errors import (
    ConfigurationError,
    DataError,
    IntegrationError,
    UnknownEntityError,
    ValidationError,
    classify,
)
from service.logs import bind_message_context
from service.messages import (
    RecordEvent,
    VerifiedWebhook,
    first_error_line,
    parse_json_object,
    record_event_id,
    utcnow,
)
from service.ports import Delivery, Outcome
from service.sync import content_hash, platform_id_of

log = structlog.get_logger(__name__)

DEDUPE_RETENTION_S = 4 * 24 * 3600  # longer than Stripe's 3-day retry horizon


class WebhookProcessor:
    """Handles one integration.webhook.v1 delivery to one stored outcome."""

    def __init__(self, deps: EngineDeps, engine: Engine) -> None:
        self._d = deps
        self._engine = engine

    async def handle(self, delivery: Delivery) -> Outcome:
        try:
            webhook, body = self._parse(delivery)
        except IntegrationError as exc:
            return await self._engine.dead_letter(delivery, exc, raw=None)
        bind_message_context(
            message_id=delivery.message_id, provider=webhook.provider, venue_id=webhook.venue_id
        )
        try:
            parsed = self._d.clients[webhook.provider].parse_webhook(webhook, body)
            venue_id = await self._venue(webhook, parsed)
            stored = await self._apply(webhook, venue_id, parsed)
        except IntegrationError as exc:
            if exc.retryable:
                return await self._retry(delivery, webhook, exc)
            return await self._engine.dead_letter(delivery, exc, raw=None)
        except INFRASTRUCTURE_ERRORS:
            raise  # not the webhook's fault: the consumer hands the delivery back
        except Exception as exc:  # a provider body we cannot use, or a bug: stored, not looped
            log.exception("webhook_crashed")
            return await self._engine.dead_letter(delivery, classify(exc), raw=None)
        return Outcome("done", status="succeeded", outbox=tuple(stored))

    def _parse(self, delivery: Delivery) -> tuple[VerifiedWebhook, bytes]:
        try:
            raw = parse_json_object(delivery.body)
            webhook = VerifiedWebhook.model_validate(raw)
        except ValueError as exc:
            detail = first_error_line(exc) if isinstance(exc, PydanticValidationError) else str(exc)
            raise ValidationError(f"invalid webhook message: {detail}") from None
        if delivery.routing_key != f"webhook.{webhook.provider}":
            raise ValidationError(
                f"routing key {delivery.routing_key!r} does not match provider {webhook.provider!r}"
            )
        try:
            body = base64.b64decode(webhook.body, validate=True)
        except (binascii.Error, ValueError):
            raise ValidationError("webhook body is not base64") from None
        return webhook, body

    async def _venue(self, webhook: VerifiedWebhook, parsed: ParsedWebhook) -> str:
        if webhook.venue_id is not None:
            if not await credentials_db.venue_known(self._d.pool, webhook.venue_id, webhook.provider):
                raise UnknownEntityError(f"unknown venue {webhook.venue_id!r} for {webhook.provider}")
            return webhook.venue_id
        account = parsed.account or next((c.account for c in parsed.changes if c.account), None)
        if not account:
            raise DataError(f"{webhook.provider} webhook names no account")
        key = "realm_id" if webhook.provider == "quickbooks" else "merchant_id"
        venue = await credentials_db.venue_for_account(self._d.pool, webhook.provider, **{key: account})
        if venue is None:
            raise ConfigurationError(f"no venue holds {webhook.provider} {key.replace('_', ' ')} {account}")
        return venue

    async def _apply(
        self, webhook: VerifiedWebhook, venue_id: str, parsed: ParsedWebhook
    ) -> list[outbox_db.StoredMessage]:
        from service.entities import SUPPORTED

        stored: list[outbox_db.StoredMessage] = []
        for change in parsed.changes:
            if (webhook.provider, change.entity, "pull") not in SUPPORTED:
                log.info("webhook_change_ignored", entity=change.entity)
                continue
            if await self._seen(webhook.provider, change.event_id):
                self._d.metrics.webhook_duplicates.labels(provider=webhook.provider).inc()
                continue
            record = change.record
            if record is None and change.op != "deleted":
                record = await self._fetch(webhook.provider, venue_id, change)
            stored += await self._store(webhook, venue_id, change, record)
        return stored

    async def _seen(self, provider: str, event_id: str) -> bool:
        found = await self._d.pool.fetchval(
            "SELECT 1 FROM webhook_events WHERE provider = $1 AND event_id = $2", provider, event_id
        )
        return found is not None

    async def _fetch(self, provider: str, venue_id: str, change: WebhookChange) -> ProviderRecord | None:
        auth = await self._d.auth_for(venue_id, provider)
        return await self._d.clients[provider].fetch_record(auth, change.entity, change.external_id)

    async def _store(
        self, webhook: VerifiedWebhook, venue_id: str, change: WebhookChange, record: ProviderRecord | None
    ) -> list[outbox_db.StoredMessage]:
        from service.mapping import effective_mapping, to_platform

        provider = webhook.provider
        deleted = change.op == "deleted" or record is None or record.deleted
        override = await jobs_db.get_mapping_override(self._d.pool, venue_id, provider, change.entity)
        data: dict[str, Any] = {}
        if record is not None and not deleted:
            data = to_platform(effective_mapping(provider, change.entity, override), record.data)
        async with self._d.pool.acquire() as conn, conn.transaction():
            if not await outbox_db.claim_webhook_event(
                conn, provider, change.event_id, venue_id, webhook.received_at
            ):
                return []  # another process took it between the check and now
            known = (
                await jobs_db.record_states(conn, venue_id, provider, change.entity, [change.external_id])
            ).get(change.external_id)
            updated_at = record.updated_at if record else change.occurred_at
            if known is not None and known["updated_at"] and updated_at and updated_at < known["updated_at"]:
                log.info("webhook_change_older_than_known", entity=change.entity)
                return []
            digest = content_hash(data)
            version = (record.version if record else None) or change.event_id
            platform_id = (known["platform_id"] if known else None) or platform_id_of(data)
            await jobs_db.upsert_record_states(
                conn,
                venue_id,
                provider,
                change.entity,
                [(change.external_id, platform_id, version, updated_at, digest, deleted)],
            )
            event = RecordEvent(
                venue_id=venue_id,
                provider=provider,
                entity=change.entity,
                op="deleted" if deleted else "upserted",
                external_id=change.external_id,
                platform_id=platform_id,
                data=data,
                source="webhook",
                occurred_at=change.occurred_at or webhook.received_at,
                event_id=record_event_id(provider, venue_id, change.entity, change.external_id, version),
            )
            self._d.metrics.record_events.labels(provider, change.entity, event.op, "webhook").inc()
            return await outbox_db.enqueue(conn, [self._d.routes.record_event(event)])

    async def _retry(self, delivery: Delivery, webhook: VerifiedWebhook, error: IntegrationError) -> Outcome:
        attempt = int(delivery.headers.get("x-retry-attempt", 0) or 0) + 1
        return await self._engine.retry_later(
            delivery, error, attempt=attempt, provider=webhook.provider, raw=None,
            log_event="webhook_retry_scheduled",
        )


async def prune_dedupe(pool: Any, *, older_than_s: float = DEDUPE_RETENTION_S) -> int:
    """Delete dedupe rows older than the providers' retry horizon."""
    return await outbox_db.prune_webhook_events(pool, older_than_s=older_than_s)


__all__ = ["WebhookProcessor", "prune_dedupe", "utcnow"]
