"""The Stripe client with mocked HTTP: SDK through the helper, error categories, pulls, webhooks."""

from __future__ import annotations

import base64
import json
import re
import string
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses
from hypothesis import given
from hypothesis import strategies as st

from providers.auth import StaticAuth
from providers.base import PushItem
from providers.fake import RecordingGate, fake_limits_for
from providers.http import ProviderHttp
from providers.stripe import StripeClient, encode_params, operation_of
from service.config import Settings
from service.errors import (
    AuthenticationError,
    AuthorizationError,
    DataError,
    NetworkError,
    ProviderError,
    RateLimitError,
    ValidationError,
)
from service.messages import VerifiedWebhook

BASE = "https://api.stripe.test"
CUSTOMERS = re.compile(r"^https://api\.stripe\.test/v1/customers(\?.*)?$")
EVENTS = re.compile(r"^https://api\.stripe\.test/v1/events(\?.*)?$")
AUTH = StaticAuth(provider="stripe", secret="sk_test_abc123", account_id="acct-1")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def gate() -> RecordingGate:
    return RecordingGate()


@pytest.fixture
def client(session: aiohttp.ClientSession, gate: RecordingGate) -> StripeClient:
    settings = Settings(stripe_api_base=BASE, retry_max_delay_seconds=60)
    return StripeClient(
        ProviderHttp(session, limiter=gate, settings=settings, limits_for=fake_limits_for),
        clock=lambda: 1_800_000_000,
    )


def listing(*objects: dict[str, Any], has_more: bool = False) -> dict[str, Any]:
    return {"object": "list", "url": "/v1/x", "has_more": has_more, "data": list(objects)}


def stripe_error(kind: str, code: str = "", message: str = "nope") -> dict[str, Any]:
    return {"error": {"type": kind, "code": code, "message": message}}


async def test_sdk_calls_take_a_test_mode_limiter_token(client: StripeClient, gate: RecordingGate) -> None:
    """An SDK call goes through the gate, keyed by account, with test-mode limits for sk_test_ keys."""
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, payload=listing({"id": "cus_1", "object": "customer", "created": 1}))
        page = await client.pull_page(AUTH, "customers", cursor=None, resume=None, options={})
    assert ["cus_1"] == [r.external_id for r in page.records]
    assert [("stripe", "acct-1")] == [(p, a) for p, a, _ in gate.acquired]
    assert gate.acquired[0][2]["test_mode"] is True


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, stripe_error("invalid_request_error", message="Invalid API Key provided"), AuthenticationError),
        (403, stripe_error("invalid_request_error"), AuthorizationError),
        (400, stripe_error("invalid_request_error", "parameter_unknown"), ValidationError),
        (404, stripe_error("invalid_request_error", "resource_missing"), DataError),
        (402, stripe_error("card_error", "card_declined"), DataError),
        (400, stripe_error("idempotency_error"), DataError),
        (409, stripe_error("api_error", "lock_timeout"), ProviderError),
        (429, stripe_error("invalid_request_error", "rate_limit"), RateLimitError),
        (400, stripe_error("invalid_request_error", "rate_limit"), RateLimitError),
        (500, stripe_error("api_error"), ProviderError),
    ],
)
async def test_error_categories(
    client: StripeClient, status: int, body: dict[str, Any], expected: type
) -> None:
    """Each Stripe error maps to its category with a one-line message naming type and code."""
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, status=status, payload=body)
        with pytest.raises(expected) as caught:
            await client.pull_page(AUTH, "customers", cursor=None, resume=None, options={})
    assert str(caught.value).startswith(f"stripe get /v1/customers: HTTP {status}: ")
    assert "\n" not in str(caught.value)


