"""QuickBooksClient against the sandbox: every entity and direction, batches, SyncToken, replays."""

from __future__ import annotations

import asyncio
import base64
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from providers.auth import StaticAuth
from providers.base import Page, PushItem
from providers.http import ProviderHttp
from providers.quickbooks import QuickBooksClient
from providers.quickbooks.batch import request_id
from service.config import Settings
from service.limiter import MemoryBucketStore, RateLimiter
from service.messages import VerifiedWebhook, idempotency_key


@pytest.fixture
async def client(sandbox_server: Any) -> AsyncIterator[QuickBooksClient]:
    """A client on a real limiter with QuickBooks' default realm limits (10/s, 500/min, 10 in flight)."""
    async with aiohttp.ClientSession() as session:
        settings = Settings(quickbooks_api_base=f"{sandbox_server.url}/quickbooks")
        http = ProviderHttp(session, limiter=RateLimiter(MemoryBucketStore()), settings=settings)
        yield QuickBooksClient(http)


@pytest.fixture
def realm(sandbox_server: Any) -> tuple[str, StaticAuth]:
    """A fresh realm: (sandbox account name, auth with its access token and realm id)."""
    name, realm_id = f"venue-{uuid.uuid4().hex[:8]}", str(9130000000000000 + uuid.uuid4().int % 10**12)
    access = f"at-{uuid.uuid4().hex}"
    sandbox_server.control(
        "POST",
        "/_sandbox/accounts",
        {
            "provider": "quickbooks",
            "account": name,
            "oauth": {
                "client_id": sandbox_server.quickbooks_client_id,
                "client_secret": sandbox_server.quickbooks_client_secret,
                "access_token": access,
                "refresh_token": f"rt-{uuid.uuid4().hex}",
                "realm_id": realm_id,
                "expires_at": "2099-01-01T00:00:00Z",
            },
        },
    )
    return name, StaticAuth(
        provider="quickbooks",
        secret=access,
        account_id=realm_id,
        venue_id=name,
        values={"realm_id": realm_id},
    )


def item(job: str, record_id: str, payload: dict[str, Any], external_id: str | None = None) -> PushItem:
    return PushItem(
        record_id=record_id,
        payload=payload,
        external_id=external_id,
        idempotency_key=idempotency_key(job, record_id, "upsert"),
    )


async def pull_all(
    client: QuickBooksClient, auth: StaticAuth, entity: str, resume: dict[str, Any] | None
) -> Page:
    page = await client.pull_page(auth, entity, cursor=None, resume=resume, options={})
    records = list(page.records)
    while page.next_cursor is not None:
        page = await client.pull_page(auth, entity, cursor=page.next_cursor, resume=resume, options={})
        records += page.records
    return Page(records=records, next_cursor=None, resume_cursor=page.resume_cursor)


def batch_calls(sandbox: Any, name: str) -> list[dict[str, Any]]:
    found = sandbox.control("GET", f"/_sandbox/calls?provider=quickbooks&account={name}")["calls"]
    return [c for c in found if c["path"].endswith("/batch")]


