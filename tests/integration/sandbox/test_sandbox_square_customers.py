"""Square customers in the sandbox, driven by the official ``squareup`` SDK."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from square import Square
from square.core.api_error import ApiError

NO_RETRY: Any = {"max_retries": 0}


def square_account(sandbox: Any, **oauth: Any) -> tuple[str, str]:
    """Register a fresh Square account; returns (account name, its API access token)."""
    name, token = f"venue-{uuid.uuid4().hex[:8]}", f"EAAAsandbox{uuid.uuid4().hex}"
    payload: dict[str, Any] = {"provider": "square", "account": name, "api_key": token}
    if oauth:
        payload["oauth"] = oauth
    sandbox.control("POST", "/_sandbox/accounts", payload)
    return name, token


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """One httpx client for the SDK, closed after the test."""
    with httpx.Client(timeout=10) as client:
        yield client


def sdk(sandbox: Any, http: httpx.Client, token: str) -> Square:
    """The official SDK pointed at the sandbox (providers.md section 6)."""
    return Square(token=token, base_url=f"{sandbox.url}/square", httpx_client=http)


def test_create_get_and_sparse_update_bump_the_version(sandbox_server: Any, http: httpx.Client) -> None:
    """A created customer reads back; a sparse PUT changes one field and bumps ``version``."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    created = client.customers.create(
        given_name="Ada", email_address="ada@example.com", request_options=NO_RETRY
    )
    customer = created.customer
    assert customer is not None and customer.id is not None
    assert (0, "Ada") == (customer.version, customer.given_name)
    updated = client.customers.update(
        customer_id=customer.id, family_name="Lovelace", version=0, request_options=NO_RETRY
    ).customer
    assert updated is not None
    assert (1, "Ada", "Lovelace") == (updated.version, updated.given_name, updated.family_name)
    fetched = client.customers.get(customer_id=customer.id, request_options=NO_RETRY).customer
    assert fetched is not None and "Lovelace" == fetched.family_name
    assert fetched.updated_at is not None and customer.updated_at is not None
    assert fetched.updated_at > customer.updated_at


def test_stale_version_is_a_conflict(sandbox_server: Any, http: httpx.Client) -> None:
    """An update carrying an old ``version`` is refused with Square's error body."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    customer = client.customers.create(given_name="Bo", request_options=NO_RETRY).customer
    assert customer is not None and customer.id is not None
    client.customers.update(customer_id=customer.id, note="first", version=0, request_options=NO_RETRY)
    with pytest.raises(ApiError) as caught:
        client.customers.update(customer_id=customer.id, note="second", version=0, request_options=NO_RETRY)
    assert 409 == caught.value.status_code
    assert ("INVALID_REQUEST_ERROR", "CONFLICT") == (
        caught.value.errors[0].category,
        caught.value.errors[0].code,
    )


def test_list_walks_every_page_with_cursors(sandbox_server: Any, http: httpx.Client) -> None:
    """Five customers come back over three pages of two, in creation order."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    names = [f"Guest {i}" for i in range(5)]
    for name in names:
        client.customers.create(given_name=name, request_options=NO_RETRY)
    pager = client.customers.list(limit=2, request_options=NO_RETRY)
    pages = [[c.given_name for c in page.items] for page in pager.iter_pages()]
    assert [names[0:2], names[2:4], names[4:5]] == pages


def test_limit_outside_1_to_100_is_rejected(sandbox_server: Any, http: httpx.Client) -> None:
    """``limit`` 101 answers 400 VALUE_TOO_HIGH naming the field."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    with pytest.raises(ApiError) as caught:
        client.customers.list(limit=101, request_options=NO_RETRY)
    assert (400, "VALUE_TOO_HIGH", "limit") == (
        caught.value.status_code,
        caught.value.errors[0].code,
        caught.value.errors[0].field,
    )


def test_idempotency_key_replays_and_rejects_a_changed_request(
    sandbox_server: Any, http: httpx.Client
) -> None:
    """The same key and body return the first customer; a changed body is IDEMPOTENCY_KEY_REUSED."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    key = uuid.uuid4().hex
    first = client.customers.create(idempotency_key=key, given_name="Cy", request_options=NO_RETRY).customer
    again = client.customers.create(idempotency_key=key, given_name="Cy", request_options=NO_RETRY).customer
    assert first is not None and again is not None
    assert first.id == again.id
    with pytest.raises(ApiError) as caught:
        client.customers.create(idempotency_key=key, given_name="Di", request_options=NO_RETRY)
    assert (400, "IDEMPOTENCY_KEY_REUSED") == (caught.value.status_code, caught.value.errors[0].code)
    listed = list(client.customers.list(request_options=NO_RETRY))
    assert 1 == len(listed)


