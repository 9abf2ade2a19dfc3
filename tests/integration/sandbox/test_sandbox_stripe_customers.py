"""The Stripe sandbox driven by the official `stripe` SDK: customers, paging, errors, limits."""

from __future__ import annotations

import base64
import json
import urllib.request
import uuid
from typing import Any

import pytest
import requests
import stripe

from tests.integration.sandbox.stripe_helpers import stripe_account, stripe_client


def test_create_retrieve_update_delete_customer(sandbox_server: Any) -> None:
    """A customer round-trips nested address and metadata, updates, and deletes."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    created = client.v1.customers.create(
        params={
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "address": {"line1": "1 Main St", "city": "London", "country": "GB"},
            "metadata": {"platform_id": "p-1", "tier": "gold"},
        }
    )
    assert created.id.startswith("cus_")
    assert {
        "city": "London",
        "country": "GB",
        "line1": "1 Main St",
        "line2": None,
        "postal_code": None,
        "state": None,
    } == created.address.to_dict()
    updated = client.v1.customers.update(
        created.id, params={"phone": "+442071234567", "metadata": {"tier": ""}}
    )
    assert ("+442071234567", {"platform_id": "p-1"}) == (updated.phone, updated.metadata.to_dict())
    assert "Ada Lovelace" == client.v1.customers.retrieve(created.id).name
    deleted = client.v1.customers.delete(created.id)
    assert (created.id, True) == (deleted.id, deleted.deleted)


def test_list_pages_newest_first_across_pages(sandbox_server: Any) -> None:
    """Twenty-five customers come back newest first over three pages of ten."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    ids = [client.v1.customers.create(params={"email": f"c{i}@example.com"}).id for i in range(25)]
    first = client.v1.customers.list(params={"limit": 10})
    assert (list(reversed(ids))[:10], True) == ([c.id for c in first.data], first.has_more)
    everything = [c.id for c in first.auto_paging_iter()]
    assert list(reversed(ids)) == everything
    before = client.v1.customers.list(params={"limit": 3, "ending_before": ids[10]})
    assert ids[13:10:-1] == [c.id for c in before.data]
    only = client.v1.customers.list(params={"email": "c7@example.com"})
    assert [ids[7]] == [c.id for c in only.data]


def test_created_filter_selects_by_creation_time(sandbox_server: Any) -> None:
    """`created[gt]` excludes customers created at or before the bound."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    created = client.v1.customers.create(params={"email": "t@example.com"}).created
    assert [] == client.v1.customers.list(params={"created": {"gt": created}}).data
    assert 1 == len(client.v1.customers.list(params={"created": {"gte": created}}).data)


def test_idempotent_replay_returns_first_response(sandbox_server: Any) -> None:
    """The same Idempotency-Key replays the first customer and creates nothing new."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    idem = str(uuid.uuid4())
    first = client.v1.customers.create(params={"email": "i@example.com"}, options={"idempotency_key": idem})
    again = client.v1.customers.create(params={"email": "i@example.com"}, options={"idempotency_key": idem})
    assert first.id == again.id
    assert "true" == again.last_response.headers.get("Idempotent-Replayed")
    assert 1 == len(client.v1.customers.list().data)


def test_idempotency_key_reuse_with_other_parameters_is_refused(sandbox_server: Any) -> None:
    """Reusing a key with different parameters raises the SDK's IdempotencyError."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    idem = str(uuid.uuid4())
    client.v1.customers.create(params={"email": "a@example.com"}, options={"idempotency_key": idem})
    with pytest.raises(stripe.IdempotencyError) as caught:
        client.v1.customers.create(params={"email": "b@example.com"}, options={"idempotency_key": idem})
    assert (400, "idempotency_error") == (caught.value.http_status, caught.value.json_body["error"]["type"])


def test_unknown_parameter_is_a_400_naming_it(sandbox_server: Any) -> None:
    """An unknown parameter raises InvalidRequestError with code parameter_unknown."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.customers.create(params={"email": "a@example.com", "favourite_colour": "red"})  # type: ignore[typeddict-unknown-key]
    error = caught.value
    assert (400, "parameter_unknown", "favourite_colour") == (error.http_status, error.code, error.param)
    assert "Received unknown parameter: favourite_colour" == error.user_message
    with pytest.raises(stripe.InvalidRequestError) as nested:
        client.v1.customers.create(params={"address": {"planet": "Mars"}})  # type: ignore[typeddict-unknown-key]
    assert "address[planet]" == nested.value.param