async def test_sdk_never_retries_by_itself(client: StripeClient) -> None:
    """A 500 is one request (max_network_retries=0): retries are the engine's."""
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, status=500, payload=stripe_error("api_error"), repeat=True)
        with pytest.raises(ProviderError) as caught:
            await client.pull_page(AUTH, "customers", cursor=None, resume=None, options={})
        sent = sum(len(v) for v in mocked.requests.values())
    assert (1, True) == (sent, caught.value.retryable)


@pytest.mark.parametrize(
    "body",
    [
        b"<html><h1>502 Bad Gateway</h1></html>",
        b'{"object": "list", "data": [',
        b'{"object": "list", "data": "nope"}',
    ],
)
async def test_garbage_is_a_provider_error(client: StripeClient, body: bytes) -> None:
    """HTML, truncated JSON or a wrong shape on a 200 is a one-line ProviderError."""
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, status=200, body=body)
        with pytest.raises(ProviderError) as caught:
            await client.pull_page(AUTH, "customers", cursor=None, resume=None, options={})
    assert "\n" not in str(caught.value)


async def test_network_failure_is_a_network_error(client: StripeClient) -> None:
    """A refused connection is a retryable NetworkError, not the SDK's APIConnectionError."""
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, exception=aiohttp.ClientConnectionError("refused"))
        with pytest.raises(NetworkError):
            await client.pull_page(AUTH, "customers", cursor=None, resume=None, options={})


async def test_full_pull_pages_with_starting_after_and_ends_with_a_cursor(client: StripeClient) -> None:
    """A full pull asks 100 at a time after the last id and ends with an events cursor."""
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, payload=listing({"id": "cus_2", "object": "customer"}, has_more=True))
        mocked.get(CUSTOMERS, payload=listing({"id": "cus_1", "object": "customer"}))
        first = await client.pull_page(AUTH, "customers", cursor=None, resume=None, options={})
        last = await client.pull_page(AUTH, "customers", cursor=first.next_cursor, resume=None, options={})
        urls = [str(key[1]) for key in mocked.requests]
    assert "limit=100" in urls[0] and "starting_after=cus_2" in urls[1]
    assert (None, {"events_since": 1_800_000_000 - 60}) == (last.next_cursor, last.resume_cursor)


async def test_incremental_reads_events_of_the_entity(client: StripeClient) -> None:
    """An incremental pull reads events since the cursor, latest state once per object, deletions kept."""
    events = listing(
        {
            "id": "evt_3",
            "type": "customer.deleted",
            "created": 3,
            "data": {"object": {"id": "cus_9", "object": "customer", "deleted": True}},
        },
        {
            "id": "evt_2",
            "type": "customer.updated",
            "created": 2,
            "data": {"object": {"id": "cus_1", "object": "customer", "name": "new"}},
        },
        {
            "id": "evt_1",
            "type": "customer.updated",
            "created": 1,
            "data": {"object": {"id": "cus_1", "object": "customer", "name": "old"}},
        },
    )
    with aioresponses() as mocked:
        mocked.get(EVENTS, payload=events)
        page = await client.pull_page(
            AUTH, "customers", cursor=None, resume={"events_since": 1_799_990_000}, options={}
        )
        url = str(next(iter(mocked.requests))[1])
    assert [("cus_9", True), ("cus_1", False)] == [(r.external_id, r.deleted) for r in page.records]
    assert "new" == page.records[1].data["name"]
    assert "created%5Bgte%5D=1799990000" in url and "types%5B0%5D=customer.created" in url


async def test_cursor_older_than_30_days_forces_a_full_list(client: StripeClient) -> None:
    """A cursor past Stripe's 30 days of events lists the entity instead of reading events."""
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, payload=listing())
        await client.pull_page(
            AUTH, "customers", cursor=None, resume={"events_since": 1_700_000_000}, options={}
        )
        urls = [str(key[1]) for key in mocked.requests]
    assert ["/v1/customers"] == [re.sub(r"\?.*", "", u).removeprefix(BASE) for u in urls]


