"""StripeClient: the ProviderClient for Stripe: writes through the ``stripe`` SDK's async
methods, list pages as plain GETs through the shared helper.

The SDK's ``StripeClient`` is pointed at ``STRIPE_API_BASE`` with ``max_network_retries=0``
and an HTTP client (:class:`GatedHttpClient`) that sends every request through the shared
helper, so the rate limiter, timeouts, metrics and error mapping apply to the SDK's calls
too (the helper raises our errors before the SDK sees a non-2xx). List pages need nothing
the SDK adds, so they go to the helper directly, with the same Bearer key, the same API
version and the SDK's own parameter encoding (``encode_params``, checked against the SDK by
a property test). The API version is the one the installed SDK pins (``stripe.api_version``):
one place.

Pulls: a full pull lists the entity newest first (``limit=100``, ``starting_after``); an
incremental pull reads ``/v1/events`` created since the stored cursor (Stripe lists filter
only on creation time), and a cursor older than Stripe's 30 days of events forces a full
pull. Balance transactions have no events and never change once created, so their
incremental pull lists those created since the cursor. The cursor stored after a pull is
``{"events_since": <unix seconds when the pull started, less a minute of clock skew>}``.

Pushes: customers (create or update) and refunds (create), each with ``Idempotency-Key``
= PushItem.idempotency_key. Stripe keeps keys 24 hours; a creation also stamps the key in
``metadata[integration_idempotency_key]``. A retry whose first attempt is older than 23 hours
(``options["first_attempt_at"]``, RFC 3339, set by the engine from the job's first start)
re-reads before writing: it looks the stamped object up (customer search, or the charge's
refunds) and returns it instead of creating a second one; an update re-reads the customer
first (a deleted one fails as ``data``).
"""

from __future__ import annotations

import asyncio
import codecs
import json
import re
import time
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import stripe as stripe_sdk

from providers.base import Page, ParsedWebhook, ProviderRecord, PushItem, PushResult, VenueAuth, WebhookChange
from providers.http import ProviderHttp, ProviderSpec, spec_for
from service.config import Settings
from service.errors import (
    DataError,
    IntegrationError,
    ProviderError,
    RateLimitError,
    UnknownEntityError,
    ValidationError,
)
from service.messages import VerifiedWebhook

# No client telemetry: the SDK would read and write ~/.config/stripe on the event loop and
# report our request timings to Stripe; neither belongs in a server.
stripe_sdk.enable_telemetry = False
API_VERSION: str = stripe_sdk.api_version

PAGE_LIMIT = 100
EVENT_RETENTION = timedelta(days=30)
CURSOR_MARGIN = timedelta(hours=1)  # a cursor this close to 30 days old may lose events: go full
CLOCK_SKEW_S = 60  # re-read a minute of events before the cursor; duplicates are harmless
KEY_RETENTION = timedelta(hours=23)  # Stripe keeps idempotency keys >= 24 h; stay inside that
KEY_METADATA = "integration_idempotency_key"
BATCH_SIZE = 10  # no batch endpoint: records of a batch are written concurrently, each gated
SDK_CLIENTS_KEPT = 256  # SDK clients kept by credential object (the AuthCache renews them every few seconds)

# entity -> (SDK service name, Stripe object type, event types that carry that object)
ENTITIES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "customers": ("customers", "customer", ("customer.created", "customer.updated", "customer.deleted")),
    "payment_intents": ("payment_intents", "payment_intent", (
        "payment_intent.created", "payment_intent.succeeded", "payment_intent.canceled",
        "payment_intent.processing", "payment_intent.payment_failed", "payment_intent.requires_action",
        "payment_intent.amount_capturable_updated", "payment_intent.partially_funded")),
    "charges": ("charges", "charge", (
        "charge.succeeded", "charge.failed", "charge.captured", "charge.refunded", "charge.updated",
        "charge.pending", "charge.expired")),
    "refunds": ("refunds", "refund", ("refund.created", "refund.updated", "refund.failed",
                                      "charge.refund.updated")),
    "balance_transactions": ("balance_transactions", "balance_transaction", ()),
}
BY_OBJECT = {obj: entity for entity, (_, obj, _) in ENTITIES.items()}
PUSHABLE = ("customers", "refunds")


