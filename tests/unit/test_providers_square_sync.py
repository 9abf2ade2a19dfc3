"""Square client pulls and pushes against recorded requests (aioresponses)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import CallbackResult, aioresponses

from providers.auth import StaticAuth
from providers.base import PushItem
from providers.http import ProviderHttp
from providers.square import SquareClient
from providers.square.push import batch_key
from service.config import Settings
from service.limiter import Limits, MemoryBucketStore, RateLimiter
from service.messages import idempotency_key

BASE = "https://square.test"
SETTINGS = Settings(square_api_base=BASE)


def fast_limits(provider: str, **_: Any) -> Limits:
    return Limits(per_second=10_000.0)


@pytest.fixture
async def client() -> AsyncIterator[SquareClient]:
    async with aiohttp.ClientSession() as session:
        http = ProviderHttp(
            session, limiter=RateLimiter(MemoryBucketStore()), settings=SETTINGS, limits_for=fast_limits
        )
        yield SquareClient(http)


@pytest.fixture
def auth() -> StaticAuth:
    return StaticAuth(provider="square", secret="sq-token", account_id="MERCHANT1")


class Recorder:
    """Answers registered routes in order and remembers (method, path, query, body)."""

    def __init__(self, mocked: aioresponses) -> None:
        self.mocked = mocked
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []

    def add(self, method: str, path: str, *answers: tuple[int, Any]) -> None:
        queue = list(answers)

        def reply(url: Any, **kwargs: Any) -> CallbackResult:
            self.calls.append((method, url.path, dict(url.query), kwargs.get("json")))
            status, payload = queue.pop(0) if len(queue) > 1 else queue[0]
            return CallbackResult(status=status, body=json.dumps(payload), content_type="application/json")

        pattern = re.compile("^" + re.escape(BASE + path) + r"(\?.*)?$")
        self.mocked.add(pattern, method, callback=reply, repeat=True)


def customer(ident: str, updated_at: str, version: int = 1) -> dict[str, Any]:
    return {"id": ident, "given_name": ident, "updated_at": updated_at, "version": version}


async def test_full_customer_pull_pages_by_cursor_and_resumes_at_the_latest(
    client: SquareClient, auth: StaticAuth
) -> None:
    """GET /v2/customers page by page; the resume cursor (last page only) is the newest update."""
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add(
            "GET",
            "/v2/customers",
            (200, {"customers": [customer("A", "2025-03-02T10:00:00Z")], "cursor": "c2"}),
            (200, {"customers": [customer("B", "2025-03-01T10:00:00.123456789Z")]}),
        )
        first = await client.pull_page(auth, "customers", cursor=None, resume=None, options={})
        second = await client.pull_page(auth, "customers", cursor=first.next_cursor, resume=None, options={})
    assert (["A"], None) == ([r.external_id for r in first.records], first.resume_cursor)
    assert (None, {"updated_at": "2025-03-02T09:58:00Z"}) == (second.next_cursor, second.resume_cursor)
    assert [{"limit": "100"}, {"limit": "100", "cursor": "c2"}] == [c[2] for c in rec.calls]


async def test_incremental_customer_pull_searches_on_updated_at(
    client: SquareClient, auth: StaticAuth
) -> None:
    """With a stored cursor the pull is POST /v2/customers/search filtered by updated_at."""
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add(
            "POST", "/v2/customers/search", (200, {"customers": [customer("C", "2025-04-01T00:00:00Z", 3)]})
        )
        page = await client.pull_page(
            auth, "customers", cursor=None, resume={"updated_at": "2025-03-02T10:00:00Z"}, options={}
        )
    body = rec.calls[0][3]
    assert {"start_at": "2025-03-02T10:00:00Z"} == body["query"]["filter"]["updated_at"]
    assert ("3", {"updated_at": "2025-03-31T23:58:00Z"}) == (page.records[0].version, page.resume_cursor)


async def test_order_pull_searches_ten_locations_at_a_time(client: SquareClient, auth: StaticAuth) -> None:
    """Orders are searched over the account's locations in groups of ten, then by cursor."""
    locations = [{"id": f"L{i:02d}"} for i in range(12)]
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("GET", "/v2/locations", (200, {"locations": locations}))
        rec.add(
            "POST",
            "/v2/orders/search",
            (200, {"orders": [{"id": "O1", "updated_at": "2025-01-01T00:00:00Z", "version": 2}]}),
            (200, {"orders": [{"id": "O2", "updated_at": "2025-01-02T00:00:00Z"}]}),
        )
        pages = [
            await client.pull_page(
                auth, "orders", cursor=None, resume={"updated_at": "2024-12-01T00:00:00Z"}, options={}
            )
        ]
        pages.append(
            await client.pull_page(auth, "orders", cursor=pages[0].next_cursor, resume=None, options={})
        )
    searches = [c[3] for c in rec.calls if c[1] == "/v2/orders/search"]
    assert [10, 2] == [len(s["location_ids"]) for s in searches]
    assert {"start_at": "2024-12-01T00:00:00Z"} == searches[0]["query"]["filter"]["date_time_filter"][
        "updated_at"
    ]
    assert {"updated_at": "2025-01-02T00:00:00Z"} == pages[1].resume_cursor
    assert None is pages[1].next_cursor


