"""The one provider interface the engine and webhook processing call.

Provider clients speak the provider's own JSON: the engine maps records to and from the
platform shape (service/mapping) before push and after pull. Every HTTP request goes through
the shared helper (``providers/http.py``): rate-limiter token, explicit timeout, status and
exception mapping into service.errors. A provider client never retries on its own: the
engine schedules retries (CONTRACT section 5) so a delivery is never held while waiting.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, Protocol

from service.errors import IntegrationError
from service.messages import VerifiedWebhook

Outcome = Literal["created", "updated", "skipped", "failed"]


@dataclass(frozen=True, slots=True)
class ProviderRecord:
    """One provider object as the provider returned it."""

    external_id: str
    data: dict[str, Any]
    version: str | None = None          # provider version / updated marker (event ids, ordering)
    updated_at: datetime | None = None
    deleted: bool = False


@dataclass(frozen=True, slots=True)
class Page:
    """One page of a pull."""

    records: list[ProviderRecord]
    next_cursor: dict[str, Any] | None  # where the next page starts; None when this was the last
    resume_cursor: dict[str, Any] | None = None  # the incremental cursor to store after this page


@dataclass(frozen=True, slots=True)
class PushItem:
    """One record to write, already in the provider's shape."""

    record_id: str                       # the platform record id
    payload: dict[str, Any]
    idempotency_key: str                 # UUIDv5(job id, record id, operation)
    external_id: str | None = None       # known provider id: update rather than create
    # When this write was first attempted (the job's first start). Stripe keeps idempotency keys
    # for 24 h: a retry later than that re-reads before writing (providers/stripe.py).
    first_attempt_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class PushResult:
    record_id: str
    outcome: Outcome
    external_id: str | None = None
    data: dict[str, Any] | None = None   # the provider's object after the write
    error: IntegrationError | None = None


@dataclass(frozen=True, slots=True)
class WebhookChange:
    """One record change announced by a webhook."""

    entity: str
    external_id: str
    op: Literal["upserted", "deleted"]
    event_id: str                        # the provider's event id (dedupe key)
    record: ProviderRecord | None = None  # None when the payload is thin: fetch it
    occurred_at: datetime | None = None
    account: str | None = None           # merchant id / realm id for app-wide routes


@dataclass(frozen=True, slots=True)
class ParsedWebhook:
    event_id: str
    changes: list[WebhookChange] = field(default_factory=list)
    account: str | None = None


class VenueAuth(Protocol):
    """A venue's credential at one provider, refreshed on expiry or a 401."""

    venue_id: str
    provider: str
    account_id: str
    test_mode: bool

    async def headers(self) -> dict[str, str]:
        """Authorization headers for the next call."""
        ...

    async def on_unauthorized(self) -> bool:
        """Refresh once after a 401; True when a retry may succeed."""
        ...

    def value(self, name: str) -> str | None:
        """A non-secret credential field: realm_id, merchant_id, server_prefix."""
        ...


class ProviderClient(Protocol):
    """Pull a page, push a batch, fetch one record, parse a webhook, check health."""

    name: str

    def batch_size(self, entity: str) -> int:
        """How many records one push_batch call takes for this entity."""
        ...

    async def pull_page(
        self, auth: VenueAuth, entity: str, *, cursor: dict[str, Any] | None,
        resume: dict[str, Any] | None, options: dict[str, Any],
    ) -> Page:
        """One page; ``cursor`` continues a pull, ``resume`` is the stored incremental cursor
        (None for a full pull)."""
        ...

    async def push_batch(
        self, auth: VenueAuth, entity: str, items: list[PushItem], *, options: dict[str, Any]
    ) -> list[PushResult]:
        """Write a batch; per-record failures come back as results, not exceptions.
        Raises IntegrationError for failures of the whole call."""
        ...

    async def fetch_record(self, auth: VenueAuth, entity: str, external_id: str) -> ProviderRecord | None:
        """One record by id (for thin webhooks); None when it no longer exists."""
        ...

    def parse_webhook(self, webhook: VerifiedWebhook, body: bytes) -> ParsedWebhook:
        """Turn a verified webhook into record changes; raise DataError for unusable content."""
        ...

    async def check_health(self) -> None:
        """Raise IntegrationError when the provider's API is not answering properly."""
        ...