def error_hook(status: int, body: Any) -> tuple[type[IntegrationError] | None, str | None]:
    """Stripe's ``{"error": {type, code, message, param}}`` -> our category and message."""
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return None, None
    kind, code = str(error.get("type") or ""), str(error.get("code") or "")
    message = " ".join(str(error.get("message") or kind or "error").split())
    detail = f"{kind}/{code}: {message}" if code else f"{kind}: {message}" if kind else message
    if code == "rate_limit" or status == 429:
        return RateLimitError, detail
    if kind in ("idempotency_error", "card_error") or code == "resource_missing" or status == 404:
        return DataError, detail  # conflicts with stored state, a declined card, a missing object
    if status == 409:
        return ProviderError, detail  # the key is in use by a concurrent request: retry later
    if kind == "invalid_request_error" and status in (400, 422):
        return ValidationError, detail
    return None, detail


SPEC: ProviderSpec = spec_for("stripe", error_hook=error_hook, default_retry_after_s=1.0)
_WORD = re.compile(r"[a-z]+(?:_[a-z]+)*")  # a collection or action name: payment_intents, search


def operation_of(method: str, url: str, *, base_path: str = "") -> str:
    """A bounded metrics label: method and path with ids replaced, e.g. ``post /v1/customers/{id}``.

    Every segment after the version that is not a lower-case word is an id. (Asking ids to
    hold a digit let 8 % of Stripe's 14-character ids through, a new label set each; now
    only an all-lower-case id would pass, about 5 in a million.)"""
    path = urlsplit(url).path.removeprefix(base_path)
    parts = [p if i < 2 or _WORD.fullmatch(p) else "{id}" for i, p in enumerate(path.split("/"))]
    return f"{method.lower()} {'/'.join(parts)}"


class GatedHttpClient(stripe_sdk.HTTPClient):
    """The SDK's HTTP client, sending through the shared helper (limiter, timeout, errors)."""

    name = "integration-gated"

    def __init__(self, http: ProviderHttp, auth: VenueAuth, *, base_path: str = "") -> None:
        super().__init__()
        self._http = http
        self._auth = auth
        self._base_path = base_path

    async def request_async(self, method: str, url: str, headers: Mapping[str, str],
                            post_data: Any = None) -> tuple[bytes, int, Mapping[str, str]]:
        operation = operation_of(method, url, base_path=self._base_path)
        reply = await self._http.request(
            SPEC, self._auth, method.upper(), url, operation=operation,
            data=post_data, headers=dict(headers), sign=False,  # the SDK set Authorization
        )
        reply.json_object()  # garbage becomes a one-line ProviderError here, not in the SDK
        # json.loads takes a UTF-8 BOM on bytes; the SDK decodes to text first and raises its
        # own APIError on it: what passed our check must pass the SDK's.
        return reply.body.removeprefix(codecs.BOM_UTF8), reply.status, reply.headers

    async def request_stream_async(self, method: str, url: str, headers: Mapping[str, str],
                                   post_data: Any = None) -> Any:
        raise NotImplementedError("streaming is not used")

    def request(self, method: str, url: str, headers: Mapping[str, str] | None,
                post_data: Any = None, *, _usage: list[str] | None = None) -> Any:
        raise NotImplementedError("the integration service calls Stripe asynchronously only")

    def sleep_async(self, secs: float) -> Any:
        return asyncio.sleep(secs)

    async def close_async(self) -> None:
        """The shared session belongs to the process, not to this client."""

    def close(self) -> None:
        """Nothing to close."""


def _dict(obj: Any) -> dict[str, Any]:
    value = obj.to_dict() if hasattr(obj, "to_dict") else obj
    if not isinstance(value, dict):
        raise ProviderError("stripe: response is not an object", retryable=True)
    return value


def _object(obj: Any) -> dict[str, Any]:
    """A created, updated or retrieved object: it must carry its id (a 200 without one,
    from a proxy say, escaped as a KeyError after the write may have gone through)."""
    value = _dict(obj)
    if not isinstance(value.get("id"), str) or not value["id"]:
        raise ProviderError("stripe: response object has no id", retryable=True)
    return value


