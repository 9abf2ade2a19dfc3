"""The Mailchimp client against the sandbox: lists and contacts, pulled and pushed."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest

from providers.auth import StaticAuth
from providers.base import PushItem
from providers.http import ProviderHttp
from providers.mailchimp import MailchimpClient, subscriber_hash
from service.config import Settings
from service.errors import ProviderError, RateLimitError, ValidationError
from service.limiter import MemoryBucketStore, RateLimiter
from service.messages import VerifiedWebhook, idempotency_key
from service.metrics import Metrics
from tests.helpers import eventually

CONTACT = {
    "company": "Venue",
    "address1": "1 Main St",
    "city": "Springfield",
    "state": "IL",
    "zip": "62701",
    "country": "US",
}
DEFAULTS = {"from_name": "Venue", "from_email": "news@example.com", "subject": "News", "language": "en"}


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(sandbox_server: Any, session: aiohttp.ClientSession) -> MailchimpClient:
    settings = Settings(mailchimp_api_base=f"{sandbox_server.url}/mailchimp", retry_max_delay_seconds=5)
    limiter = RateLimiter(MemoryBucketStore())
    return MailchimpClient(ProviderHttp(session, limiter=limiter, settings=settings, metrics=Metrics()))


@pytest.fixture
def auth(sandbox_server: Any, venue_id: str) -> StaticAuth:
    key = f"{uuid.uuid4().hex}-us1"
    sandbox_server.control(
        "POST", "/_sandbox/accounts", {"provider": "mailchimp", "account": venue_id, "api_key": key}
    )
    return StaticAuth(
        provider="mailchimp",
        secret=key,
        account_id=venue_id,
        venue_id=venue_id,
        values={"server_prefix": "us1"},
    )


def item(record_id: str, payload: dict[str, Any]) -> PushItem:
    return PushItem(record_id, payload, idempotency_key("job-m", record_id, "create"))


async def make_list(client: MailchimpClient, auth: StaticAuth, name: str = "Newsletter") -> str:
    results = await client.push_batch(
        auth,
        "lists",
        [item("l1", {"name": name, "contact": CONTACT, "campaign_defaults": DEFAULTS})],
        options={},
    )
    assert results[0].external_id is not None, results[0].error
    return results[0].external_id


async def pull_all(
    client: MailchimpClient,
    auth: StaticAuth,
    entity: str,
    options: dict[str, Any],
    resume: dict[str, Any] | None = None,
) -> tuple[list[Any], dict[str, Any] | None]:
    records, cursor = [], None
    while True:
        page = await client.pull_page(auth, entity, cursor=cursor, resume=resume, options=options)
        records += page.records
        if page.next_cursor is None:
            return records, page.resume_cursor
        cursor = page.next_cursor


async def test_push_list_looks_the_name_up_first(client: MailchimpClient, auth: StaticAuth) -> None:
    """Creating a list twice by name creates it once; the second push is skipped."""
    first = await make_list(client, auth, "Members")
    again = await client.push_batch(
        auth,
        "lists",
        [item("l2", {"name": "members", "contact": CONTACT, "campaign_defaults": DEFAULTS})],
        options={},
    )
    lists, _ = await pull_all(client, auth, "lists", {})
    assert ("skipped", first) == (again[0].outcome, again[0].external_id)
    assert [first] == [r.external_id for r in lists]


async def test_push_contacts_upserts_with_tags(client: MailchimpClient, auth: StaticAuth) -> None:
    """Contacts are upserted in one batch with their tags; a second push updates them."""
    list_id = await make_list(client, auth)
    payload = {
        "email_address": "Ada@Example.com",
        "merge_fields": {"FNAME": "Ada"},
        "tags": [{"name": "vip"}],
        "status": True,
    }
    first = await client.push_batch(auth, "contacts", [item("c1", payload)], options={"list_id": list_id})
    again = await client.push_batch(
        auth,
        "contacts",
        [item("c1", {**payload, "merge_fields": {"FNAME": "Ada K"}})],
        options={"list_id": list_id},
    )
    members, _ = await pull_all(client, auth, "contacts", {"list_id": list_id})
    assert (["created"], ["updated"]) == ([r.outcome for r in first], [r.outcome for r in again])
    assert [subscriber_hash("ada@example.com")] == [m.external_id for m in members]
    assert "Ada K" == members[0].data["merge_fields"]["FNAME"]
    assert ["vip"] == [t["name"] for t in members[0].data["tags"]]
    assert "subscribed" == members[0].data["status"]


async def test_bad_contact_fails_alone(client: MailchimpClient, auth: StaticAuth) -> None:
    """A contact Mailchimp rejects fails with validation; the rest of the batch is written."""
    list_id = await make_list(client, auth)
    results = await client.push_batch(
        auth,
        "contacts",
        [
            item("good", {"email_address": "ok@example.com", "status": "subscribed"}),
            item("bad", {"email_address": "ok2@example.com", "status": "not-a-status"}),
            item("noemail", {"merge_fields": {"FNAME": "x"}}),
        ],
        options={"list_id": list_id},
    )
    assert ["created", "failed", "failed"] == [r.outcome for r in results]
    assert all(isinstance(r.error, ValidationError) for r in results[1:])


async def test_contacts_paginate_and_pull_incrementally(client: MailchimpClient, auth: StaticAuth) -> None:
    """More than one page is read in full; the next incremental pull returns only changes."""
    list_id = await make_list(client, auth)
    emails = [f"m{i}@example.com" for i in range(1203)]
    results = await client.push_batch(
        auth,
        "contacts",
        [item(e, {"email_address": e, "status": "subscribed"}) for e in emails],
        options={"list_id": list_id},
    )
    assert 1203 == sum(r.outcome == "created" for r in results)
    full, resume = await pull_all(client, auth, "contacts", {"list_id": list_id})
    assert 1203 == len({r.external_id for r in full})
    assert resume is not None and list_id == resume["list_id"]
    # Mailchimp times are whole seconds, on the provider's clock (not ours: the shared sandbox's
    # clock may run ahead): "since" is the newest change seen, and the change comes > 1 s later.
    newest = max(r.updated_at for r in full if r.updated_at is not None)
    pulled_at = time.monotonic()
    await eventually(lambda: time.monotonic() - pulled_at > 1.05, timeout=3, what="a second to pass")
    ahead = {"list_id": list_id, "since_last_changed": newest.isoformat()}
    await client.push_batch(
        auth,
        "contacts",
        [item("m5", {"email_address": "m5@example.com", "merge_fields": {"FNAME": "Five"}})],
        options={"list_id": list_id},
    )
    changed, _ = await pull_all(client, auth, "contacts", {"list_id": list_id}, resume=ahead)
    assert [subscriber_hash("m5@example.com")] == [r.external_id for r in changed]


async def test_contacts_need_a_list_id(client: MailchimpClient, auth: StaticAuth) -> None:
    """Pulling contacts without options.list_id is a validation error."""
    with pytest.raises(ValidationError):
        await client.pull_page(auth, "contacts", cursor=None, resume=None, options={})


async def test_faults_map_to_retryable_errors(
    client: MailchimpClient, auth: StaticAuth, sandbox_server: Any, venue_id: str
) -> None:
    """Sandbox 503 and 429 faults become retryable provider and rate-limit errors."""
    outcomes = []
    for status in (503, 429):
        sandbox_server.control(
            "POST",
            "/_sandbox/faults",
            {"provider": "mailchimp", "account": venue_id, "status": status, "count": 1},
        )
        with pytest.raises((ProviderError, RateLimitError)) as caught:
            await client.pull_page(auth, "lists", cursor=None, resume=None, options={})
        outcomes.append((type(caught.value), caught.value.retryable))
    assert [(ProviderError, True), (RateLimitError, True)] == outcomes


async def test_fetch_record_health_and_webhook(client: MailchimpClient, auth: StaticAuth) -> None:
    """A member is fetched by list/hash; health passes; a form webhook parses to a contact change."""
    list_id = await make_list(client, auth)
    await client.push_batch(
        auth,
        "contacts",
        [item("c", {"email_address": "w@example.com", "status": "subscribed"})],
        options={"list_id": list_id},
    )
    found = await client.fetch_record(auth, "contacts", f"{list_id}/{subscriber_hash('w@example.com')}")
    await client.check_health()
    body = (
        "type=profile&fired_at=2026-01-01+10%3A00%3A00&data%5Bemail%5D=w%40example.com"
        f"&data%5Blist_id%5D={list_id}"
    )
    hook = VerifiedWebhook(
        provider="mailchimp",
        venue_id="v",
        received_at=datetime.now(UTC),
        headers={},
        body=base64.b64encode(body.encode()).decode(),
    )
    parsed = client.parse_webhook(hook, body.encode())
    assert found is not None and "w@example.com" == found.data["email_address"]
    assert [("contacts", subscriber_hash("w@example.com"), "upserted")] == [
        (c.entity, c.external_id, c.op) for c in parsed.changes
    ]
