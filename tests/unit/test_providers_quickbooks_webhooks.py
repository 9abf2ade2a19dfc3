"""QuickBooks webhooks, classic and CloudEvents, turned into record changes."""

from __future__ import annotations

import hashlib
import json

import pytest

from providers.quickbooks.webhooks import parse_webhook
from service.errors import DataError

# The computed example of providers.md 3.6.
CLASSIC = (
    b'{"eventNotifications":[{"realmId":"123146096291789","dataChangeEvent":{"entities":'
    b'[{"name":"Customer","id":"1","operation":"Create","lastUpdated":"2025-01-01T00:00:00.000Z"}]}}]}'
)


def cloud_event(event_id: str, kind: str, entity_id: str, realm: str = "9130") -> dict[str, object]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": "intuit.qbo",
        "type": kind,
        "datacontenttype": "application/json",
        "time": "2026-01-02T03:04:05.678Z",
        "intuitentityid": entity_id,
        "intuitaccountid": realm,
        "data": {},
    }


def test_classic_notification_keys_on_the_body_digest() -> None:
    """Classic: event id = SHA-256 of the raw body; each change adds realm, entity, id and op."""
    digest = hashlib.sha256(CLASSIC).hexdigest()
    parsed = parse_webhook(CLASSIC)
    (change,) = parsed.changes
    assert (digest, "123146096291789") == (parsed.event_id, parsed.account)
    assert ("customers", "1", "upserted", None) == (
        change.entity,
        change.external_id,
        change.op,
        change.record,
    )
    assert f"{digest}:123146096291789:Customer:1:Create" == change.event_id


def test_classic_changes_each_get_their_own_key() -> None:
    """Several entities, a delete and a merge: distinct keys; the merged-away id is deleted."""
    body = json.dumps(
        {
            "eventNotifications": [
                {
                    "realmId": "55",
                    "dataChangeEvent": {
                        "entities": [
                            {
                                "name": "Invoice",
                                "id": "10",
                                "operation": "Update",
                                "lastUpdated": "2025-01-01T00:00:00Z",
                            },
                            {
                                "name": "Payment",
                                "id": "11",
                                "operation": "Delete",
                                "lastUpdated": "2025-01-01T00:00:00Z",
                            },
                            {"name": "Customer", "id": "12", "operation": "Merge", "deletedId": "13"},
                            {"name": "Vendor", "id": "14", "operation": "Create"},
                        ]
                    },
                }
            ]
        }
    ).encode()
    changes = parse_webhook(body).changes
    assert [
        ("invoices", "10", "upserted"),
        ("payments", "11", "deleted"),
        ("customers", "12", "upserted"),
        ("customers", "13", "deleted"),
    ] == [(c.entity, c.external_id, c.op) for c in changes]
    assert 4 == len({c.event_id for c in changes})


def test_redelivered_classic_body_repeats_every_key() -> None:
    """The same bytes give the same keys, so a redelivery is deduplicated."""
    assert [c.event_id for c in parse_webhook(CLASSIC).changes] == [
        c.event_id for c in parse_webhook(CLASSIC).changes
    ]


def test_cloud_events_key_on_each_event_id() -> None:
    """CloudEvents: each change keys on its event's id; realm from intuitaccountid."""
    body = json.dumps(
        [
            cloud_event("ev-1", "qbo.customer.created.v1", "21"),
            cloud_event("ev-2", "qbo.invoice.deleted.v1", "22"),
            cloud_event("ev-3", "qbo.vendor.created.v1", "23"),
        ]
    ).encode()
    parsed = parse_webhook(body)
    assert (hashlib.sha256(body).hexdigest(), "9130") == (parsed.event_id, parsed.account)
    assert [("customers", "21", "upserted", "ev-1"), ("invoices", "22", "deleted", "ev-2")] == [
        (c.entity, c.external_id, c.op, c.event_id) for c in parsed.changes
    ]


def test_single_cloud_event_is_keyed_by_its_id() -> None:
    """One CloudEvent: the notification's key is its id (CONTRACT section 6)."""
    parsed = parse_webhook(json.dumps([cloud_event("ev-9", "qbo.payment.updated.v1", "5")]).encode())
    assert ("ev-9", ["payments"]) == (parsed.event_id, [c.entity for c in parsed.changes])


@pytest.mark.parametrize(
    "body",
    [
        b"<xml/>",
        b'{"eventNotifications": [{"realmId": "1"',
        b'{"something": "else"}',
        b'{"eventNotifications": [{"dataChangeEvent": {"entities": []}}]}',
        b'{"eventNotifications": [{"realmId": "1", "dataChangeEvent": ["not", "an", "object"]}]}',
        json.dumps([{"type": "qbo.customer.created.v1", "intuitentityid": "1"}]).encode(),
        json.dumps([cloud_event("ev", "nonsense", "1")]).encode(),
        json.dumps([cloud_event("ev", "qbo.customer.created.v1", "")]).encode(),
    ],
)
def test_unusable_content_is_a_data_error(body: bytes) -> None:
    """Non-JSON, an unknown shape, a missing realm, id or event id raise DataError."""
    with pytest.raises(DataError):
        parse_webhook(body)