def _record(obj: dict[str, Any], *, deleted: bool = False) -> ProviderRecord:
    # Stripe objects carry no update time (``created`` is the creation time): leave updated_at
    # unknown so the engine compares content rather than discarding a listed object as older
    # than an event it saw. Records read from events carry the event's time instead.
    return ProviderRecord(external_id=str(obj["id"]), data=obj, deleted=deleted or bool(obj.get("deleted")))


def _entity(entity: str, *, push: bool = False) -> tuple[str, str, tuple[str, ...]]:
    if entity not in ENTITIES or (push and entity not in PUSHABLE):
        raise UnknownEntityError(f"stripe cannot {'push' if push else 'pull'} {entity!r}")
    return ENTITIES[entity]


def _first_attempt(options: Mapping[str, Any], item: PushItem) -> datetime | None:
    value = getattr(item, "first_attempt_at", None) or options.get("first_attempt_at")
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return None
    return None


class StripeClient:
    """Stripe through its SDK and the shared helper; provider-shaped dicts in and out."""

    name = "stripe"

    def __init__(self, http: ProviderHttp, *, settings: Settings | None = None,
                 clock: Any = time.time) -> None:
        self.http = http
        self.settings = settings or http.settings
        self.base_url = self.settings.stripe_api_base.rstrip("/")
        self._clock = clock
        self._sdks: dict[int, tuple[VenueAuth, stripe_sdk.StripeClient]] = {}

    def sdk(self, auth: VenueAuth) -> stripe_sdk.StripeClient:
        """An SDK client for one venue's key, every request through the shared helper; kept
        while the same credential object is in use (building one costs more than a call)."""
        kept = self._sdks.get(id(auth))
        if kept is not None and kept[0] is auth:
            return kept[1]
        client = stripe_sdk.StripeClient(
            _api_key(auth), base_addresses={"api": self.base_url}, max_network_retries=0,
            http_client=GatedHttpClient(self.http, auth, base_path=urlsplit(self.base_url).path),
        )
        if len(self._sdks) >= SDK_CLIENTS_KEPT:
            self._sdks.clear()
        self._sdks[id(auth)] = (auth, client)  # the auth is held, so its id is not reused
        return client

    def batch_size(self, entity: str) -> int:
        """Records per push_batch (written concurrently: Stripe has no batch endpoint)."""
        _entity(entity, push=True)
        return BATCH_SIZE

    # Pull ------------------------------------------------------------------------------

    async def pull_page(self, auth: VenueAuth, entity: str, *, cursor: dict[str, Any] | None,
                        resume: dict[str, Any] | None, options: dict[str, Any]) -> Page:
        """One page of a full list or of the events since the stored cursor."""
        _entity(entity)
        state = dict(cursor) if cursor else self._start(entity, resume)
        if state["mode"] == "events":
            return await self._events_page(auth, entity, state)
        return await self._list_page(auth, entity, state)

    def _start(self, entity: str, resume: dict[str, Any] | None) -> dict[str, Any]:
        now = int(self._clock())
        state: dict[str, Any] = {"mode": "list", "t0": now}
        since = (resume or {}).get("events_since")
        if isinstance(since, int | float) and now - since < (EVENT_RETENTION - CURSOR_MARGIN).total_seconds():
            if entity == "balance_transactions":
                state["created_gte"] = int(since)  # immutable once created: creation time suffices
            else:
                state.update(mode="events", since=int(since))
        return state

    def _finish(self, state: dict[str, Any], records: list[ProviderRecord], has_more: bool,
                last_id: str | None) -> Page:
        if has_more and last_id:
            return Page(records, {**state, "after": last_id})
        return Page(records, None, resume_cursor={"events_since": int(state["t0"]) - CLOCK_SKEW_S})

    async def _listing(self, auth: VenueAuth, path: str, params: dict[str, Any]) -> dict[str, Any]:
        """One list page as plain JSON: a GET through the shared helper (limiter, timeout,
        error mapping) with the SDK's pinned API version, params encoded as the SDK does.
        Reads skip the SDK: it adds nothing a GET needs, and its request building and log
        formatting (done whether or not anybody listens) cost a quarter of a pull's CPU."""
        reply = await self.http.request(
            SPEC, auth, "GET", f"{self.base_url}{path}", operation=f"get {path}",
            params=encode_params(params), headers={"Stripe-Version": API_VERSION},
        )  # fmt: skip
        return reply.json_object()

    async def _list_page(self, auth: VenueAuth, entity: str, state: dict[str, Any]) -> Page:
        params: dict[str, Any] = {"limit": PAGE_LIMIT}
        if state.get("after"):
            params["starting_after"] = state["after"]
        if state.get("created_gte") is not None:
            params["created"] = {"gte": state["created_gte"]}
        listing = await self._listing(auth, f"/v1/{ENTITIES[entity][0]}", params)
        data = _list_data(listing)
        return self._finish(state, [_record(o) for o in data], bool(listing.get("has_more")),
                            str(data[-1]["id"]) if data else None)

    async def _events_page(self, auth: VenueAuth, entity: str, state: dict[str, Any]) -> Page:
        _, object_type, types = ENTITIES[entity]
        params: Any = {"limit": PAGE_LIMIT, "types": list(types), "created": {"gte": state["since"]}}
        if state.get("after"):
            params["starting_after"] = state["after"]
        listing = await self._listing(auth, "/v1/events", params)
        events = _list_data(listing)
        seen: set[str] = set()
        records = []
        for event in events:  # newest first: the first event of an object is its latest state
            change = _event_change(event, object_type)
            if change is not None and change.external_id not in seen:
                seen.add(change.external_id)
                assert change.record is not None
                records.append(change.record)
        return self._finish(state, records, bool(listing.get("has_more")),
                            str(events[-1]["id"]) if events else None)

    # Push ------------------------------------------------------------------------------

    async def push_batch(self, auth: VenueAuth, entity: str, items: list[PushItem], *,
                         options: dict[str, Any]) -> list[PushResult]:
        """Create/update customers or create refunds; per-record failures come back as results."""
        _entity(entity, push=True)
        sdk = self.sdk(auth)
        return list(await asyncio.gather(*(self._push_one(sdk, entity, item, options) for item in items)))

    async def _push_one(self, sdk: stripe_sdk.StripeClient, entity: str, item: PushItem,
                        options: Mapping[str, Any]) -> PushResult:
        first = _first_attempt(options, item)
        late = first is not None and datetime.now(UTC) - first > KEY_RETENTION
        try:
            if entity == "customers" and item.external_id:
                return await self._update_customer(sdk, item, late=late)
            found = await self._find_stamped(sdk, entity, item) if late else None
            if found is not None:
                return PushResult(item.record_id, "created", str(found["id"]), found)
            payload: Any = dict(item.payload)
            payload["metadata"] = {**(payload.get("metadata") or {}), KEY_METADATA: item.idempotency_key}
            service = sdk.v1.customers if entity == "customers" else sdk.v1.refunds
            created = _object(await service.create_async(payload, {"idempotency_key": item.idempotency_key}))
            return PushResult(item.record_id, "created", str(created["id"]), created)
        except IntegrationError as exc:
            return PushResult(item.record_id, "failed", item.external_id, error=exc)

    async def _update_customer(self, sdk: stripe_sdk.StripeClient, item: PushItem, *,
                               late: bool) -> PushResult:
        assert item.external_id is not None
        if late:
            current = _object(await sdk.v1.customers.retrieve_async(item.external_id))
            if current.get("deleted"):
                raise DataError(f"stripe customer {item.external_id} was deleted")
        payload: Any = dict(item.payload)
        updated = _object(await sdk.v1.customers.update_async(
            item.external_id, payload, {"idempotency_key": item.idempotency_key}))
        return PushResult(item.record_id, "updated", str(updated["id"]), updated)

    async def _find_stamped(self, sdk: stripe_sdk.StripeClient, entity: str,
                            item: PushItem) -> dict[str, Any] | None:
        """The object an earlier attempt created with this key, if any (late retries only)."""
        key = item.idempotency_key
        if entity == "customers":
            found = _dict(await sdk.v1.customers.search_async(
                {"query": f"metadata['{KEY_METADATA}']:'{key}'", "limit": 1}))
            data = _list_data(found)
            return data[0] if data else None
        params: Any = {k: item.payload[k] for k in ("charge", "payment_intent") if item.payload.get(k)}
        query: Any = {**params, "limit": PAGE_LIMIT}
        refunds = _list_data(_dict(await sdk.v1.refunds.list_async(query)))
        return next((r for r in refunds if (r.get("metadata") or {}).get(KEY_METADATA) == key), None)

    # Records, webhooks, health ----------------------------------------------------------

    async def fetch_record(self, auth: VenueAuth, entity: str, external_id: str) -> ProviderRecord | None:
        """One object by id; None when Stripe no longer has it."""
        service = getattr(self.sdk(auth).v1, _entity(entity)[0])
        try:
            return _record(_object(await service.retrieve_async(external_id)))
        except DataError as exc:
            if exc.status == 404:
                return None
            raise

    def parse_webhook(self, webhook: VerifiedWebhook, body: bytes) -> ParsedWebhook:
        """A Stripe event: its id is the dedupe key, data.object the full record."""
        try:
            event = json.loads(body)
        except (ValueError, RecursionError):
            raise DataError("stripe webhook body is not JSON") from None
        if not isinstance(event, dict) or not isinstance(event.get("id"), str):
            raise DataError("stripe webhook body is not an event (no id)")
        obj = (event.get("data") or {}).get("object") if isinstance(event.get("data"), dict) else None
        if not isinstance(obj, dict):
            raise DataError(f"stripe event {event['id']} has no data.object")
        change = _event_change(event, str(obj.get("object")))
        account = event.get("account") if isinstance(event.get("account"), str) else None
        return ParsedWebhook(event_id=event["id"], changes=[change] if change else [], account=account)

    async def check_health(self) -> None:
        """Stripe answers an unauthenticated request with its own 401 JSON when it is up."""
        reply = await self.http.send(SPEC, "GET", f"{self.base_url}/v1/balance", operation="health")
        if reply.status == 401 and isinstance(reply.json_object().get("error"), dict):
            return
        if reply.status >= 500 or reply.status not in (200, 401):
            raise ProviderError(f"stripe health: HTTP {reply.status}", status=reply.status)
        reply.json_object()


