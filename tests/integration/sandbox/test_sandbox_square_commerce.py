"""Square orders, inventory, locations, OAuth and webhooks in the sandbox, through ``squareup``."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from square.core.api_error import ApiError
from square.utils.webhooks_helper import verify_signature

from sandbox.square import signature
from tests.integration.sandbox.receiver import webhook_receiver
from tests.integration.sandbox.test_sandbox_square_customers import NO_RETRY, sdk, square_account

# providers.md 2.7: the official vector from Square's SDK tests
VECTOR_KEY = "Ibxx_5AKakO-3qeNVR61Dw"
VECTOR_URL = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9"
VECTOR_BODY = (
    '{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":'
    '"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z","data":'
    '{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}'
)
VECTOR_SIGNATURE = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4="


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One httpx client for the SDK, closed after the test."""
    with httpx.Client(timeout=10) as client:
        yield client


def _line(quantity: str, amount: int) -> dict[str, Any]:
    return {"name": "Ticket", "quantity": quantity, "base_price_money": {"amount": amount, "currency": "USD"}}


def test_merchant_and_its_one_location(sandbox_server: Any, http: httpx.Client) -> None:
    """``merchants/me`` answers the registered merchant id; the account starts with one location."""
    merchant_id = f"M{uuid.uuid4().hex[:12].upper()}"
    _, token = square_account(sandbox_server, merchant_id=merchant_id)
    client = sdk(sandbox_server, http, token)
    merchant = client.merchants.get(merchant_id="me", request_options=NO_RETRY).merchant
    locations = client.locations.list(request_options=NO_RETRY).locations or []
    assert merchant is not None and merchant_id == merchant.id
    assert 1 == len(locations) and merchant.main_location_id == locations[0].id


def test_order_totals_replay_and_incremental_search(sandbox_server: Any, http: httpx.Client) -> None:
    """Orders total their lines, replay by key, and a search on ``updated_at`` sees only later orders."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    location = (client.locations.list(request_options=NO_RETRY).locations or [])[0].id
    assert location is not None
    key = uuid.uuid4().hex
    order = {"location_id": location, "line_items": [_line("2", 1250)]}
    first = client.orders.create(order=order, idempotency_key=key, request_options=NO_RETRY).order
    replay = client.orders.create(order=order, idempotency_key=key, request_options=NO_RETRY).order
    assert first is not None and replay is not None and first.total_money is not None
    assert (first.id, 2500) == (replay.id, first.total_money.amount)
    assert first.updated_at is not None
    later = client.orders.create(
        order={"location_id": location, "line_items": [_line("1", 500)]}, request_options=NO_RETRY
    ).order
    assert later is not None
    found = client.orders.search(
        location_ids=[location],
        request_options=NO_RETRY,
        limit=10,
        query={
            "filter": {"date_time_filter": {"updated_at": {"start_at": later.updated_at}}},
            "sort": {"sort_field": "UPDATED_AT", "sort_order": "ASC"},
        },
    )
    assert [later.id] == [o.id for o in found.orders or []]


def test_order_needs_a_location_and_string_quantities(sandbox_server: Any, http: httpx.Client) -> None:
    """No ``location_id`` is MISSING_REQUIRED_PARAMETER; a numeric quantity is EXPECTED_STRING."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    with pytest.raises(ApiError) as missing:
        client.orders.create(order={"line_items": [_line("1", 100)]}, request_options=NO_RETRY)  # type: ignore[typeddict-item]
    assert (400, "MISSING_REQUIRED_PARAMETER", "order.location_id") == (
        missing.value.status_code,
        missing.value.errors[0].code,
        missing.value.errors[0].field,
    )
    location = (client.locations.list(request_options=NO_RETRY).locations or [])[0].id
    bad_line: Any = {"name": "Ticket", "quantity": 1, "base_price_money": {"amount": 100, "currency": "USD"}}
    with pytest.raises(ApiError) as typed:
        client.orders.create(
            order={"location_id": location, "line_items": [bad_line]}, request_options=NO_RETRY
        )
    assert (400, "EXPECTED_STRING") == (typed.value.status_code, typed.value.errors[0].code)


def _count(location: str, item: str, quantity: str) -> dict[str, Any]:
    return {
        "type": "PHYSICAL_COUNT",
        "physical_count": {
            "catalog_object_id": item,
            "location_id": location,
            "state": "IN_STOCK",
            "quantity": quantity,
            "occurred_at": "2025-01-01T00:00:00Z",
        },
    }