async def test_31_customers_two_batches_replay_once_pull_incremental(
    client: QuickBooksClient, realm: tuple[str, StaticAuth], sandbox_server: Any
) -> None:
    """31 creates are two /batch calls; replaying them makes no new customer; pulls see them."""
    name, auth = realm
    items = [
        item("job-q", f"r{n}", {"DisplayName": f"Guest {n:02d}", "GivenName": "Guest"}) for n in range(31)
    ]
    created = await client.push_batch(auth, "customers", items, options={})
    replayed = await client.push_batch(auth, "customers", items, options={})
    batches = await asyncio.to_thread(batch_calls, sandbox_server, name)
    assert 4 == len(batches) and 2 == len({c["idempotency_key"] for c in batches})
    assert ({"created"}, 31) == ({r.outcome for r in created}, len({r.external_id for r in created}))
    assert [r.external_id for r in created] == [r.external_id for r in replayed]
    await asyncio.to_thread(sandbox_server.control, "POST", "/_sandbox/clock", {"advance_seconds": 5})
    (late,) = await client.push_batch(
        auth, "customers", [item("job-l", "late", {"DisplayName": "Late"})], options={}
    )
    full = await pull_all(client, auth, "customers", None)
    assert 32 == len(full.records) and full.resume_cursor is not None
    await asyncio.to_thread(sandbox_server.control, "POST", "/_sandbox/clock", {"advance_seconds": 5})
    target = created[4].external_id
    (updated,) = await client.push_batch(
        auth, "customers", [item("job-u", "r4", {"FamilyName": "Lovelace"}, target)], options={}
    )
    later = await pull_all(client, auth, "customers", full.resume_cursor)
    assert ("updated", "Lovelace") == (updated.outcome, (updated.data or {}).get("FamilyName"))
    # >= on whole seconds: the boundary second's record comes again, the 30 older ones do not
    assert {target, late.external_id} == {r.external_id for r in later.records}


async def test_stale_synctoken_recovered_and_duplicate_name_refused(
    client: QuickBooksClient, realm: tuple[str, StaticAuth], sandbox_server: Any
) -> None:
    """A stale SyncToken (5010) is re-read and retried once; a duplicate DisplayName is validation."""
    name, auth = realm
    first, second = await client.push_batch(
        auth,
        "customers",
        [item("job-s", "a", {"DisplayName": "Ada"}), item("job-s", "b", {"DisplayName": "Grace"})],
        options={},
    )
    await client.push_batch(
        auth, "customers", [item("job-t", "a", {"Notes": "v1"}, first.external_id)], options={}
    )
    stale = item("job-t2", "a", {"Notes": "v2", "SyncToken": "0"}, first.external_id)
    (recovered,) = await client.push_batch(auth, "customers", [stale], options={})
    sent = [c["idempotency_key"] for c in await asyncio.to_thread(batch_calls, sandbox_server, name)][-2:]
    assert [request_id([stale]), request_id([stale], why="synctoken-retry")] == sent
    assert ("updated", "v2", "2") == (
        recovered.outcome,
        (recovered.data or {}).get("Notes"),
        (recovered.data or {}).get("SyncToken"),
    )
    (duplicate,) = await client.push_batch(
        auth, "customers", [item("job-d", "b", {"DisplayName": "Ada"}, second.external_id)], options={}
    )
    assert ("failed", "validation") == (
        duplicate.outcome,
        duplicate.error.category if duplicate.error else None,
    )
    assert "6240" in str(duplicate.error)


async def test_invoices_and_payments_both_ways(
    client: QuickBooksClient, realm: tuple[str, StaticAuth]
) -> None:
    """Invoices and payments: batch create, sparse update, pull, fetch; a missing id is None."""
    _, auth = realm
    (customer,) = await client.push_batch(
        auth, "customers", [item("job-p", "c", {"DisplayName": "Payer"})], options={}
    )
    ref = {"value": customer.external_id}
    line = {
        "DetailType": "SalesItemLineDetail",
        "Amount": 25.0,
        "SalesItemLineDetail": {"Qty": 2, "UnitPrice": 12.5},
    }
    (invoice,) = await client.push_batch(
        auth, "invoices", [item("job-p", "i", {"CustomerRef": ref, "Line": [line]})], options={}
    )
    (payment,) = await client.push_batch(
        auth,
        "payments",
        [
            item(
                "job-p",
                "p",
                {
                    "CustomerRef": ref,
                    "TotalAmt": 25.0,
                    "Line": [
                        {"Amount": 25.0, "LinkedTxn": [{"TxnId": invoice.external_id, "TxnType": "Invoice"}]}
                    ],
                },
            )
        ],
        options={},
    )
    (memo,) = await client.push_batch(
        auth,
        "invoices",
        [item("job-p2", "i", {"PrivateNote": "paid at the door"}, invoice.external_id)],
        options={},
    )
    (noted,) = await client.push_batch(
        auth, "payments", [item("job-p2", "p", {"PrivateNote": "cash"}, payment.external_id)], options={}
    )
    assert ["created", "created", "updated", "updated"] == [
        r.outcome for r in (invoice, payment, memo, noted)
    ]
    assert [invoice.external_id] == [
        r.external_id for r in (await pull_all(client, auth, "invoices", None)).records
    ]
    assert [payment.external_id] == [
        r.external_id for r in (await pull_all(client, auth, "payments", None)).records
    ]
    fetched = await client.fetch_record(auth, "invoices", invoice.external_id or "")
    assert fetched is not None and (0.0, "paid at the door") == (
        fetched.data["Balance"],
        fetched.data["PrivateNote"],
    )
    paid = await client.fetch_record(auth, "payments", payment.external_id or "")
    assert paid is not None and "cash" == paid.data["PrivateNote"]
    assert None is await client.fetch_record(auth, "invoices", "99999")