async def test_push_sends_our_idempotency_key_and_failures_come_back_as_results(client: StripeClient) -> None:
    """A create carries Idempotency-Key; a declined record fails alone as a result."""
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/v1/customers", payload={"id": "cus_1", "object": "customer"})
        mocked.post(
            f"{BASE}/v1/customers/cus_x",
            status=404,
            payload=stripe_error("invalid_request_error", "resource_missing"),
        )
        results = await client.push_batch(
            AUTH,
            "customers",
            [
                PushItem("r1", {"email": "a@example.com"}, "key-1"),
                PushItem("r2", {"name": "b"}, "key-2", external_id="cus_x"),
            ],
            options={},
        )
        create = mocked.requests[
            ("POST", next(k[1] for k in mocked.requests if k[1].path == "/v1/customers"))
        ][0]
    assert ["created", "failed"] == [r.outcome for r in results]
    assert "key-1" == create.kwargs["headers"]["Idempotency-Key"]
    assert "metadata[integration_idempotency_key]=key-1" in create.kwargs["data"].replace("%5B", "[").replace(
        "%5D", "]"
    )
    assert isinstance(results[1].error, DataError)


async def test_a_write_answered_without_an_id_fails_its_record_as_retryable(client: StripeClient) -> None:
    """A 200 to a create without the object's id (a proxy's answer, say) is a retryable
    provider error for that record, not a KeyError escaping the batch as unknown."""
    with aioresponses() as mocked:
        mocked.post(f"{BASE}/v1/customers", payload={"object": "customer"})
        results = await client.push_batch(AUTH, "customers", [PushItem("r1", {"email": "a@example.com"}, "key-1")],
                                          options={})
    assert ["failed"] == [r.outcome for r in results]
    assert isinstance(results[0].error, ProviderError) and results[0].error.retryable


async def test_a_reply_with_a_utf8_bom_is_read_like_any_other(client: StripeClient) -> None:
    """A body starting with a UTF-8 BOM passed our JSON check and then made the SDK raise
    its own APIError, which no category names."""
    with aioresponses() as mocked:
        body = b"\xef\xbb\xbf" + json.dumps({"id": "cus_1", "object": "customer"}).encode()
        mocked.post(f"{BASE}/v1/customers", body=body, content_type="application/json")
        results = await client.push_batch(AUTH, "customers", [PushItem("r1", {"email": "a@example.com"}, "key-1")],
                                          options={})
    assert [("created", "cus_1")] == [(r.outcome, r.external_id) for r in results]


def test_parse_webhook_event() -> None:
    """A Stripe event parses to one change keyed by the event id; garbage is a DataError."""
    client = StripeClient.__new__(StripeClient)
    event = {
        "id": "evt_1",
        "type": "charge.refunded",
        "created": 1_700_000_000,
        "data": {"object": {"id": "ch_1", "object": "charge", "amount_refunded": 100}},
    }
    body = json.dumps(event).encode()
    hook = VerifiedWebhook(
        provider="stripe",
        venue_id="v",
        received_at=datetime.now(UTC),
        headers={},
        body=base64.b64encode(body).decode(),
    )
    parsed = client.parse_webhook(hook, body)
    assert ("evt_1", [("charges", "ch_1", "upserted")]) == (
        parsed.event_id,
        [(c.entity, c.external_id, c.op) for c in parsed.changes],
    )
    assert 100 == parsed.changes[0].record.data["amount_refunded"]  # type: ignore[union-attr]
    with pytest.raises(DataError):
        client.parse_webhook(hook, b"<html>")


