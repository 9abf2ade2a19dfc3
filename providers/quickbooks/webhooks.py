"""QuickBooks webhooks (both payload formats, providers.md 3.6) turned into record changes.

Both formats carry ids only, so every change has ``record=None`` and the daemon fetches the
object; ``realmId`` / ``intuitaccountid`` names the account (the route is app-wide).

Dedupe keys, one per change so that each change is processed once however often Intuit
redelivers the notification:

- CloudEvents (a JSON array of events): each event's own ``id``. The notification's key is
  that id when the array holds one event, else the SHA-256 of the raw body.
- Classic ``eventNotifications``: the notification's key is the SHA-256 (hex) of the raw body
  (CONTRACT section 6); each change's key is ``<sha256>:<realmId>:<Entity>:<id>:<operation>``,
  so two entities of one notification never share a key while a redelivery of the same bytes
  repeats every key.

A ``Merge`` also announces the merged-away object (``deletedId``) as deleted.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import UTC, datetime
from typing import Any

from providers.base import ParsedWebhook, WebhookChange
from service.errors import DataError

_FRACTION = re.compile(r"\.(\d+)")  # Python keeps at most microseconds
ENTITY_BY_NAME = {"customer": "customers", "invoice": "invoices", "payment": "payments"}
_DELETE_OPS = {"delete", "deleted"}


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 time as an aware datetime (``Z`` or an offset; none means UTC), else None."""
    if not isinstance(value, str) or not value:
        return None
    text = _FRACTION.sub(lambda m: "." + m.group(1)[:6], value.replace("Z", "+00:00"))
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)


def parse_webhook(body: bytes) -> ParsedWebhook:
    """Either format as changes; raises DataError for unusable content."""
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise DataError("quickbooks webhook body is not JSON") from None
    digest = hashlib.sha256(body).hexdigest()
    if isinstance(payload, list):
        return _cloud_events(payload, digest)
    if isinstance(payload, dict) and isinstance(payload.get("eventNotifications"), list):
        return _classic(payload["eventNotifications"], digest)
    raise DataError("quickbooks webhook is neither eventNotifications nor a CloudEvents array")


def _single_account(changes: list[WebhookChange]) -> str | None:
    accounts = {c.account for c in changes}
    return accounts.pop() if len(accounts) == 1 else None


def _cloud_events(events: list[Any], digest: str) -> ParsedWebhook:
    changes: list[WebhookChange] = []
    for event in events:
        if not isinstance(event, dict) or not isinstance(event.get("id"), str) or not event["id"]:
            raise DataError("quickbooks CloudEvent without an id")
        change = _cloud_change(event)
        if change is not None:
            changes.append(change)
    event_id = events[0]["id"] if len(events) == 1 else digest
    return ParsedWebhook(event_id=event_id, changes=changes, account=_single_account(changes))


def _cloud_change(event: dict[str, Any]) -> WebhookChange | None:
    parts = str(event.get("type") or "").split(".")  # qbo.<entity>.<op>.v1
    if len(parts) < 3 or parts[0] != "qbo":
        raise DataError(f"quickbooks CloudEvent {event['id']} has type {event.get('type')!r}")
    entity = ENTITY_BY_NAME.get(parts[1].lower())
    if entity is None:
        return None
    entity_id = event.get("intuitentityid")
    if not isinstance(entity_id, str | int) or str(entity_id) == "":
        raise DataError(f"quickbooks CloudEvent {event['id']} has no intuitentityid")
    account = event.get("intuitaccountid")
    return WebhookChange(
        entity=entity, external_id=str(entity_id),
        op="deleted" if parts[2].lower() in _DELETE_OPS else "upserted",
        event_id=event["id"], occurred_at=parse_time(event.get("time")),
        account=str(account) if account else None,
    )


def _classic(notifications: list[Any], digest: str) -> ParsedWebhook:
    changes: list[WebhookChange] = []
    for notification in notifications:
        if not isinstance(notification, dict):
            raise DataError("quickbooks eventNotification is not an object")
        realm = notification.get("realmId")
        event = notification.get("dataChangeEvent")
        entities = event.get("entities") if isinstance(event, dict) else None
        if not realm or not isinstance(entities, list):
            raise DataError("quickbooks eventNotification without realmId or entities")
        for item in entities:
            changes.extend(_classic_changes(item, str(realm), digest))
    return ParsedWebhook(event_id=digest, changes=changes, account=_single_account(changes))


def _classic_changes(item: Any, realm: str, digest: str) -> list[WebhookChange]:
    if not isinstance(item, dict) or not item.get("name") or item.get("id") in (None, ""):
        raise DataError("quickbooks dataChangeEvent entity without name or id")
    entity = ENTITY_BY_NAME.get(str(item["name"]).lower())
    if entity is None:
        return []
    operation = str(item.get("operation") or "Update")
    occurred = parse_time(item.get("lastUpdated"))
    ids = [(str(item["id"]), "deleted" if operation.lower() in _DELETE_OPS else "upserted")]
    if operation.lower() == "merge" and item.get("deletedId"):
        ids.append((str(item["deletedId"]), "deleted"))
    return [
        WebhookChange(
            entity=entity, external_id=ident, op=op,  # type: ignore[arg-type]
            event_id=f"{digest}:{realm}:{item['name']}:{ident}:{operation}",
            occurred_at=occurred, account=realm,
        )
        for ident, op in ids
    ]
