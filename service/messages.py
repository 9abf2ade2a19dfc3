"""Message schemas (CONTRACT section 3) as pydantic models, parsed at the edge.

Every body is a frozen model with ``extra="forbid"`` and a literal ``schema``. Past the
consumer, code sees only these models. The AsyncAPI document is generated from them.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from functools import cached_property
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, model_validator

from service.config import PROVIDERS

ProviderName = Literal["stripe", "square", "quickbooks", "mailchimp"]
Direction = Literal["pull", "push"]
Mode = Literal["full", "incremental"]
JobStatus = Literal["pending", "running", "succeeded", "partial", "failed"]
FinalStatus = Literal["succeeded", "partial", "failed"]


def without_nul(text: str) -> str:
    """Text PostgreSQL can store: a NUL character (which text and jsonb refuse) becomes U+FFFD."""
    return text.replace("\x00", "\ufffd") if "\x00" in text else text


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain a NUL character")
    return value


Id = Annotated[
    str, StringConstraints(min_length=1, max_length=200, strip_whitespace=False), AfterValidator(_no_nul)
]

SYNC_REQUEST_V1 = "integration.sync_request.v1"
JOB_RESULT_V1 = "integration.job_result.v1"
RECORD_EVENT_V1 = "integration.record_event.v1"
WEBHOOK_V1 = "integration.webhook.v1"

# The namespace of every UUIDv5 the service derives (idempotency keys, event ids).
NAMESPACE = uuid.UUID("6f1c7a52-4c1e-5d0b-9a57-1b2f3c4d5e6f")

assert set(PROVIDERS) == {"stripe", "square", "quickbooks", "mailchimp"}


def utcnow() -> datetime:
    return datetime.now(UTC)


def rfc3339(value: datetime) -> str:
    """UTC RFC 3339 with a Z suffix."""
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


class _Message(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def to_json_bytes(self) -> bytes:
        """The wire body: UTF-8 JSON with the ``schema`` field named as in the contract."""
        return self.model_dump_json(by_alias=True).encode()


class SyncRequest(_Message):
    """integration.sync_request.v1: a request to pull or push one entity for one venue."""

    schema_: Literal["integration.sync_request.v1"] = Field("integration.sync_request.v1", alias="schema")
    job_id: Id
    venue_id: Id
    provider: ProviderName
    entity: Id
    direction: Direction = "pull"
    mode: Mode = "incremental"
    records: list[dict[str, Any]] | None = None
    options: dict[str, Any] = Field(default_factory=dict)

    def to_json_bytes(self) -> bytes:
        """As the base, but ``records`` is left out of a pull (CONTRACT section 3: absent,
        not null)."""
        if self.records is None:
            return self.model_dump_json(by_alias=True, exclude={"records"}).encode()
        return super().to_json_bytes()

    @model_validator(mode="after")
    def _records_match_direction(self) -> SyncRequest:
        if self.direction == "push" and self.records is None:
            raise ValueError("records is required for push")
        if self.direction == "pull" and self.records is not None:
            raise ValueError("records must be absent for pull")
        return self


class JobCounts(_Message):
    processed: int = 0
    created: int = 0
    updated: int = 0
    skipped: int = 0
    failed: int = 0


class RecordError(_Message):
    record_id: str | None
    category: str
    severity: str
    message: str


class JobResult(_Message):
    """integration.job_result.v1: the one result every sync request ends in."""

    schema_: Literal["integration.job_result.v1"] = Field("integration.job_result.v1", alias="schema")
    job_id: Id
    venue_id: str
    provider: str
    entity: str
    direction: str
    status: FinalStatus
    counts: JobCounts
    errors: list[RecordError] = Field(default_factory=list)
    started_at: datetime
    finished_at: datetime

    @cached_property
    def wire_body(self) -> bytes:
        """The wire body, made once: a job's result is stored and sent (also to reply_to)
        with the same bytes."""
        return super().to_json_bytes()

    def to_json_bytes(self) -> bytes:
        return self.wire_body


class RecordEvent(_Message):
    """integration.record_event.v1: one change to one provider record, in platform shape."""

    schema_: Literal["integration.record_event.v1"] = Field("integration.record_event.v1", alias="schema")
    venue_id: str
    provider: ProviderName
    entity: str
    op: Literal["upserted", "deleted"]
    external_id: str
    platform_id: str | None = None
    data: dict[str, Any]
    source: Literal["sync", "webhook"]
    occurred_at: datetime
    event_id: str


class VerifiedWebhook(_Message):
    """integration.webhook.v1: a webhook whose signature the ingress verified."""

    schema_: Literal["integration.webhook.v1"] = Field("integration.webhook.v1", alias="schema")
    provider: ProviderName
    venue_id: str | None
    received_at: datetime
    headers: dict[str, str]
    body: str  # base64 of the exact bytes that were signed


ALL_MESSAGES: tuple[type[_Message], ...] = (SyncRequest, JobResult, RecordEvent, VerifiedWebhook)


def idempotency_key(job_id: str, record_id: str, operation: str) -> str:
    """The UUIDv5 every write carries, the same on every retry, redelivery and replay."""
    return str(uuid.uuid5(NAMESPACE, f"write:{job_id}:{record_id}:{operation}"))


def record_event_id(provider: str, account: str, entity: str, external_id: str, version: str) -> str:
    """A stable event id: one change yields one id however often it is seen."""
    return str(uuid.uuid5(NAMESPACE, f"event:{provider}:{account}:{entity}:{external_id}:{version}"))


def first_error_line(exc: Exception) -> str:
    """A pydantic error as one line naming the field, e.g. ``direction: Input should be ...``."""
    errors = getattr(exc, "errors", None)
    if callable(errors):
        items = errors()
        if items:
            loc = ".".join(str(p) for p in items[0].get("loc", ())) or "body"
            return f"{loc}: {items[0].get('msg', 'invalid')}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def parse_json_object(body: bytes) -> dict[str, Any]:
    """Decode a UTF-8 JSON object; raise ValueError with a one-line reason."""
    try:
        value = json.loads(body.decode("utf-8"))
    except UnicodeDecodeError:
        raise ValueError("body is not UTF-8") from None
    except json.JSONDecodeError as exc:
        raise ValueError(f"body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    if not isinstance(value, dict):
        raise ValueError(f"body is a JSON {type(value).__name__}, not an object")
    return value
