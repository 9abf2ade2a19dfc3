"""QuickBooks pulls (paged queries) and /batch pushes against recorded requests."""

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
from providers.quickbooks import QuickBooksClient
from providers.quickbooks.batch import request_id
from service.config import Settings
from service.errors import DataError
from service.limiter import Limits, MemoryBucketStore, RateLimiter
from service.messages import idempotency_key

BASE = "https://qbo.test"
COMPANY = "/v3/company/4620816365"


def fast_limits(provider: str, **_: Any) -> Limits:
    return Limits(per_second=10_000.0)


@pytest.fixture
async def client() -> AsyncIterator[QuickBooksClient]:
    async with aiohttp.ClientSession() as session:
        http = ProviderHttp(
            session,
            limiter=RateLimiter(MemoryBucketStore()),
            settings=Settings(quickbooks_api_base=BASE),
            limits_for=fast_limits,
        )
        yield QuickBooksClient(http)


@pytest.fixture
def auth() -> StaticAuth:
    return StaticAuth(
        provider="quickbooks", secret="qb-token", account_id="4620816365", values={"realm_id": "4620816365"}
    )


class Recorder:
    """Answers a route with queued replies (the last repeats) and records each request."""

    def __init__(self, mocked: aioresponses) -> None:
        self.mocked = mocked
        self.calls: list[tuple[str, str, dict[str, str], Any]] = []

    def add(self, method: str, path: str, *answers: Any) -> None:
        queue = list(answers)

        def reply(url: Any, **kwargs: Any) -> CallbackResult:
            self.calls.append((method, url.path, dict(url.query), kwargs.get("json")))
            answer = queue.pop(0) if len(queue) > 1 else queue[0]
            payload = answer(kwargs.get("json")) if callable(answer) else answer
            return CallbackResult(status=200, body=json.dumps(payload), content_type="application/json")

        pattern = re.compile("^" + re.escape(BASE + COMPANY + path) + r"(\?.*)?$")
        self.mocked.add(pattern, method, callback=reply, repeat=True)


def row(ident: int, updated: str = "2025-01-01T10:00:00-08:00", token: str = "0") -> dict[str, Any]:
    return {
        "Id": str(ident),
        "SyncToken": token,
        "DisplayName": f"C{ident}",
        "MetaData": {"CreateTime": updated, "LastUpdatedTime": updated},
    }


async def test_full_pull_pages_by_startposition_then_resumes(
    client: QuickBooksClient, auth: StaticAuth
) -> None:
    """A full page of 1000 asks for STARTPOSITION 1001; the last page gives the resume cursor."""
    # small rows: aioresponses cannot feed bodies past aiohttp's 64 KiB read buffer
    full = {
        "QueryResponse": {
            "Customer": [{"Id": str(i)} for i in range(1000)],
            "startPosition": 1,
            "maxResults": 1000,
        }
    }
    last = {"QueryResponse": {"Customer": [row(1000, "2025-02-01T00:00:00-08:00")]}}
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("GET", "/query", full, last)
        first = await client.pull_page(auth, "customers", cursor=None, resume=None, options={})
        second = await client.pull_page(auth, "customers", cursor=first.next_cursor, resume=None, options={})
    queries = [c[2]["query"] for c in rec.calls]
    assert [
        "SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY MetaData.LastUpdatedTime "
        "STARTPOSITION 1 MAXRESULTS 1000",
        "SELECT * FROM Customer WHERE Active IN (true, false) ORDERBY MetaData.LastUpdatedTime "
        "STARTPOSITION 1001 MAXRESULTS 1000",
    ] == queries
    assert (1000, None) == (len(first.records), first.resume_cursor)
    assert {"last_updated_time": "2025-02-01T00:00:00-08:00"} == second.resume_cursor
    assert ("1000", "0") == (second.records[0].external_id, second.records[0].version)


