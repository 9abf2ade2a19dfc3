"""The Stripe client against the sandbox: every entity pulled, customers and refunds pushed."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from providers.auth import StaticAuth
from providers.base import PushItem
from providers.http import ProviderHttp
from providers.stripe import KEY_METADATA, StripeClient
from service.config import Settings
from service.errors import DataError, ProviderError, RateLimitError
from service.limiter import MemoryBucketStore, RateLimiter
from service.messages import idempotency_key
from service.metrics import Metrics


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(sandbox_server: Any, session: aiohttp.ClientSession) -> StripeClient:
    settings = Settings(stripe_api_base=f"{sandbox_server.url}/stripe", retry_max_delay_seconds=5)
    http = ProviderHttp(
        session, limiter=RateLimiter(MemoryBucketStore()), settings=settings, metrics=Metrics()
    )
    return StripeClient(http)


@pytest.fixture
def auth(sandbox_server: Any, venue_id: str) -> StaticAuth:
    key = f"sk_test_{uuid.uuid4().hex}"
    sandbox_server.control(
        "POST", "/_sandbox/accounts", {"provider": "stripe", "account": venue_id, "api_key": key}
    )
    return StaticAuth(provider="stripe", secret=key, account_id=venue_id, venue_id=venue_id)


def calls(
    sandbox_server: Any, venue_id: str, method: str | None = None, path: str | None = None
) -> list[dict]:
    found = sandbox_server.control("GET", "/_sandbox/calls?provider=stripe")["calls"]
    return [
        c
        for c in found
        if c["account"] == venue_id
        and (method is None or c["method"] == method)
        and (path is None or c["path"] == path)
    ]


def item(
    record_id: str, payload: dict[str, Any], *, external_id: str | None = None, op: str = "create"
) -> PushItem:
    return PushItem(record_id, payload, idempotency_key("job-1", record_id, op), external_id)


async def pull_all(
    client: StripeClient, auth: StaticAuth, entity: str, resume: dict[str, Any] | None = None
) -> tuple[list[Any], dict[str, Any] | None]:
    records, cursor = [], None
    while True:
        page = await client.pull_page(auth, entity, cursor=cursor, resume=resume, options={})
        records += page.records
        if page.next_cursor is None:
            return records, page.resume_cursor
        cursor = page.next_cursor


async def pay(client: StripeClient, auth: StaticAuth, amount: int = 1250) -> dict[str, Any]:
    sdk = client.sdk(auth)
    intent = await sdk.v1.payment_intents.create_async(
        {"amount": amount, "currency": "usd", "payment_method": "pm_card_visa", "confirm": True}
    )
    return intent.to_dict()


async def test_push_customers_create_then_update(
    client: StripeClient, auth: StaticAuth, sandbox_server: Any, venue_id: str
) -> None:
    """Customers are created with our idempotency keys, then updated by id."""
    created = await client.push_batch(
        auth,
        "customers",
        [
            item("p1", {"email": "ada@example.com", "name": "Ada Lovelace"}),
            item("p2", {"email": "bob@example.com", "name": "Bob", "metadata": {"tier": "gold"}}),
        ],
        options={},
    )
    assert ["created", "created"] == [r.outcome for r in created]
    updated = await client.push_batch(
        auth,
        "customers",
        [item("p1", {"name": "Ada King"}, external_id=created[0].external_id, op="update")],
        options={},
    )
    assert ("updated", "Ada King") == (updated[0].outcome, updated[0].data["name"])
    posted = calls(sandbox_server, venue_id, "POST", "/v1/customers")
    assert {idempotency_key("job-1", "p1", "create"), idempotency_key("job-1", "p2", "create")} == {
        c["idempotency_key"] for c in posted
    }
    assert "gold" == created[1].data["metadata"]["tier"]


async def test_push_retry_with_same_key_creates_one_customer(client: StripeClient, auth: StaticAuth) -> None:
    """A redelivered push reuses its key: Stripe replays, one customer exists."""
    first = await client.push_batch(auth, "customers", [item("p1", {"email": "x@example.com"})], options={})
    again = await client.push_batch(auth, "customers", [item("p1", {"email": "x@example.com"})], options={})
    records, _ = await pull_all(client, auth, "customers")
    assert first[0].external_id == again[0].external_id
    assert 1 == len(records)


async def test_full_then_incremental_customers(
    client: StripeClient, auth: StaticAuth, sandbox_server: Any, venue_id: str
) -> None:
    """A full pull pages through every customer; the next incremental reads only changes from events."""
    pushed = await client.push_batch(
        auth, "customers", [item(f"c{i}", {"email": f"c{i}@example.com"}) for i in range(3)], options={}
    )
    full, resume = await pull_all(client, auth, "customers")
    assert {r.external_id for r in pushed} == {r.external_id for r in full}
    assert resume is not None and "events_since" in resume
    await client.push_batch(
        auth,
        "customers",
        [item("c1", {"name": "Changed"}, external_id=pushed[1].external_id, op="update")],
        options={},
    )
    changed, _ = await pull_all(client, auth, "customers", resume=resume)
    latest = {r.external_id: r.data.get("name") for r in changed}  # a minute of overlap may repeat others
    assert "Changed" == latest[pushed[1].external_id]
    assert set(latest) <= {r.external_id for r in pushed}
    assert calls(sandbox_server, venue_id, "GET", "/v1/events")


async def test_stale_cursor_forces_full_pull(
    client: StripeClient, auth: StaticAuth, sandbox_server: Any, venue_id: str
) -> None:
    """A cursor older than 30 days re-lists everything instead of reading events."""
    await client.push_batch(auth, "customers", [item("old", {"email": "old@example.com"})], options={})
    stale = {"events_since": int((datetime.now(UTC) - timedelta(days=31)).timestamp())}
    records, _ = await pull_all(client, auth, "customers", resume=stale)
    assert 1 == len(records)
    assert [] == calls(sandbox_server, venue_id, "GET", "/v1/events")


async def test_pull_payments_charges_balance_transactions(client: StripeClient, auth: StaticAuth) -> None:
    """A confirmed payment shows up in payment_intents, charges and balance_transactions pulls."""
    intent = await pay(client, auth)
    intents, _ = await pull_all(client, auth, "payment_intents")
    charges, _ = await pull_all(client, auth, "charges")
    txns, resume = await pull_all(client, auth, "balance_transactions")
    assert [intent["id"]] == [r.external_id for r in intents]
    assert [intent["id"]] == [r.data["payment_intent"] for r in charges]
    assert [charges[0].data["balance_transaction"]] == [r.external_id for r in txns]
    await pay(client, auth, amount=300)
    newer, _ = await pull_all(client, auth, "balance_transactions", resume=resume)
    assert 300 in {r.data["amount"] for r in newer}


async def test_push_refund_then_pull_refunds_incrementally(client: StripeClient, auth: StaticAuth) -> None:
    """A refund is created once per key and reaches the next incremental refunds pull."""
    _, resume = await pull_all(client, auth, "refunds")
    charges, _ = await pull_all(client, auth, "charges")
    charge_id = charges[0].external_id if charges else None
    if charge_id is None:
        intent = await pay(client, auth)
        charge_id = intent["latest_charge"]
    results = await client.push_batch(
        auth, "refunds", [item("r1", {"charge": charge_id, "amount": 500})], options={}
    )
    assert "created" == results[0].outcome
    pulled, _ = await pull_all(client, auth, "refunds", resume=resume)
    assert [results[0].external_id] == [r.external_id for r in pulled]
    assert results[0].data["metadata"][KEY_METADATA] == idempotency_key("job-1", "r1", "create")


async def test_late_refund_retry_rereads_instead_of_writing(
    client: StripeClient, auth: StaticAuth, sandbox_server: Any, venue_id: str
) -> None:
    """A retry more than 24 h after the first attempt finds the refund it made: no second POST."""
    intent = await pay(client, auth)
    refund = item("r1", {"charge": intent["latest_charge"], "amount": 100})
    first = await client.push_batch(auth, "refunds", [refund], options={})
    late = {"first_attempt_at": (datetime.now(UTC) - timedelta(hours=30)).isoformat()}
    again = await client.push_batch(auth, "refunds", [refund], options=late)
    assert first[0].external_id == again[0].external_id
    assert 1 == len(calls(sandbox_server, venue_id, "POST", "/v1/refunds"))


async def test_late_customer_retry_finds_the_stamped_customer(
    client: StripeClient, auth: StaticAuth, sandbox_server: Any, venue_id: str
) -> None:
    """A late customer create searches by the stamped key and creates nothing new."""
    first = await client.push_batch(
        auth, "customers", [item("p9", {"email": "late@example.com"})], options={}
    )
    late = {"first_attempt_at": (datetime.now(UTC) - timedelta(days=2)).isoformat()}
    again = await client.push_batch(
        auth, "customers", [item("p9", {"email": "late@example.com"})], options=late
    )
    assert first[0].external_id == again[0].external_id
    assert 1 == len(calls(sandbox_server, venue_id, "POST", "/v1/customers"))


async def test_update_of_missing_customer_fails_as_data(client: StripeClient, auth: StaticAuth) -> None:
    """Updating a customer Stripe does not have fails that record with category data."""
    results = await client.push_batch(
        auth,
        "customers",
        [item("p1", {"name": "x"}, external_id="cus_doesnotexist1", op="update")],
        options={},
    )
    assert "failed" == results[0].outcome
    assert isinstance(results[0].error, DataError)


async def test_faults_map_to_retryable_errors(
    client: StripeClient, auth: StaticAuth, sandbox_server: Any, venue_id: str
) -> None:
    """Sandbox 503 and 429 faults become retryable provider and rate-limit errors."""
    outcomes = []
    for status in (503, 429):
        sandbox_server.control(
            "POST",
            "/_sandbox/faults",
            {"provider": "stripe", "account": venue_id, "status": status, "count": 1},
        )
        with pytest.raises((ProviderError, RateLimitError)) as caught:
            await client.pull_page(auth, "customers", cursor=None, resume=None, options={})
        outcomes.append((type(caught.value), caught.value.retryable))
    assert [(ProviderError, True), (RateLimitError, True)] == outcomes


async def test_fetch_record_and_health(client: StripeClient, auth: StaticAuth) -> None:
    """fetch_record returns a customer by id and None for an unknown one; health passes."""
    pushed = await client.push_batch(auth, "customers", [item("p1", {"email": "f@example.com"})], options={})
    found = await client.fetch_record(auth, "customers", str(pushed[0].external_id))
    missing = await client.fetch_record(auth, "customers", "cus_missing0000")
    assert (pushed[0].external_id, None) == (found.external_id if found else None, missing)
    await client.check_health()


async def test_late_update_rereads_and_deleted_customer_fails(
    client: StripeClient, auth: StaticAuth, sandbox_server: Any, venue_id: str
) -> None:
    """A late update (first attempt over 24 h ago) re-reads first; a deleted customer fails as data."""
    pushed = await client.push_batch(auth, "customers", [item("p1", {"email": "d@example.com"})], options={})
    customer_id = str(pushed[0].external_id)
    late_at = datetime.now(UTC) - timedelta(hours=25)
    update = PushItem("p1", {"name": "Late"}, idempotency_key("job-1", "p1", "update"), customer_id, late_at)
    updated = await client.push_batch(auth, "customers", [update], options={})
    await client.sdk(auth).v1.customers.delete_async(customer_id)
    gone = await client.push_batch(auth, "customers", [update], options={})
    assert ("updated", "Late") == (updated[0].outcome, updated[0].data["name"] if updated[0].data else None)
    methods = [c["method"] for c in calls(sandbox_server, venue_id, path=f"/v1/customers/{customer_id}")]
    assert ["GET", "POST", "DELETE", "GET"] == methods  # the second late update stops at the re-read
    assert ("failed", DataError) == (gone[0].outcome, type(gone[0].error))