def test_inventory_batches_of_at_most_100_and_counts(sandbox_server: Any, http: httpx.Client) -> None:
    """100 changes apply, 101 are refused whole, and counts read back with ``updated_after``."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    location = (client.locations.list(request_options=NO_RETRY).locations or [])[0].id
    assert location is not None
    changes: Any = [_count(location, f"ITEM{i}", str(i)) for i in range(100)]
    done = client.inventory.batch_create_changes(
        idempotency_key=uuid.uuid4().hex, changes=changes, request_options=NO_RETRY
    )
    assert 100 == len(done.counts or [])
    with pytest.raises(ApiError) as too_many:
        client.inventory.batch_create_changes(
            idempotency_key=uuid.uuid4().hex, changes=[*changes, changes[0]], request_options=NO_RETRY
        )
    assert (400, "ARRAY_LENGTH_TOO_LONG") == (too_many.value.status_code, too_many.value.errors[0].code)
    stamp = (done.counts or [])[0].calculated_at
    adjust: Any = [
        {
            "type": "ADJUSTMENT",
            "adjustment": {
                "catalog_object_id": "ITEM7",
                "location_id": location,
                "from_state": "IN_STOCK",
                "to_state": "WASTE",
                "quantity": "2",
                "occurred_at": "2025-01-01T00:00:00Z",
            },
        }
    ]
    client.inventory.batch_create_changes(
        idempotency_key=uuid.uuid4().hex, changes=adjust, request_options=NO_RETRY
    )
    later = list(client.inventory.batch_get_counts(updated_after=stamp, request_options=NO_RETRY))
    assert {("ITEM7", "IN_STOCK", "5"), ("ITEM7", "WASTE", "2")} == {
        (c.catalog_object_id, c.state, c.quantity) for c in later
    }


def test_oauth_refresh_keeps_the_refresh_token_and_checks_the_client(
    sandbox_server: Any, http: httpx.Client
) -> None:
    """A refresh answers a working access token and the same refresh token; a wrong secret is 401."""
    refresh = f"sq-refresh-{uuid.uuid4().hex}"
    square_account(sandbox_server, refresh_token=refresh, merchant_id="MREFRESH1")
    oauth = sdk(sandbox_server, http, "unused").o_auth
    granted = oauth.obtain_token(
        client_id=sandbox_server.square_client_id,
        client_secret=sandbox_server.square_client_secret,
        grant_type="refresh_token",
        refresh_token=refresh,
        request_options=NO_RETRY,
    )
    assert (refresh, "MREFRESH1", "bearer") == (
        granted.refresh_token,
        granted.merchant_id,
        granted.token_type,
    )
    assert granted.access_token is not None
    merchant = sdk(sandbox_server, http, granted.access_token).merchants.get(
        merchant_id="me", request_options=NO_RETRY
    )
    assert merchant.merchant is not None and "MREFRESH1" == merchant.merchant.id
    with pytest.raises(ApiError) as caught:
        oauth.obtain_token(
            client_id=sandbox_server.square_client_id,
            client_secret="wrong",
            grant_type="refresh_token",
            refresh_token=refresh,
            request_options=NO_RETRY,
        )
    assert (401, "UNAUTHORIZED") == (caught.value.status_code, caught.value.errors[0].code)


def test_signer_matches_the_official_vector() -> None:
    """The sandbox's signer reproduces Square's published test vector."""
    assert VECTOR_SIGNATURE == signature(VECTOR_KEY, VECTOR_URL, VECTOR_BODY.encode())
    assert verify_signature(
        request_body=VECTOR_BODY,
        signature_header=VECTOR_SIGNATURE,
        signature_key=VECTOR_KEY,
        notification_url=VECTOR_URL,
    )


def test_sent_webhook_verifies_with_the_sdk_helper(sandbox_server: Any) -> None:
    """A webhook the sandbox sends passes ``square.utils.webhooks_helper.verify_signature``."""
    name, _ = square_account(sandbox_server, merchant_id="MHOOK1")
    event = {"type": "customer.created", "data": {"type": "customer", "id": "C1", "object": {"customer": {}}}}
    with webhook_receiver() as receiver:
        url = receiver.url + "/webhooks/square"
        answer = sandbox_server.control(
            "POST", "/_sandbox/webhooks/square", {"account": name, "event": event, "url": url}
        )
    assert 200 == answer["status"]
    [(_, headers, body)] = receiver.requests
    key = sandbox_server.square_webhook_signature_key
    assert verify_signature(
        request_body=body.decode(),
        signature_header=headers["x-square-hmacsha256-signature"],
        signature_key=key,
        notification_url=url,
    )
    independent = base64.b64encode(
        hmac.new(key.encode(), url.encode() + body, hashlib.sha256).digest()
    ).decode()
    assert independent == headers["x-square-hmacsha256-signature"]
    envelope = json.loads(body)
    assert ("MHOOK1", "customer.created", "C1") == (
        envelope["merchant_id"],
        envelope["type"],
        envelope["data"]["id"],
    )
    assert {"event_id", "created_at"} <= set(envelope)