def _api_key(auth: VenueAuth) -> str:
    getter = getattr(auth, "api_key", None)
    if callable(getter):
        return str(getter())
    raise ValidationError("stripe needs an auth object with api_key()")


def encode_params(params: Mapping[str, Any], prefix: str = "") -> list[tuple[str, str]]:
    """Query parameters the way Stripe (and its SDK) encodes them: ``created[gte]=1`` for a
    dict, ``types[0]=a&types[1]=b`` for a list."""
    pairs: list[tuple[str, str]] = []
    for key, value in params.items():
        name = f"{prefix}[{key}]" if prefix else str(key)
        if isinstance(value, Mapping):
            pairs += encode_params(value, name)
        elif isinstance(value, list | tuple):
            pairs += encode_params({str(i): v for i, v in enumerate(value)}, name)
        elif isinstance(value, bool):
            pairs.append((name, "true" if value else "false"))
        elif value is not None:
            pairs.append((name, str(value)))
    return pairs


def _list_data(listing: dict[str, Any]) -> list[dict[str, Any]]:
    data = listing.get("data")
    if not isinstance(data, list) or not all(isinstance(o, dict) and o.get("id") for o in data):
        raise ProviderError("stripe: list response has no data list of objects", retryable=True)
    return data


def _unix_time(value: Any) -> datetime | None:
    """A Unix timestamp as a datetime; None for anything else, out-of-range values included
    (``fromtimestamp`` raises OSError for those: raw, the consumer would take it for the
    database being away and hand the event back for ever)."""
    if not isinstance(value, int) or isinstance(value, bool):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _event_change(event: dict[str, Any], object_type: str) -> WebhookChange | None:
    """One record change from an event whose data.object is of ``object_type`` (else None)."""
    data = event.get("data")
    obj = data.get("object") if isinstance(data, dict) else None
    if not isinstance(obj, dict) or obj.get("object") != object_type or not obj.get("id"):
        return None
    entity = BY_OBJECT.get(object_type)
    if entity is None:
        return None
    deleted = str(event.get("type", "")).endswith(".deleted")
    when = _unix_time(event.get("created"))
    record = ProviderRecord(external_id=str(obj["id"]), data=obj, version=str(event["id"]),
                            updated_at=when, deleted=deleted)
    return WebhookChange(entity=entity, external_id=record.external_id,
                         op="deleted" if deleted else "upserted", event_id=str(event["id"]),
                         record=record, occurred_at=when)