async def test_inventory_pull_sends_updated_after(client: SquareClient, auth: StaticAuth) -> None:
    """Inventory counts come from batch-retrieve with updated_after, keyed catalog:location:state."""
    count = {
        "catalog_object_id": "ITEM1",
        "location_id": "L1",
        "state": "IN_STOCK",
        "quantity": "5",
        "calculated_at": "2025-05-01T00:00:00Z",
    }
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("POST", "/v2/inventory/counts/batch-retrieve", (200, {"counts": [count]}))
        page = await client.pull_page(
            auth, "inventory", cursor=None, resume={"updated_at": "2025-04-01T00:00:00Z"}, options={}
        )
    assert "2025-04-01T00:00:00Z" == rec.calls[0][3]["updated_after"]
    assert ["ITEM1:L1:IN_STOCK"] == [r.external_id for r in page.records]


def item(record_id: str, payload: dict[str, Any], external_id: str | None = None) -> PushItem:
    return PushItem(
        record_id=record_id,
        payload=payload,
        external_id=external_id,
        idempotency_key=idempotency_key("job-1", record_id, "upsert"),
    )


async def test_customer_create_carries_the_idempotency_key(client: SquareClient, auth: StaticAuth) -> None:
    """A create sends the item's key; the result carries Square's id."""
    new = item("r1", {"given_name": "Ada", "email_address": "ada@example.com"})
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("POST", "/v2/customers", (200, {"customer": customer("SQ1", "2025-01-01T00:00:00Z")}))
        (result,) = await client.push_batch(auth, "customers", [new], options={})
    assert new.idempotency_key == rec.calls[0][3]["idempotency_key"]
    assert ("created", "SQ1") == (result.outcome, result.external_id)


async def test_customer_update_with_stale_version_rereads_and_retries_once(
    client: SquareClient, auth: StaticAuth
) -> None:
    """A version conflict re-reads the customer and retries with the current version."""
    stale = item("r1", {"given_name": "Ada", "version": 1}, external_id="SQ1")
    conflict = {
        "errors": [{"category": "INVALID_REQUEST_ERROR", "code": "CONFLICT", "detail": "version mismatch"}]
    }
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add(
            "PUT",
            "/v2/customers/SQ1",
            (409, conflict),
            (200, {"customer": customer("SQ1", "2025-01-02T00:00:00Z", 5)}),
        )
        rec.add("GET", "/v2/customers/SQ1", (200, {"customer": customer("SQ1", "2025-01-01T00:00:00Z", 4)}))
        (result,) = await client.push_batch(auth, "customers", [stale], options={})
    assert [("PUT", 1), ("GET", None), ("PUT", 4)] == [(c[0], (c[3] or {}).get("version")) for c in rec.calls]
    assert ("updated", "SQ1") == (result.outcome, result.external_id)


async def test_order_create_defaults_to_the_first_location(client: SquareClient, auth: StaticAuth) -> None:
    """An order without location_id goes to the account's first location, with its key."""
    new = item(
        "o1",
        {
            "line_items": [
                {"name": "Ticket", "quantity": "1", "base_price_money": {"amount": 1250, "currency": "USD"}}
            ]
        },
    )
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("GET", "/v2/locations", (200, {"locations": [{"id": "L1"}, {"id": "L2"}]}))
        rec.add("POST", "/v2/orders", (200, {"order": {"id": "ORD1", "location_id": "L1", "version": 1}}))
        (result,) = await client.push_batch(auth, "orders", [new], options={})
    body = rec.calls[-1][3]
    assert ("L1", new.idempotency_key) == (body["order"]["location_id"], body["idempotency_key"])
    assert ("created", "ORD1") == (result.outcome, result.external_id)


