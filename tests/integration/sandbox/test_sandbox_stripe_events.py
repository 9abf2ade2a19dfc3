"""Stripe events for incremental pulls, webhook endpoints, and webhooks that verify."""

from __future__ import annotations

import time
from typing import Any

import pytest
import stripe

from tests.integration.sandbox.receiver import webhook_receiver
from tests.integration.sandbox.stripe_helpers import stripe_account, stripe_client


def test_events_record_creates_and_updates_with_previous_attributes(sandbox_server: Any) -> None:
    """Creating and updating a customer yields customer.created then customer.updated."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    customer = client.v1.customers.create(params={"email": "e@example.com", "name": "Old"})
    client.v1.customers.update(customer.id, params={"name": "New"})
    events = client.v1.events.list().data
    assert ["customer.updated", "customer.created"] == [e.type for e in events]
    assert ("New", {"name": "Old"}) == (
        events[0].data.object.name,
        events[0].data.previous_attributes.to_dict(),
    )
    updated_only = client.v1.events.list(params={"types": ["customer.updated"]}).data
    assert [events[0].id] == [e.id for e in updated_only]
    assert 2 == len(client.v1.events.list(params={"type": "customer.*"}).data)


def test_incremental_pull_sees_only_records_changed_after_the_cursor(sandbox_server: Any) -> None:
    """Events created after a cursor name only the customer changed after it."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    first = client.v1.customers.create(params={"email": "a@example.com"})
    second = client.v1.customers.create(params={"email": "b@example.com"})
    cursor = client.v1.events.list(params={"limit": 1}).data[0].created
    sandbox_server.control("POST", "/_sandbox/clock", {"advance_seconds": 2})
    try:
        client.v1.customers.update(second.id, params={"name": "Changed"})
        later = client.v1.events.list(params={"created": {"gt": cursor}}).data
    finally:
        sandbox_server.control("POST", "/_sandbox/clock", {"advance_seconds": -2})
    assert [("customer.updated", second.id)] == [(e.type, e.data.object.id) for e in later]
    assert first.id not in {e.data.object.id for e in later}


def test_events_older_than_30_days_are_gone(sandbox_server: Any) -> None:
    """Stripe keeps events for 30 days: after that they leave /v1/events."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    event_id = None
    client.v1.customers.create(params={"email": "old@example.com"})
    event_id = client.v1.events.list().data[0].id
    sandbox_server.control("POST", "/_sandbox/clock", {"advance_seconds": 31 * 86400})
    try:
        assert [] == client.v1.events.list().data
        with pytest.raises(stripe.InvalidRequestError):
            client.v1.events.retrieve(event_id)
    finally:
        sandbox_server.control("POST", "/_sandbox/clock", {"advance_seconds": -31 * 86400})


def test_webhook_endpoint_secret_is_shown_once(sandbox_server: Any) -> None:
    """Creating an endpoint returns its whsec_ secret; listing never shows it; delete works."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    endpoint = client.v1.webhook_endpoints.create(
        params={"url": "http://127.0.0.1:8080/webhooks/stripe/v1", "enabled_events": ["*"]}
    )
    assert endpoint.secret.startswith("whsec_")
    listed = client.v1.webhook_endpoints.list().data
    assert [(endpoint.id, None)] == [(e.id, e.to_dict().get("secret")) for e in listed]
    assert client.v1.webhook_endpoints.delete(endpoint.id).deleted
    assert [] == client.v1.webhook_endpoints.list().data


def test_webhook_verifies_with_stripe_construct_event(sandbox_server: Any) -> None:
    """A sent webhook verifies with stripe.Webhook.construct_event and the endpoint's secret."""
    name, key = stripe_account(sandbox_server, webhook_secret="whsec_registered")
    client = stripe_client(sandbox_server, key)
    with webhook_receiver() as receiver:
        secret = client.v1.webhook_endpoints.create(
            params={"url": receiver.url + "/hook", "enabled_events": ["*"]}
        ).secret
        client.v1.customers.create(params={"email": "w@example.com"})
        event = client.v1.events.list().data[0].to_dict()
        answer = sandbox_server.control(
            "POST",
            "/_sandbox/webhooks/stripe",
            {"account": name, "event": event, "url": receiver.url + "/hook"},
        )
    assert {"status": 200, "body": {"received": True}} == answer
    [(_, headers, body)] = receiver.requests
    verified = stripe.Webhook.construct_event(body, headers["stripe-signature"], secret)
    assert (event["id"], "customer.created") == (verified.id, verified.type)
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, headers["stripe-signature"], "whsec_registered")


def test_webhook_signature_matches_providers_md_vector(sandbox_server: Any) -> None:
    """The signature equals the computed example of providers.md 1.8."""
    from sandbox.stripe.plugin import sign

    body = b'{"id":"evt_123","object":"event","type":"customer.created"}'
    expected = "t=1700000000,v1=d4614dbc82e21d983b7993d5e6767485fa5cde0a992683a6f6ebbd300e3614f9"
    assert expected == sign("whsec_test_secret", body, 1700000000)


def test_webhook_uses_registered_secret_until_an_endpoint_is_created(sandbox_server: Any) -> None:
    """Without a created endpoint the registered webhook_secret signs; a stale t is refused."""
    name, _ = stripe_account(sandbox_server, webhook_secret="whsec_registered")
    event = {"id": "evt_1", "object": "event", "type": "customer.created", "data": {"object": {}}}
    with webhook_receiver() as receiver:
        for timestamp in (None, int(time.time()) - 600):
            sandbox_server.control(
                "POST",
                "/_sandbox/webhooks/stripe",
                {"account": name, "event": event, "url": receiver.url, "timestamp": timestamp},
            )
    [(_, fresh, body), (_, stale, _)] = receiver.requests
    assert "evt_1" == stripe.Webhook.construct_event(body, fresh["stripe-signature"], "whsec_registered").id
    with pytest.raises(stripe.SignatureVerificationError):
        stripe.Webhook.construct_event(body, stale["stripe-signature"], "whsec_registered")
