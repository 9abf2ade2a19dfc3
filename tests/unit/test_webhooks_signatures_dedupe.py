"""Webhook dedupe keys (CONTRACT section 6): the provider's event id, else the body's SHA-256."""

from __future__ import annotations

import hashlib
import json

from providers import webhooks as w


def test_stripe_event_id() -> None:
    """Stripe dedupes on the event id."""
    assert "evt_1" == w.dedupe_key("stripe", b'{"id":"evt_1","object":"event"}')


def test_square_event_id() -> None:
    """Square dedupes on event_id."""
    assert "e-1" == w.dedupe_key("square", b'{"merchant_id":"M","event_id":"e-1"}')


def test_quickbooks_cloudevents_ids() -> None:
    """QuickBooks CloudEvents dedupe on each event's id."""
    body = json.dumps([{"specversion": "1.0", "id": "a"}, {"specversion": "1.0", "id": "b"}]).encode()
    assert ["a", "b"] == w.dedupe_keys("quickbooks", body)
    single = json.dumps([{"specversion": "1.0", "id": "a"}]).encode()
    assert "a" == w.dedupe_key("quickbooks", single)


def test_body_digest_fallbacks() -> None:
    """Mailchimp, classic QuickBooks and unreadable bodies dedupe on the body's SHA-256."""
    for provider, body in [
        ("mailchimp", b"type=subscribe&data%5Bemail%5D=a%40b.c"),
        ("quickbooks", b'{"eventNotifications":[]}'),
        ("stripe", b"not json"),
        ("square", b'{"event_id": 5}'),
    ]:
        assert hashlib.sha256(body).hexdigest() == w.dedupe_key(provider, body)