def count_item(n: int) -> PushItem:
    return item(
        f"inv-{n}",
        {
            "catalog_object_id": f"ITEM{n}",
            "location_id": "L1",
            "quantity": str(n),
            "occurred_at": "2025-06-01T00:00:00Z",
        },
    )


async def test_inventory_push_batches_by_100_with_keys_derived_from_the_items(
    client: SquareClient, auth: StaticAuth
) -> None:
    """150 counts make two batch-create calls (100 + 50), each keyed from its items' keys."""
    items = [count_item(n) for n in range(150)]
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("POST", "/v2/inventory/changes/batch-create", (200, {"counts": []}))
        results = await client.push_batch(auth, "inventory", items, options={})
    bodies = [c[3] for c in rec.calls]
    assert [100, 50] == [len(b["changes"]) for b in bodies]
    assert [batch_key(items[:100], "inventory"), batch_key(items[100:], "inventory")] == [
        b["idempotency_key"] for b in bodies
    ]
    assert {"updated"} == {r.outcome for r in results}
    assert "ITEM7:L1:IN_STOCK" == results[7].external_id


async def test_inventory_change_named_bad_fails_alone(client: SquareClient, auth: StaticAuth) -> None:
    """When Square names changes[1] the batch is resent without it, under a new key."""
    items = [count_item(n) for n in range(3)]
    bad = {
        "errors": [
            {
                "category": "INVALID_REQUEST_ERROR",
                "code": "INVALID_VALUE",
                "detail": "bad quantity",
                "field": "changes[1].physical_count.quantity",
            }
        ]
    }
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("POST", "/v2/inventory/changes/batch-create", (400, bad), (200, {"counts": []}))
        results = await client.push_batch(auth, "inventory", items, options={})
    assert ["updated", "failed", "updated"] == [r.outcome for r in results]
    assert [3, 2] == [len(c[3]["changes"]) for c in rec.calls]
    assert rec.calls[0][3]["idempotency_key"] != rec.calls[1][3]["idempotency_key"]


async def test_inventory_count_without_time_is_refused_before_sending(
    client: SquareClient, auth: StaticAuth
) -> None:
    """A count without occurred_at fails as validation (a 'now' would break replays)."""
    with aioresponses():
        (result,) = await client.push_batch(
            auth,
            "inventory",
            [item("x", {"catalog_object_id": "I", "location_id": "L1", "quantity": "1"})],
            options={},
        )
    assert ("failed", "validation") == (result.outcome, result.error.category if result.error else None)


async def test_replayed_order_update_whose_key_was_spent_counts_as_landed(
    client: SquareClient, auth: StaticAuth
) -> None:
    """IDEMPOTENCY_KEY_REUSED on an order update (a lost answer, replayed) reads the order back."""
    reused = {
        "errors": [{"category": "INVALID_REQUEST_ERROR", "code": "IDEMPOTENCY_KEY_REUSED", "detail": "used"}]
    }
    current = {"id": "ORD1", "location_id": "L1", "version": 3, "reference_id": "new"}
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("POST", "/v2/orders/batch-retrieve", (200, {"orders": [current]}))
        rec.add("PUT", "/v2/orders/ORD1", (400, reused))
        (result,) = await client.push_batch(
            auth, "orders", [item("o1", {"reference_id": "new"}, "ORD1")], options={}
        )
    assert ("updated", "new") == (result.outcome, (result.data or {}).get("reference_id"))
    assert ["POST", "PUT", "POST"] == [c[0] for c in rec.calls]


async def test_customer_cursor_trails_the_search_lag_but_never_goes_back(
    client: SquareClient, auth: StaticAuth
) -> None:
    """The stored customer cursor stays 120 s behind the newest update, never behind its start."""
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add(
            "POST",
            "/v2/customers/search",
            (200, {"customers": [customer("C", "2025-04-01T00:00:10Z")]}),
            (200, {"customers": [customer("D", "2025-04-01T00:05:00Z")]}),
        )
        near = await client.pull_page(
            auth, "customers", cursor=None, resume={"updated_at": "2025-04-01T00:00:00Z"}, options={}
        )
        far = await client.pull_page(
            auth, "customers", cursor=None, resume={"updated_at": "2025-04-01T00:00:00Z"}, options={}
        )
    assert [{"updated_at": "2025-04-01T00:00:00Z"}, {"updated_at": "2025-04-01T00:03:00Z"}] == [
        near.resume_cursor,
        far.resume_cursor,
    ]