@pytest.mark.parametrize("created", [10**17, -(10**17), 2**70, True, "1700000000"])
def test_an_event_time_out_of_range_or_of_another_type_is_left_unknown(created: object) -> None:
    """`created` far out of range made fromtimestamp raise OSError, which the consumer takes
    for the database being away: the event went round for ever. It is now just unknown."""
    client = StripeClient.__new__(StripeClient)
    event = {"id": "evt_2", "type": "customer.updated", "created": created,
             "data": {"object": {"id": "cus_1", "object": "customer"}}}
    body = json.dumps(event).encode()
    hook = VerifiedWebhook(provider="stripe", venue_id="v", received_at=datetime.now(UTC), headers={},
                           body=base64.b64encode(body).decode())
    parsed = client.parse_webhook(hook, body)
    assert [("cus_1", None)] == [(c.external_id, c.occurred_at) for c in parsed.changes]
    with pytest.raises(DataError):
        client.parse_webhook(hook, b"[" * 100_000)  # nested past the recursion limit


def test_operation_label_hides_ids() -> None:
    """Metrics labels carry paths with ids replaced, never an id."""
    assert "post /v1/customers/{id}" == operation_of(
        "POST", "http://h/stripe/v1/customers/cus_Ab12?x=1", base_path="/stripe"
    )
    assert "get /v1/payment_intents" == operation_of("get", "https://api.stripe.com/v1/payment_intents")
    assert "post /v1/customers/{id}" == operation_of("post", "https://api.stripe.com/v1/customers/cus_NffrFeUfNVxHib")
    assert "get /v1/customers/search" == operation_of("get", "https://api.stripe.com/v1/customers/search?query=x")
    assert "delete /v1/customers/{id}/sources/{id}" == operation_of(
        "DELETE", "https://api.stripe.com/v1/customers/cus_X9/sources/card_QwErTyUiOpAsDf"
    )
    assert "get /v1/invoices/{id}/lines" == operation_of("get", "https://api.stripe.com/v1/invoices/42/lines")


async def test_each_credential_keeps_its_own_sdk_client(client: StripeClient) -> None:
    """The SDK client is built once per credential object and never shared between keys."""
    other = StaticAuth(provider="stripe", secret="sk_test_other", account_id="acct-2")
    first = client.sdk(AUTH)
    assert first is client.sdk(AUTH)
    second = client.sdk(other)
    assert second is not first
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, payload=listing())
        mocked.get(CUSTOMERS, payload=listing())
        await client.pull_page(AUTH, "customers", cursor=None, resume=None, options={})
        await client.pull_page(other, "customers", cursor=None, resume=None, options={})
        keys = [call.kwargs["headers"]["Authorization"] for calls in mocked.requests.values() for call in calls]
    assert ["Bearer sk_test_abc123", "Bearer sk_test_other"] == keys


_SCALARS = st.one_of(st.integers(), st.booleans(), st.text(max_size=8))  # the SDK writes a None in a list as "None"
_KEYS = st.text(alphabet="abcdefgh_", min_size=1, max_size=6)
_PARAMS = st.recursive(
    _SCALARS,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_KEYS, inner, max_size=3)),
    max_leaves=8,
)


@given(st.dictionaries(_KEYS, _PARAMS, max_size=4))
def test_list_query_parameters_are_encoded_as_the_sdk_encodes_them(params: dict[str, Any]) -> None:
    """List pages skip the SDK, so their query string must be the one the SDK would build."""
    from stripe._encode import _api_encode

    sdk = [(k, str(v).lower() if isinstance(v, bool) else str(v)) for k, v in _api_encode(params)]
    assert sdk == encode_params(params)
    assert encode_params(params) == encode_params({**params, "unset": None})  # None is left out, as the SDK does


@given(
    prefix=st.sampled_from(["cus", "prod", "pi", "acct", "evt", "card"]),
    rest=st.text(alphabet=string.ascii_letters + string.digits, min_size=14, max_size=24).filter(
        lambda s: not s.islower()
    ),
)
def test_operation_label_never_holds_a_stripe_id(prefix: str, rest: str) -> None:
    """Whatever a Stripe id's random part is (anything but all lower-case letters), the label
    set stays the same: one per endpoint, never one per object."""
    assert "post /v1/customers/{id}" == operation_of("post", f"https://api.stripe.com/v1/customers/{prefix}_{rest}")
