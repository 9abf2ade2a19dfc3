"""Square writes: customers and orders one per request, inventory counts 100 per request.

Each write carries the item's idempotency key (CONTRACT section 5), so a retry, redelivery
or replay makes one object. A record Square refuses (``validation``) comes back as a failed
PushResult; anything else (rate limit, network, authentication, 5xx) raises, the engine
retries the call, and the keys make the replay harmless. An update that meets a stale
``version`` re-reads the object and retries once with the current version (and a key
derived from the item's, since Square refuses a reused key with a changed body).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from providers.base import PushItem, PushResult, VenueAuth
from providers.square.api import SquareApi, items_of, object_of, path_id
from providers.square.errors import IdempotencyKeyReusedError, VersionConflictError
from providers.square.webhooks import inventory_external_id
from service.errors import DataError, IntegrationError, ValidationError
from service.messages import NAMESPACE

INVENTORY_BATCH = 100  # batch-create takes at most 100 changes
_READ_ONLY = ("id", "idempotency_key", "created_at", "updated_at")
_CHANGE_INDEX = re.compile(r"changes\[(\d+)\]")
REFUSED = (ValidationError, DataError)  # the record fails; everything else fails the call


def retry_key(key: str, why: str) -> str:
    """A key derived from ``key``: the same on every replay, different from the first attempt."""
    return str(uuid.uuid5(uuid.UUID(key) if _is_uuid(key) else NAMESPACE, f"{why}:{key}"))


def batch_key(items: list[PushItem], kind: str) -> str:
    """One idempotency key for a batch: UUIDv5 over the items' keys (order-independent)."""
    return str(uuid.uuid5(NAMESPACE, f"square:{kind}:" + ",".join(sorted(i.idempotency_key for i in items))))


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def _failed(item: PushItem, error: IntegrationError) -> PushResult:
    return PushResult(record_id=item.record_id, outcome="failed", external_id=item.external_id, error=error)


async def push_customer(api: SquareApi, auth: VenueAuth, item: PushItem) -> PushResult:
    """Create (POST, idempotency_key) or update (PUT, with version when known) one customer."""
    fields = {k: v for k, v in item.payload.items() if k not in _READ_ONLY}
    try:
        if item.external_id is None:
            body = {k: v for k, v in fields.items() if k != "version"}
            payload = await api.call(auth, "POST", "/customers", operation="create_customer",
                                     body={**body, "idempotency_key": item.idempotency_key})
            customer = object_of(payload, "customer", operation="create_customer")
            return PushResult(item.record_id, "created", str(customer["id"]), customer)
        customer = await _update_customer(api, auth, item.external_id, fields)
    except REFUSED as exc:
        return _failed(item, exc)
    return PushResult(item.record_id, "updated", str(customer["id"]), customer)


async def _update_customer(
    api: SquareApi, auth: VenueAuth, customer_id: str, fields: dict[str, Any]
) -> dict[str, Any]:
    path = f"/customers/{path_id(customer_id)}"
    try:
        payload = await api.call(auth, "PUT", path, operation="update_customer", body=fields)
    except VersionConflictError:
        current = await api.call(auth, "GET", path, operation="get_customer")
        version = object_of(current, "customer", operation="get_customer").get("version")
        payload = await api.call(auth, "PUT", path, operation="update_customer",
                                 body={**fields, "version": version})
    return object_of(payload, "customer", operation="update_customer")


async def fetch_order(api: SquareApi, auth: VenueAuth, order_id: str) -> dict[str, Any] | None:
    """One order by id (POST /v2/orders/batch-retrieve); None when Square has none."""
    payload = await api.call(auth, "POST", "/orders/batch-retrieve", operation="retrieve_orders",
                             body={"order_ids": [order_id]})
    orders = items_of(payload, "orders", operation="retrieve_orders")
    return next((o for o in orders if o.get("id") == order_id), None)


async def push_order(
    api: SquareApi, auth: VenueAuth, item: PushItem, *, location_id: str | None
) -> PushResult:
    """Create (POST /v2/orders) or update (PUT /v2/orders/{id}, with version) one order."""
    order = {k: v for k, v in item.payload.items() if k not in _READ_ONLY}
    try:
        if item.external_id is None:
            if not order.get("location_id"):
                if location_id is None:
                    raise ValidationError("square order has no location_id and the account has no location")
                order["location_id"] = location_id
            payload = await api.call(auth, "POST", "/orders", operation="create_order",
                                     body={"order": order, "idempotency_key": item.idempotency_key})
            created = object_of(payload, "order", operation="create_order")
            return PushResult(item.record_id, "created", str(created["id"]), created)
        updated = await _update_order(api, auth, item, order)
    except REFUSED as exc:
        return _failed(item, exc)
    return PushResult(item.record_id, "updated", str(updated["id"]), updated)


