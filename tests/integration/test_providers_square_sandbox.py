"""SquareClient against the sandbox: every entity and direction, keys, versions, webhooks."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from providers.auth import StaticAuth
from providers.base import Page, PushItem
from providers.http import ProviderHttp
from providers.square import SquareClient, fetch_merchant_id
from service.config import Settings
from service.limiter import MemoryBucketStore, RateLimiter
from service.messages import VerifiedWebhook, idempotency_key


def settings_for(sandbox: Any) -> Settings:
    return Settings(square_api_base=f"{sandbox.url}/square")


@pytest.fixture
async def client(sandbox_server: Any) -> AsyncIterator[SquareClient]:
    """A client on a real limiter with Square's default limits (the sandbox's are the same)."""
    async with aiohttp.ClientSession() as session:
        http = ProviderHttp(
            session, limiter=RateLimiter(MemoryBucketStore()), settings=settings_for(sandbox_server)
        )
        yield SquareClient(http)


@pytest.fixture
def account(sandbox_server: Any) -> tuple[str, StaticAuth]:
    """A fresh Square account: (sandbox account name, auth keyed by its merchant id)."""
    name, token = f"venue-{uuid.uuid4().hex[:8]}", f"EAAAsandbox{uuid.uuid4().hex}"
    merchant = f"M{uuid.uuid4().hex[:12].upper()}"
    sandbox_server.control(
        "POST",
        "/_sandbox/accounts",
        {"provider": "square", "account": name, "api_key": token, "oauth": {"merchant_id": merchant}},
    )
    return name, StaticAuth(provider="square", secret=token, account_id=merchant, venue_id=name)


def item(job: str, record_id: str, payload: dict[str, Any], external_id: str | None = None) -> PushItem:
    return PushItem(
        record_id=record_id,
        payload=payload,
        external_id=external_id,
        idempotency_key=idempotency_key(job, record_id, "upsert"),
    )


async def pull_all(
    client: SquareClient, auth: StaticAuth, entity: str, resume: dict[str, Any] | None
) -> Page:
    """Every page of a pull, records joined; the last page's cursors."""
    page = await client.pull_page(auth, entity, cursor=None, resume=resume, options={})
    records = list(page.records)
    while page.next_cursor is not None:
        page = await client.pull_page(auth, entity, cursor=page.next_cursor, resume=resume, options={})
        records += page.records
    return Page(records=records, next_cursor=None, resume_cursor=page.resume_cursor)


def calls(sandbox: Any, name: str, path: str) -> list[dict[str, Any]]:
    """The POSTs the sandbox logged for one account and path, in arrival order."""
    found = sandbox.control("GET", f"/_sandbox/calls?provider=square&account={name}")["calls"]
    return [c for c in found if c["path"] == path and c["method"] == "POST"]


async def test_customers_push_replay_pull_incremental_fetch(
    client: SquareClient, account: tuple[str, StaticAuth], sandbox_server: Any
) -> None:
    """Creates are idempotent, a full pull sees them, an incremental pull sees the later update."""
    name, auth = account
    items = [
        item("job-c", f"r{n}", {"given_name": f"Guest{n}", "email_address": f"g{n}@example.com"})
        for n in range(3)
    ]
    created = await client.push_batch(auth, "customers", items, options={})
    replayed = await client.push_batch(auth, "customers", items, options={})
    assert {"created"} == {r.outcome for r in created}
    assert [r.external_id for r in created] == [r.external_id for r in replayed]
    clock = {"advance_seconds": 300}  # further than the customer cursor's search-index lag
    await asyncio.to_thread(sandbox_server.control, "POST", "/_sandbox/clock", clock)
    last, first = created[2].external_id, created[0].external_id
    await client.push_batch(auth, "customers", [item("job-u", "r2", {"nickname": "late"}, last)], options={})
    full = await pull_all(client, auth, "customers", None)
    assert sorted(r.external_id for r in created) == sorted(r.external_id for r in full.records)
    await asyncio.to_thread(sandbox_server.control, "POST", "/_sandbox/clock", clock)
    (updated,) = await client.push_batch(
        auth, "customers", [item("job-u", "r0", {"family_name": "Lovelace"}, first)], options={}
    )
    later = await pull_all(client, auth, "customers", full.resume_cursor)
    assert ("updated", "Lovelace") == (updated.outcome, (updated.data or {}).get("family_name"))
    assert {first, last} == {r.external_id for r in later.records}  # not the untouched one
    fetched = await client.fetch_record(auth, "customers", first or "")
    assert fetched is not None and "Lovelace" == fetched.data["family_name"]
    assert None is await client.fetch_record(auth, "customers", "NOSUCHCUSTOMER0000000000")
    keys = [
        c["idempotency_key"] for c in await asyncio.to_thread(calls, sandbox_server, name, "/v2/customers")
    ]
    assert 2 * [i.idempotency_key for i in items] == keys