def test_unknown_parameter_and_missing_fields_are_400(sandbox_server: Any, http: httpx.Client) -> None:
    """An unknown body field is BAD_REQUEST naming it; no name field at all is MISSING_REQUIRED_PARAMETER."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    with pytest.raises(ApiError) as unknown:
        client.customers.create(
            given_name="Ed",
            request_options={
                "max_retries": 0,
                "additional_body_parameters": {"favourite_colour": "blue"},
            },
        )
    error = unknown.value.errors[0]
    assert (400, "INVALID_REQUEST_ERROR", "BAD_REQUEST", "favourite_colour") == (
        unknown.value.status_code,
        error.category,
        error.code,
        error.field,
    )
    with pytest.raises(ApiError) as missing:
        client.customers.create(note="no name", request_options=NO_RETRY)
    assert (400, "MISSING_REQUIRED_PARAMETER") == (missing.value.status_code, missing.value.errors[0].code)


def test_unknown_customer_is_404(sandbox_server: Any, http: httpx.Client) -> None:
    """A customer id the account does not have answers 404 NOT_FOUND."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    with pytest.raises(ApiError) as caught:
        client.customers.get(customer_id="NOPE", request_options=NO_RETRY)
    assert (404, "NOT_FOUND") == (caught.value.status_code, caught.value.errors[0].code)


def test_unknown_and_expired_tokens_are_401(sandbox_server: Any, http: httpx.Client) -> None:
    """An unknown token is UNAUTHORIZED; a registered but expired one is ACCESS_TOKEN_EXPIRED."""
    with pytest.raises(ApiError) as unknown:
        sdk(sandbox_server, http, "EAAAnot-a-token").locations.list(request_options=NO_RETRY)
    assert (401, "AUTHENTICATION_ERROR", "UNAUTHORIZED") == (
        unknown.value.status_code,
        unknown.value.errors[0].category,
        unknown.value.errors[0].code,
    )
    expired = f"EAAAexpired{uuid.uuid4().hex}"
    square_account(sandbox_server, access_token=expired, expires_at="2020-01-01T00:00:00Z")
    with pytest.raises(ApiError) as old:
        sdk(sandbox_server, http, expired).locations.list(request_options=NO_RETRY)
    assert (401, "ACCESS_TOKEN_EXPIRED") == (old.value.status_code, old.value.errors[0].code)


def test_past_ten_requests_a_second_is_429(sandbox_server: Any, http: httpx.Client) -> None:
    """The default 10/s per account answers RATE_LIMITED once the window is full."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    answered = 0
    with pytest.raises(ApiError) as caught:
        for _ in range(50):
            client.locations.list(request_options=NO_RETRY)
            answered += 1
    assert (429, "RATE_LIMIT_ERROR", "RATE_LIMITED") == (
        caught.value.status_code,
        caught.value.errors[0].category,
        caught.value.errors[0].code,
    )
    assert answered >= 10


def just_after(stamp: str) -> str:
    """The RFC 3339 millisecond right after ``stamp`` (Square's timestamps are milliseconds)."""
    moment = datetime.fromisoformat(stamp.replace("Z", "+00:00")) + timedelta(milliseconds=1)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def test_search_by_updated_at_returns_only_later_changes(sandbox_server: Any, http: httpx.Client) -> None:
    """Of two customers, only the one updated after the cursor comes back from an ``updated_at`` search."""
    client = sdk(sandbox_server, http, square_account(sandbox_server)[1])
    first = client.customers.create(given_name="Changed", request_options=NO_RETRY).customer
    second = client.customers.create(given_name="Untouched", request_options=NO_RETRY).customer
    assert first is not None and first.id is not None and second is not None and second.updated_at is not None
    cursor = just_after(second.updated_at)
    client.customers.update(customer_id=first.id, note="later", request_options=NO_RETRY)
    found = client.customers.search(
        query={"filter": {"updated_at": {"start_at": cursor}}}, request_options=NO_RETRY
    ).customers
    assert [first.id] == [c.id for c in found or []]