async def test_incremental_pull_filters_on_last_updated_time(
    client: QuickBooksClient, auth: StaticAuth
) -> None:
    """With a stored cursor the query has the WHERE; no rows keeps the cursor."""
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("GET", "/query", {"QueryResponse": {}})
        page = await client.pull_page(
            auth,
            "invoices",
            cursor=None,
            resume={"last_updated_time": "2025-01-01T10:00:00-08:00"},
            options={},
        )
    assert (
        "SELECT * FROM Invoice WHERE MetaData.LastUpdatedTime >= '2025-01-01T10:00:00-08:00' "
        "ORDERBY MetaData.LastUpdatedTime STARTPOSITION 1 MAXRESULTS 1000"
    ) == rec.calls[0][2]["query"]
    assert ([], {"last_updated_time": "2025-01-01T10:00:00-08:00"}) == (page.records, page.resume_cursor)


async def test_a_cursor_that_is_not_a_time_never_reaches_the_query(
    client: QuickBooksClient, auth: StaticAuth
) -> None:
    """A tampered cursor is a DataError, not an injected query."""
    with aioresponses(), pytest.raises(DataError):
        await client.pull_page(
            auth, "payments", cursor=None, resume={"last_updated_time": "x' OR Id > '0"}, options={}
        )


async def test_company_info_is_one_record(client: QuickBooksClient, auth: StaticAuth) -> None:
    """company_info reads /companyinfo/{realmId}."""
    info = {
        "CompanyInfo": {
            "Id": "1",
            "SyncToken": "3",
            "CompanyName": "Venue Ltd",
            "MetaData": {"LastUpdatedTime": "2025-01-01T00:00:00-08:00"},
        }
    }
    with aioresponses() as mocked:
        Recorder(mocked).add("GET", "/companyinfo/4620816365", info)
        page = await client.pull_page(auth, "company_info", cursor=None, resume=None, options={})
    assert (["Venue Ltd"], None) == ([r.data["CompanyName"] for r in page.records], page.next_cursor)


def item(n: int, external_id: str | None = None, **payload: Any) -> PushItem:
    return PushItem(
        record_id=f"r{n}",
        payload=payload or {"DisplayName": f"Customer {n}"},
        external_id=external_id,
        idempotency_key=idempotency_key("job-1", f"r{n}", "upsert"),
    )


def echo_batch(request: dict[str, Any]) -> dict[str, Any]:
    """A batch answer that creates every item, its Id taken from its DisplayName."""
    return {
        "BatchItemResponse": [
            {
                "bId": i["bId"],
                "Customer": {
                    **i["Customer"],
                    "Id": i["Customer"]["DisplayName"].split()[-1],
                    "SyncToken": "0",
                },
            }
            for i in request["BatchItemRequest"]
        ]
    }


async def test_31_creates_split_into_batches_of_30_and_1(client: QuickBooksClient, auth: StaticAuth) -> None:
    """31 records make two /batch calls, each with a requestid derived from its items' keys."""
    items = [item(n) for n in range(31)]
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("POST", "/batch", echo_batch)
        results = await client.push_batch(auth, "customers", items, options={})
    assert [30, 1] == [len(c[3]["BatchItemRequest"]) for c in rec.calls]
    assert [request_id(items[:30]), request_id(items[30:])] == [c[2]["requestid"] for c in rec.calls]
    assert all(len(c[2]["requestid"]) <= 36 for c in rec.calls)
    assert ({"created"}, 31) == ({r.outcome for r in results}, len({r.external_id for r in results}))