async def _update_order(
    api: SquareApi, auth: VenueAuth, item: PushItem, order: dict[str, Any]
) -> dict[str, Any]:
    assert item.external_id is not None
    path, key = f"/orders/{path_id(item.external_id)}", item.idempotency_key
    for attempt in range(2):
        if attempt or order.get("version") is None:
            current = await fetch_order(api, auth, item.external_id)
            if current is None:
                raise ValidationError(f"square order {item.external_id} does not exist")
            order = {**order, "version": current.get("version"),
                     "location_id": order.get("location_id") or current.get("location_id")}
            key = retry_key(item.idempotency_key, "version") if attempt else key
        try:
            payload = await api.call(auth, "PUT", path, operation="update_order",
                                     body={"order": order, "idempotency_key": key})
        except VersionConflictError:
            if attempt:
                raise
            continue
        except IdempotencyKeyReusedError:
            # The key was spent on this very update by an earlier delivery whose answer was
            # lost (the body differs only in the version read since): it has landed.
            current = await fetch_order(api, auth, item.external_id)
            if current is None:
                raise
            return current
        return object_of(payload, "order", operation="update_order")
    raise AssertionError("unreachable")


def inventory_change(payload: dict[str, Any]) -> dict[str, Any]:
    """A change for batch-create: given whole, or a physical count wrapped as one."""
    if "type" in payload:
        return payload
    count = {"state": "IN_STOCK", **payload}
    if not count.get("occurred_at"):
        # Square requires it, and it must not be "now": a replay with a new time would be a
        # changed request under the same idempotency key.
        raise ValidationError("square inventory count has no occurred_at")
    return {"type": "PHYSICAL_COUNT", "physical_count": count}


def _change_id(change: dict[str, Any]) -> str:
    detail = change.get("physical_count") or change.get("adjustment") or {}
    place = {**detail, "location_id": detail.get("location_id") or detail.get("to_location_id")}
    if change.get("type") == "ADJUSTMENT":
        place["state"] = detail.get("to_state")
    return inventory_external_id(place)


async def push_inventory(api: SquareApi, auth: VenueAuth, items: list[PushItem]) -> list[PushResult]:
    """Up to 100 changes in one batch-create; a change Square names as bad fails alone."""
    results: dict[str, PushResult] = {}
    pending: list[tuple[PushItem, dict[str, Any]]] = []
    for item in items:
        try:
            pending.append((item, inventory_change(item.payload)))
        except ValidationError as exc:
            results[item.record_id] = _failed(item, exc)
    for _ in range(3):  # each round drops the changes Square named, then resends the rest
        if not pending:
            break
        try:
            counts = await _batch_change(api, auth, pending)
        except ValidationError as exc:
            bad = {int(m) for m in _CHANGE_INDEX.findall(str(exc)) if int(m) < len(pending)}
            for index, (item, _change) in enumerate(pending):
                if index in bad or not bad:
                    results[item.record_id] = _failed(item, exc)
            pending = [p for i, p in enumerate(pending) if bad and i not in bad]
            continue
        for item, change in pending:
            external_id = _change_id(change)
            results[item.record_id] = PushResult(
                item.record_id, "updated", external_id, counts.get(external_id))
        pending = []
    for item, _change in pending:
        results[item.record_id] = _failed(item, ValidationError("square refused the inventory batch"))
    return [results[item.record_id] for item in items]


async def _batch_change(
    api: SquareApi, auth: VenueAuth, pending: list[tuple[PushItem, dict[str, Any]]]
) -> dict[str, dict[str, Any]]:
    body = {
        "idempotency_key": batch_key([item for item, _ in pending], "inventory"),
        "changes": [change for _, change in pending],
        "ignore_unchanged_counts": True,
    }
    payload = await api.call(auth, "POST", "/inventory/changes/batch-create",
                             operation="batch_change_inventory", body=body)
    counts = items_of(payload, "counts", operation="batch_change_inventory")
    return {inventory_external_id(c): c for c in counts if c.get("catalog_object_id")}
