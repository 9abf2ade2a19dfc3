"""Square webhook envelopes turned into record changes."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from providers.square.webhooks import parse_webhook
from service.errors import DataError

# The official test vector body (providers.md 2.7).
OFFICIAL = (
    b'{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification",'
    b'"event_id":"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z",'
    b'"data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}'
)


def envelope(kind: str, data: dict[str, Any], event_id: str = "evt-1") -> bytes:
    return json.dumps(
        {
            "merchant_id": "MERCHANT1",
            "type": kind,
            "event_id": event_id,
            "created_at": "2025-02-03T04:05:06.123456789Z",
            "data": data,
        }
    ).encode()


def test_customer_event_carries_the_record() -> None:
    """customer.updated yields one upsert with the customer as the record."""
    customer = {"id": "CUST1", "given_name": "Ada", "version": 4, "updated_at": "2025-02-03T04:05:06Z"}
    parsed = parse_webhook(
        envelope("customer.updated", {"type": "customer", "id": "CUST1", "object": {"customer": customer}})
    )
    (change,) = parsed.changes
    assert ("evt-1", "MERCHANT1") == (parsed.event_id, parsed.account)
    assert ("customers", "CUST1", "upserted", "evt-1", "MERCHANT1") == (
        change.entity,
        change.external_id,
        change.op,
        change.event_id,
        change.account,
    )
    assert change.record is not None and ("4", customer) == (change.record.version, change.record.data)
    assert datetime(2025, 2, 3, 4, 5, 6, 123456, tzinfo=UTC) == change.occurred_at


def test_customer_deleted_is_a_delete() -> None:
    """customer.deleted yields a delete."""
    parsed = parse_webhook(
        envelope(
            "customer.deleted", {"type": "customer", "id": "CUST1", "object": {"customer": {"id": "CUST1"}}}
        )
    )
    assert ["deleted"] == [c.op for c in parsed.changes]
    assert parsed.changes[0].record is not None and parsed.changes[0].record.deleted


@pytest.mark.parametrize("kind", ["order.created", "order.updated", "order.fulfillment.updated"])
def test_order_events_carry_ids_only(kind: str) -> None:
    """Order events carry ids only: record None so the daemon fetches the order."""
    data = {
        "type": "order",
        "id": "ORDER1",
        "object": {"order_updated": {"order_id": "ORDER1", "version": 3, "location_id": "L1"}},
    }
    (change,) = parse_webhook(envelope(kind, data)).changes
    assert ("orders", "ORDER1", "upserted", None) == (
        change.entity,
        change.external_id,
        change.op,
        change.record,
    )


def test_inventory_event_gives_one_change_per_count_with_its_own_key() -> None:
    """Each count of inventory.count.updated is a change keyed <event_id>:<external id>."""
    counts = [
        {
            "catalog_object_id": "ITEM1",
            "location_id": "L1",
            "state": "IN_STOCK",
            "quantity": "3",
            "calculated_at": "2025-02-03T04:05:06Z",
        },
        {
            "catalog_object_id": "ITEM2",
            "location_id": "L1",
            "state": "IN_STOCK",
            "quantity": "9",
            "calculated_at": "2025-02-03T04:05:06Z",
        },
    ]
    parsed = parse_webhook(
        envelope(
            "inventory.count.updated",
            {"type": "inventory", "id": "x", "object": {"inventory_counts": counts}},
        )
    )
    assert ["evt-1:ITEM1:L1:IN_STOCK", "evt-1:ITEM2:L1:IN_STOCK"] == [c.event_id for c in parsed.changes]
    assert ["3", "9"] == [c.record.data["quantity"] for c in parsed.changes if c.record]


def test_events_we_do_not_sync_yield_no_changes() -> None:
    """The official test notification parses, with no changes."""
    parsed = parse_webhook(OFFICIAL)
    assert ("ac3ac95b-f97d-458c-a6e6-18981597e05f", "MLEFBHHSJGVHD", []) == (
        parsed.event_id,
        parsed.account,
        parsed.changes,
    )


@pytest.mark.parametrize(
    "body",
    [
        b"<html>",
        b'{"type": "customer.created"',
        b"[1, 2]",
        b'{"type": "customer.created", "data": {}}',
        envelope("order.updated", {"type": "order"}),
        envelope("inventory.count.updated", {"type": "inventory", "object": {}}),
    ],
)
def test_unusable_content_is_a_data_error(body: bytes) -> None:
    """Non-JSON, a missing event_id or a missing id raise DataError."""
    with pytest.raises(DataError):
        parse_webhook(body)