def test_unknown_id_is_a_404_resource_missing(sandbox_server: Any) -> None:
    """Retrieving a customer that does not exist raises a 404 resource_missing."""
    _, key = stripe_account(sandbox_server)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe_client(sandbox_server, key).v1.customers.retrieve("cus_doesnotexist")
    assert (404, "resource_missing") == (caught.value.http_status, caught.value.code)
    assert "No such customer: 'cus_doesnotexist'" == caught.value.user_message


def test_unknown_key_is_a_401(sandbox_server: Any) -> None:
    """A key the sandbox never issued raises the SDK's AuthenticationError."""
    with pytest.raises(stripe.AuthenticationError) as caught:
        stripe_client(sandbox_server, "sk_test_unknown0000000000001234").v1.customers.list()
    assert 401 == caught.value.http_status
    assert caught.value.user_message.startswith("Invalid API Key provided: sk_test_")
    assert caught.value.user_message.endswith("1234")


def test_basic_auth_with_the_key_as_user_works(sandbox_server: Any) -> None:
    """`-u sk_...:` (Basic auth) reaches the same account as Bearer auth."""
    _, key = stripe_account(sandbox_server)
    request = urllib.request.Request(
        f"{sandbox_server.url}/stripe/v1/customers?limit=1",
        headers={"Authorization": "Basic " + base64.b64encode(f"{key}:".encode()).decode()},
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        assert {"object": "list", "data": [], "has_more": False, "url": "/v1/customers"} == json.loads(
            response.read()
        )


def test_test_keys_get_429_past_25_per_second(sandbox_server: Any) -> None:
    """A test key is refused with RateLimitError once 25 calls fall in one second."""
    name, key = stripe_account(sandbox_server, live=False)
    client = stripe_client(sandbox_server, key)
    with pytest.raises(stripe.RateLimitError) as caught:
        for _ in range(200):
            client.v1.customers.list(params={"limit": 1})
    assert (429, "rate_limit") == (caught.value.http_status, caught.value.json_body["error"]["code"])
    calls = sandbox_server.control("GET", f"/_sandbox/calls?provider=stripe&account={name}")["calls"]
    ok_times = [c["at"] for c in calls if c["status"] == 200]
    assert max(sum(1 for t in ok_times if s <= t < s + 1.0) for s in ok_times) <= 25
    assert 429 == calls[-1]["status"]


def test_live_keys_allow_more_than_25_per_second(sandbox_server: Any) -> None:
    """A live key keeps going past 25 calls a second (its limit is 100)."""
    name, key = stripe_account(sandbox_server, live=True)
    client = stripe_client(sandbox_server, key)
    for _ in range(40):
        client.v1.customers.list(params={"limit": 1})
    calls = sandbox_server.control("GET", f"/_sandbox/calls?provider=stripe&account={name}")["calls"]
    assert [200] * 40 == [c["status"] for c in calls]


def test_unrecognized_url_is_stripes_404(sandbox_server: Any) -> None:
    """A path Stripe does not have answers Stripe's own 404 body."""
    _, key = stripe_account(sandbox_server)
    answer = requests.get(
        f"{sandbox_server.url}/stripe/v1/nothing", headers={"Authorization": f"Bearer {key}"}, timeout=5
    )
    body = answer.json()
    assert (404, "invalid_request_error") == (answer.status_code, body["error"]["type"])
    assert body["error"]["message"].startswith("Unrecognized request URL (GET: /v1/nothing)")


def test_search_finds_by_email(sandbox_server: Any) -> None:
    """Customer search answers a search_result for an email query."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    wanted = client.v1.customers.create(params={"email": "find.me@example.com"})
    client.v1.customers.create(params={"email": "other@example.com"})
    found = client.v1.customers.search(params={"query": "email:'find.me@example.com'"})
    assert [wanted.id] == [c.id for c in found.data]