async def test_stale_customer_version_is_reread_and_retried(
    client: SquareClient, account: tuple[str, StaticAuth]
) -> None:
    """An update carrying an old version meets CONFLICT, re-reads and lands once."""
    _, auth = account
    (created,) = await client.push_batch(
        auth, "customers", [item("job-v", "r1", {"given_name": "Ada"})], options={}
    )
    cid = created.external_id
    await client.push_batch(
        auth, "customers", [item("job-v", "r1", {"nickname": "A", "version": 0}, cid)], options={}
    )
    (result,) = await client.push_batch(
        auth, "customers", [item("job-w", "r1", {"nickname": "B", "version": 0}, cid)], options={}
    )
    assert ("updated", "B", 2) == (
        result.outcome,
        (result.data or {}).get("nickname"),
        (result.data or {}).get("version"),
    )


async def test_orders_create_replay_update_pull_fetch(
    client: SquareClient, account: tuple[str, StaticAuth]
) -> None:
    """Orders: one per request with a key (replay = same order), update by version, pulls, fetch."""
    _, auth = account
    line = {"name": "Ticket", "quantity": "2", "base_price_money": {"amount": 1250, "currency": "USD"}}
    new = item("job-o", "o1", {"reference_id": "booking-1", "line_items": [line]})
    (created,) = await client.push_batch(auth, "orders", [new], options={})
    (replayed,) = await client.push_batch(auth, "orders", [new], options={})
    assert ("created", created.external_id) == (replayed.outcome, replayed.external_id)
    full = await pull_all(client, auth, "orders", None)
    assert [created.external_id] == [r.external_id for r in full.records]
    change = item("job-o2", "o1", {"reference_id": "booking-1b"}, created.external_id)
    (updated,) = await client.push_batch(auth, "orders", [change], options={})
    (again,) = await client.push_batch(auth, "orders", [change], options={})  # a replay: key spent
    assert ("updated", "booking-1b") == (updated.outcome, (updated.data or {}).get("reference_id"))
    assert ("updated", (updated.data or {}).get("version")) == (
        again.outcome,
        (again.data or {}).get("version"),
    )
    later = await pull_all(client, auth, "orders", full.resume_cursor)
    assert [("booking-1b")] == [r.data.get("reference_id") for r in later.records]
    fetched = await client.fetch_record(auth, "orders", created.external_id or "")
    assert fetched is not None and 2500 == fetched.data["total_money"]["amount"]
    assert None is await client.fetch_record(auth, "orders", "no-such-order")


