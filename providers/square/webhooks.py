"""Square's webhook envelope turned into record changes (providers.md 2.7).

``{merchant_id, type, event_id, created_at, data: {type, id, object}}``: the dedupe key is
``event_id`` and ``merchant_id`` names the account (the route is app-wide). Customer events
carry the customer, so the change carries the record; order and location events carry only
ids, so ``record`` is None and the daemon fetches the object. An ``inventory.count.updated``
event carries several counts: each becomes its own change, dedupe key
``<event_id>:<external id>``, so a redelivery of the event repeats every key exactly.
Event types we do not sync (payments, refunds, invoices, test notifications) yield no changes.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any, Literal

from providers.base import ParsedWebhook, ProviderRecord, WebhookChange
from service.errors import DataError

_FRACTION = re.compile(r"\.(\d+)")  # Python keeps at most microseconds
_OPS: dict[str, Literal["upserted", "deleted"]] = {
    "created": "upserted", "updated": "upserted", "deleted": "deleted",
}


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 time as an aware datetime (Square sends nanoseconds and ``Z``), else None."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6], value.replace("Z", "+00:00").replace("z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def inventory_external_id(count: dict[str, Any]) -> str:
    """One inventory count's id: catalog object, location and state (Square keys counts so)."""
    state = count.get("state") or "IN_STOCK"
    return f"{count.get('catalog_object_id')}:{count.get('location_id')}:{state}"


def customer_record(customer: dict[str, Any], *, deleted: bool = False) -> ProviderRecord:
    """A pulled or announced Square customer."""
    return ProviderRecord(
        external_id=str(customer["id"]), data=customer,
        version=record_version(customer),
        updated_at=parse_time(customer.get("updated_at")), deleted=deleted,
    )


def record_version(obj: dict[str, Any]) -> str | None:
    """Square's optimistic-concurrency version, else the updated time."""
    return str(obj["version"]) if obj.get("version") is not None else obj.get("updated_at")


def inventory_record(count: dict[str, Any]) -> ProviderRecord:
    """A pulled or announced inventory count."""
    return ProviderRecord(
        external_id=inventory_external_id(count), data=count, version=count.get("calculated_at"),
        updated_at=parse_time(count.get("calculated_at")),
    )


def parse_envelope(body: bytes) -> dict[str, Any]:
    """The envelope as a dict; DataError when it is not one."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise DataError("square webhook body is not JSON") from None
    if not isinstance(payload, dict):
        raise DataError("square webhook body is not a JSON object")
    for name in ("event_id", "type"):
        if not isinstance(payload.get(name), str) or not payload[name]:
            raise DataError(f"square webhook has no {name}")
    if not isinstance(payload.get("data", {}), dict):
        raise DataError("square webhook data is not an object")
    return payload


def parse_webhook(body: bytes) -> ParsedWebhook:
    """Square's envelope as changes; raises DataError for unusable content."""
    envelope = parse_envelope(body)
    event_id, account = envelope["event_id"], envelope.get("merchant_id")
    kind, _, action = envelope["type"].rpartition(".")
    data = envelope.get("data") or {}
    occurred = parse_time(envelope.get("created_at"))
    base = {"event_id": event_id, "occurred_at": occurred, "account": account}
    changes: list[WebhookChange] = []
    if kind == "customer" and action in _OPS:
        changes = [_customer_change(data, action, base)]
    elif kind in ("order", "order.fulfillment") and action in ("created", "updated"):
        changes = [WebhookChange(entity="orders", external_id=_data_id(data), op="upserted", **base)]
    elif kind == "location" and action in ("created", "updated"):
        changes = [WebhookChange(entity="locations", external_id=_data_id(data), op="upserted", **base)]
    elif envelope["type"] == "inventory.count.updated":
        changes = _inventory_changes(data, base)
    return ParsedWebhook(event_id=event_id, changes=changes, account=account)


def _data_id(data: dict[str, Any]) -> str:
    ident = data.get("id")
    if not isinstance(ident, str) or not ident:
        raise DataError("square webhook has no data.id")
    return ident


def _customer_change(data: dict[str, Any], action: str, base: dict[str, Any]) -> WebhookChange:
    obj = data.get("object") or {}
    customer = obj.get("customer") if isinstance(obj, dict) else None
    external_id = _data_id(data)
    record = None
    if isinstance(customer, dict) and customer.get("id"):
        record = customer_record(customer, deleted=action == "deleted")
    return WebhookChange(entity="customers", external_id=external_id, op=_OPS[action], record=record, **base)


def _inventory_changes(data: dict[str, Any], base: dict[str, Any]) -> list[WebhookChange]:
    obj = data.get("object") or {}
    counts = obj.get("inventory_counts") if isinstance(obj, dict) else None
    if not isinstance(counts, list):
        raise DataError("square inventory webhook has no inventory_counts")
    changes = []
    for count in counts:
        if not isinstance(count, dict) or not count.get("catalog_object_id"):
            raise DataError("square inventory webhook has a count without catalog_object_id")
        record = inventory_record(count)
        changes.append(WebhookChange(
            entity="inventory", external_id=record.external_id, op="upserted", record=record,
            **{**base, "event_id": f"{base['event_id']}:{record.external_id}"},
        ))
    return changes