async def test_item_faults_fail_only_their_records(client: QuickBooksClient, auth: StaticAuth) -> None:
    """A duplicate DisplayName (6240) fails its record as validation; the others succeed."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        ok = echo_batch(request)["BatchItemResponse"]
        ok[1] = {
            "bId": "1",
            "Fault": {
                "type": "ValidationFault",
                "Error": [
                    {
                        "Message": "Duplicate Name Exists Error",
                        "Detail": "The name supplied already exists.",
                        "code": "6240",
                        "element": "",
                    }
                ],
            },
        }
        return {"BatchItemResponse": ok}

    with aioresponses() as mocked:
        Recorder(mocked).add("POST", "/batch", answer)
        results = await client.push_batch(auth, "customers", [item(0), item(1), item(2)], options={})
    assert ["created", "failed", "created"] == [r.outcome for r in results]
    assert results[1].error is not None and "validation" == results[1].error.category
    assert "6240" in str(results[1].error)


async def test_update_reads_the_synctoken_and_sends_sparse(
    client: QuickBooksClient, auth: StaticAuth
) -> None:
    """An update without SyncToken reads it first, then sends Id + SyncToken + sparse."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        sent = request["BatchItemRequest"][0]["Customer"]
        return {"BatchItemResponse": [{"bId": "0", "Customer": {**sent, "SyncToken": "5"}}]}

    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("GET", "/query", {"QueryResponse": {"Customer": [row(7, token="4")]}})
        rec.add("POST", "/batch", answer)
        (result,) = await client.push_batch(auth, "customers", [item(1, external_id="7")], options={})
    sent = rec.calls[1][3]["BatchItemRequest"][0]
    assert (
        "SELECT * FROM Customer WHERE Active IN (true, false) AND Id IN ('7') MAXRESULTS 1"
        == rec.calls[0][2]["query"]
    )
    assert ("update", "7", "4", True) == (
        sent["operation"],
        sent["Customer"]["Id"],
        sent["Customer"]["SyncToken"],
        sent["Customer"]["sparse"],
    )
    assert ("updated", "7") == (result.outcome, result.external_id)


async def test_stale_synctoken_is_reread_and_retried_once(client: QuickBooksClient, auth: StaticAuth) -> None:
    """5010 re-reads the token and retries under a derived requestid; success is 'updated'."""
    stale = {
        "BatchItemResponse": [
            {
                "bId": "0",
                "Fault": {
                    "type": "ValidationFault",
                    "Error": [
                        {
                            "Message": "Stale Object Error",
                            "Detail": "You and root were working on this at the same time.",
                            "code": "5010",
                        }
                    ],
                },
            }
        ]
    }
    fresh = {"BatchItemResponse": [{"bId": "0", "Customer": row(7, token="9")}]}
    target = item(1, external_id="7", DisplayName="New name", SyncToken="2")
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("POST", "/batch", stale, fresh)
        rec.add("GET", "/query", {"QueryResponse": {"Customer": [row(7, token="8")]}})
        (result,) = await client.push_batch(auth, "customers", [target], options={})
    batches = [c for c in rec.calls if c[1].endswith("/batch")]
    assert ["2", "8"] == [b[3]["BatchItemRequest"][0]["Customer"]["SyncToken"] for b in batches]
    assert [request_id([target]), request_id([target], why="synctoken-retry")] == [
        b[2]["requestid"] for b in batches
    ]
    assert ("updated", "7") == (result.outcome, result.external_id)


async def test_update_of_a_missing_object_fails_without_a_write(
    client: QuickBooksClient, auth: StaticAuth
) -> None:
    """An Id the query does not find fails that record; nothing is posted."""
    with aioresponses() as mocked:
        rec = Recorder(mocked)
        rec.add("GET", "/query", {"QueryResponse": {}})
        (result,) = await client.push_batch(
            auth, "payments", [item(1, external_id="77", TotalAmt=10)], options={}
        )
    assert ["GET"] == [c[0] for c in rec.calls]
    assert ("failed", "validation") == (result.outcome, result.error.category if result.error else None)


async def test_item_system_fault_fails_without_retry(client: QuickBooksClient, auth: StaticAuth) -> None:
    """A SystemFault on one item fails it for good: replaying the requestid would replay the fault."""

    def answer(request: dict[str, Any]) -> dict[str, Any]:
        items = echo_batch(request)["BatchItemResponse"]
        items[0] = {
            "bId": "0",
            "Fault": {"type": "SystemFault", "Error": [{"Message": "boom", "code": "10000"}]},
        }
        return {"BatchItemResponse": items}

    with aioresponses() as mocked:
        Recorder(mocked).add("POST", "/batch", answer)
        failed, created = await client.push_batch(auth, "customers", [item(0), item(1)], options={})
    assert failed.error is not None
    assert ("failed", "provider", False) == (failed.outcome, failed.error.category, failed.error.retryable)
    assert "created" == created.outcome