async def test_company_info_fetch_and_health(client: QuickBooksClient, realm: tuple[str, StaticAuth]) -> None:
    """company_info is one record; fetch_record of a customer works; the health check passes."""
    _, auth = realm
    page = await client.pull_page(auth, "company_info", cursor=None, resume=None, options={})
    assert 1 == len(page.records) and page.records[0].data.get("CompanyName")
    (created,) = await client.push_batch(
        auth, "customers", [item("job-h", "h", {"DisplayName": "Fetch Me"})], options={}
    )
    fetched = await client.fetch_record(auth, "customers", created.external_id or "")
    assert fetched is not None and "Fetch Me" == fetched.data["DisplayName"]
    await client.check_health()


@pytest.mark.parametrize("webhook_format", ["classic", "cloudevents"])
async def test_sandbox_webhooks_parse_into_id_only_changes(
    client: QuickBooksClient, realm: tuple[str, StaticAuth], sandbox_server: Any, webhook_format: str
) -> None:
    """Both formats from the sandbox give the realm and the entity id, with no record."""
    from tests.integration.sandbox.receiver import webhook_receiver

    name, auth = realm
    (created,) = await client.push_batch(
        auth, "customers", [item("job-w", "w", {"DisplayName": "Hooked"})], options={}
    )
    with webhook_receiver() as received:
        await asyncio.to_thread(
            sandbox_server.control,
            "POST",
            "/_sandbox/webhooks/quickbooks",
            {
                "account": name,
                "url": received.url,
                "format": webhook_format,
                "event": {"name": "Customer", "id": created.external_id, "operation": "Update"},
            },
        )
    ((_, _, body),) = received.requests
    message = VerifiedWebhook(
        provider="quickbooks",
        venue_id=None,
        received_at=datetime.now(UTC),
        headers={},
        body=base64.b64encode(body).decode(),
    )
    parsed = client.parse_webhook(message, body)
    assert [("customers", created.external_id, auth.account_id, None)] == [
        (c.entity, c.external_id, c.account, c.record) for c in parsed.changes
    ]


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (401, "authentication"),
        (403, "authorization"),
        (400, "validation"),
        (429, "rate_limit"),
        (500, "provider"),
        (503, "provider"),
    ],
)
async def test_sandbox_faults_map_to_categories(
    client: QuickBooksClient, realm: tuple[str, StaticAuth], sandbox_server: Any, status: int, category: str
) -> None:
    """Intuit's own bodies for injected faults (the 429 one is XML) map to the contract's categories."""
    from service.errors import IntegrationError

    name, auth = realm
    await asyncio.to_thread(
        sandbox_server.control,
        "POST",
        "/_sandbox/faults",
        {"provider": "quickbooks", "account": name, "status": status, "count": 1},
    )
    with pytest.raises(IntegrationError) as caught:
        await client.pull_page(auth, "invoices", cursor=None, resume=None, options={})
    assert (category, status) == (caught.value.category, caught.value.status)