async def test_inventory_150_counts_two_batches_then_pull_and_fetch(
    client: SquareClient, account: tuple[str, StaticAuth], sandbox_server: Any
) -> None:
    """150 counts go in batches of 100 and 50; a replay changes nothing; pulls read them back."""
    name, auth = account
    location = (
        (await client.pull_page(auth, "locations", cursor=None, resume=None, options={}))
        .records[0]
        .external_id
    )
    items = [
        item(
            "job-i",
            f"c{n}",
            {
                "catalog_object_id": f"ITEM{n:03d}",
                "location_id": location,
                "quantity": str(n),
                "occurred_at": "2025-06-01T00:00:00Z",
            },
        )
        for n in range(150)
    ]
    results = await client.push_batch(auth, "inventory", items, options={})
    await client.push_batch(auth, "inventory", items, options={})
    batches = await asyncio.to_thread(calls, sandbox_server, name, "/v2/inventory/changes/batch-create")
    assert 2 == len({c["idempotency_key"] for c in batches}) and 4 == len(batches)
    assert {"updated"} == {r.outcome for r in results}
    page = await pull_all(client, auth, "inventory", None)
    assert 150 == len(page.records)
    counted = await client.fetch_record(auth, "inventory", f"ITEM007:{location}:IN_STOCK")
    assert counted is not None and "7" == counted.data["quantity"]


async def test_locations_pull_and_fetch(client: SquareClient, account: tuple[str, StaticAuth]) -> None:
    """Locations are one page; each can be fetched by id."""
    _, auth = account
    page = await client.pull_page(auth, "locations", cursor=None, resume=None, options={})
    assert 1 == len(page.records) and None is page.next_cursor
    fetched = await client.fetch_record(auth, "locations", page.records[0].external_id)
    assert fetched is not None and page.records[0].external_id == fetched.external_id


async def test_merchant_id_and_health(
    sandbox_server: Any, client: SquareClient, account: tuple[str, StaticAuth]
) -> None:
    """fetch_merchant_id answers the account's merchant; the health check passes."""
    _, auth = account
    assert auth.account_id == await fetch_merchant_id(settings_for(sandbox_server), auth.api_key())
    await client.check_health()


async def test_sandbox_webhook_parses_into_changes(
    client: SquareClient, account: tuple[str, StaticAuth], sandbox_server: Any
) -> None:
    """A signed customer webhook from the sandbox yields the customer; an order one only its id."""
    from tests.integration.sandbox.receiver import webhook_receiver

    name, auth = account
    events = [
        {
            "type": "customer.created",
            "data": {
                "type": "customer",
                "id": "C1",
                "object": {"customer": {"id": "C1", "given_name": "Ada"}},
            },
        },
        {
            "type": "order.updated",
            "data": {
                "type": "order",
                "id": "O1",
                "object": {"order_updated": {"order_id": "O1", "version": 2}},
            },
        },
    ]
    with webhook_receiver() as received:
        for event in events:
            await asyncio.to_thread(
                sandbox_server.control,
                "POST",
                "/_sandbox/webhooks/square",
                {"account": name, "url": received.url, "event": event},
            )
    parsed = [client.parse_webhook(_message(body), body) for _, _, body in received.requests]
    assert [auth.account_id, auth.account_id] == [p.account for p in parsed]
    assert [("customers", "C1", True), ("orders", "O1", False)] == [
        (p.changes[0].entity, p.changes[0].external_id, p.changes[0].record is not None) for p in parsed
    ]


def _message(body: bytes) -> VerifiedWebhook:
    import base64
    from datetime import UTC, datetime

    return VerifiedWebhook(
        provider="square",
        venue_id=None,
        received_at=datetime.now(UTC),
        headers={},
        body=base64.b64encode(body).decode(),
    )


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (401, "authentication"),
        (403, "authorization"),
        (404, "validation"),
        (429, "rate_limit"),
        (500, "provider"),
        (503, "provider"),
    ],
)
async def test_sandbox_faults_map_to_categories(
    client: SquareClient, account: tuple[str, StaticAuth], sandbox_server: Any, status: int, category: str
) -> None:
    """Square's own error bodies for injected faults map to the contract's categories."""
    from service.errors import IntegrationError

    name, auth = account
    await asyncio.to_thread(
        sandbox_server.control,
        "POST",
        "/_sandbox/faults",
        {"provider": "square", "account": name, "status": status, "count": 1},
    )
    with pytest.raises(IntegrationError) as caught:
        await client.pull_page(auth, "customers", cursor=None, resume=None, options={})
    assert (category, status) == (caught.value.category, caught.value.status)
