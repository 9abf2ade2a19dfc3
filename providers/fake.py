"""In-memory fakes for tests: a rate gate that records what it was asked, and
``FakeProvider``, an in-memory ProviderClient for the engine's tests (idempotent writes,
paged incremental pulls, per-record failures, transient errors, webhook events)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from providers.base import (
    Outcome,
    Page,
    ParsedWebhook,
    ProviderRecord,
    PushItem,
    PushResult,
    VenueAuth,
    WebhookChange,
)
from service.errors import DataError, IntegrationError, NetworkError
from service.messages import VerifiedWebhook


class RecordingGate:
    """A RateGate that never waits and remembers every acquire and penalty."""

    def __init__(self) -> None:
        self.acquired: list[tuple[str, str, Any]] = []
        self.penalties: list[tuple[str, str, float]] = []
        self.in_flight = 0

    @asynccontextmanager
    async def acquire(self, provider: str, account: str, limits: Any, *,
                      max_wait_s: float) -> AsyncIterator[None]:
        self.acquired.append((provider, account, limits))
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def penalize(self, provider: str, account: str, retry_after_s: float) -> None:
        self.penalties.append((provider, account, retry_after_s))


def fake_limits_for(provider: str, **options: Any) -> dict[str, Any]:
    """Stands in for service.limiter.limits_for: echoes what it was asked."""
    return {"provider": provider, **options}


# The fake provider -----------------------------------------------------------------------



@dataclass
class FakeProvider:
    """An in-memory ProviderClient: idempotent writes, paged pulls, failures on demand.

    ``record_failures`` maps a platform record id to the error its write fails with (the
    rest of the batch goes on); ``transient`` is the next N calls' error (each raised once,
    a NetworkError by default); ``health_error`` makes check_health fail."""

    name: str = "fake"
    page_size: int = 2
    push_batch_size: int = 10
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)  # entity -> id -> object
    keys: dict[str, str] = field(default_factory=dict)  # idempotency key -> external id
    calls: list[tuple[str, str, str]] = field(default_factory=list)  # (operation, entity, detail)
    record_failures: dict[str, IntegrationError] = field(default_factory=dict)
    transient: list[IntegrationError] = field(default_factory=list)
    health_error: IntegrationError | None = None
    clock: float = 1_700_000_000.0

    def fail_next(self, count: int = 1, error: IntegrationError | None = None) -> None:
        """Make the next ``count`` calls raise ``error`` (NetworkError by default)."""
        self.transient += [error or NetworkError("fake provider: connection reset")] * count

    def _call(self, operation: str, entity: str, detail: str = "") -> None:
        self.calls.append((operation, entity, detail))
        if self.transient:
            raise self.transient.pop(0)

    def _tick(self) -> float:
        self.clock += 1.0
        return self.clock

    def put(self, entity: str, obj: dict[str, Any]) -> dict[str, Any]:
        """Store (or replace) a provider object directly, as if changed at the provider."""
        stored = {**obj, "updated": self._tick()}
        self.objects.setdefault(entity, {})[str(obj["id"])] = stored
        return stored

    def batch_size(self, entity: str) -> int:
        return self.push_batch_size

    async def pull_page(self, auth: VenueAuth, entity: str, *, cursor: dict[str, Any] | None,
                        resume: dict[str, Any] | None, options: dict[str, Any]) -> Page:
        """Objects changed since ``resume["since"]``, oldest first, ``page_size`` at a time."""
        start = int((cursor or {}).get("offset", 0))
        self._call("pull", entity, str(start))
        since = float((resume or {}).get("since", 0))
        ordered = sorted((o for o in self.objects.get(entity, {}).values() if o["updated"] > since),
                         key=lambda o: (o["updated"], str(o["id"])))
        chunk = ordered[start:start + self.page_size]
        records = [_fake_record(o) for o in chunk]
        if start + self.page_size < len(ordered):
            return Page(records, {"offset": start + self.page_size})
        last = max([since] + [o["updated"] for o in ordered])
        return Page(records, None, resume_cursor={"since": last})

    async def push_batch(self, auth: VenueAuth, entity: str, items: list[PushItem], *,
                         options: dict[str, Any]) -> list[PushResult]:
        """Idempotent writes: a key seen before returns the object it made."""
        self._call("push", entity, str(len(items)))
        return [self._write(entity, item) for item in items]

    def _write(self, entity: str, item: PushItem) -> PushResult:
        if item.record_id in self.record_failures:
            error = self.record_failures[item.record_id]
            return PushResult(item.record_id, "failed", item.external_id, error=error)
        store = self.objects.setdefault(entity, {})
        known = self.keys.get(item.idempotency_key)
        if known is not None:
            outcome: Outcome = "updated" if item.external_id else "created"
            return PushResult(item.record_id, outcome, known, store.get(known))
        external_id = item.external_id or f"{entity[:3]}_{len(self.keys) + 1}"
        created = external_id not in store
        self.keys[item.idempotency_key] = external_id
        obj = self.put(entity, {**store.get(external_id, {}), **item.payload, "id": external_id})
        return PushResult(item.record_id, "created" if created else "updated", external_id, obj)

    async def fetch_record(self, auth: VenueAuth, entity: str, external_id: str) -> ProviderRecord | None:
        self._call("fetch", entity, external_id)
        obj = self.objects.get(entity, {}).get(external_id)
        return None if obj is None else _fake_record(obj)

    def parse_webhook(self, webhook: VerifiedWebhook, body: bytes) -> ParsedWebhook:
        """``{"id", "entity", "op", "object"}`` JSON events; anything else is a DataError."""
        try:
            event = json.loads(body)
            obj, entity, event_id = event["object"], str(event["entity"]), str(event["id"])
            op: Literal["upserted", "deleted"] = "deleted" if event.get("op") == "deleted" else "upserted"
        except (ValueError, KeyError, TypeError):
            raise DataError("fake webhook body is not a fake event") from None
        record = ProviderRecord(str(obj["id"]), obj, version=event_id, deleted=op == "deleted")
        change = WebhookChange(entity, record.external_id, op, event_id, record=record)
        return ParsedWebhook(event_id, [change])

    async def check_health(self) -> None:
        self._call("health", "", "")
        if self.health_error is not None:
            raise self.health_error


def _fake_record(obj: dict[str, Any]) -> ProviderRecord:
    return ProviderRecord(str(obj["id"]), dict(obj), version=str(obj["updated"]),
                          updated_at=datetime.fromtimestamp(obj["updated"], UTC))
