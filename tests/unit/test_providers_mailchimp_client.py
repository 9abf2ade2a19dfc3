"""The Mailchimp client with mocked HTTP: auth, data centre, error categories, batches, webhooks."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from providers.auth import StaticAuth
from providers.base import PushItem
from providers.fake import RecordingGate, fake_limits_for
from providers.http import ProviderHttp
from providers.mailchimp import MailchimpClient, member_payload, subscriber_hash
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

KEY = "0123456789abcdef0123456789abcdef-us6"
AUTH = StaticAuth(provider="mailchimp", secret=KEY, account_id="acct", values={"server_prefix": "us6"})
LISTS = re.compile(r"^https://us6\.api\.mailchimp\.test/3\.0/lists(\?.*)?$")
MEMBERS = re.compile(r"^https://us6\.api\.mailchimp\.test/3\.0/lists/L1/members(\?.*)?$")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def client(session: aiohttp.ClientSession) -> MailchimpClient:
    settings = Settings(mailchimp_api_base="https://{dc}.api.mailchimp.test", retry_max_delay_seconds=60)
    http = ProviderHttp(session, limiter=RecordingGate(), settings=settings, limits_for=fake_limits_for)
    return MailchimpClient(http, clock=lambda: 1_800_000_000)


def problem(status: int, title: str, detail: str = "details") -> dict[str, Any]:
    return {
        "type": "https://mailchimp.com/developer/marketing/docs/errors/",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": "abc",
    }


def test_subscriber_hash_matches_mailchimp() -> None:
    """The member id is the MD5 of the lower-cased email (providers.md vector)."""
    assert "0cba00ca3da1b283a57287bcceb17e35" == subscriber_hash(" Jane.Doe@Example.com ")


async def test_key_auth_and_data_centre(client: MailchimpClient) -> None:
    """An API key goes as HTTP Basic to the key's data centre."""
    with aioresponses() as mocked:
        mocked.get(LISTS, payload={"lists": [], "total_items": 0})
        await client.pull_page(AUTH, "lists", cursor=None, resume=None, options={})
        sent = next(iter(mocked.requests.values()))[0]
    expected = "Basic " + base64.b64encode(f"anystring:{KEY}".encode()).decode()
    assert expected == sent.kwargs["headers"]["Authorization"]


@pytest.mark.parametrize(
    ("status", "title", "expected"),
    [
        (401, "API Key Invalid", AuthenticationError),
        (403, "Forbidden", AuthorizationError),
        (400, "Invalid Resource", ValidationError),
        (400, "Member Exists", ValidationError),
        (404, "Resource Not Found", DataError),
        (400, "Forgotten Email Not Subscribed", DataError),
        (429, "Too Many Requests", RateLimitError),
        (500, "Internal Server Error", ProviderError),
        (503, "Service Unavailable", ProviderError),
    ],
)
async def test_error_categories(client: MailchimpClient, status: int, title: str, expected: type) -> None:
    """problem+json errors map to their category with a one-line message naming the title."""
    with aioresponses() as mocked:
        mocked.get(
            LISTS, status=status, payload=problem(status, title), content_type="application/problem+json"
        )
        with pytest.raises(expected) as caught:
            await client.pull_page(AUTH, "lists", cursor=None, resume=None, options={})
    assert f"mailchimp list_lists: HTTP {status}: {title}: details" == str(caught.value)


@pytest.mark.parametrize(
    "body", [b"<!DOCTYPE html><html>maintenance</html>", b'{"lists": [{"id": "a"', b'{"lists": "none"}']
)
async def test_garbage_is_a_provider_error(client: MailchimpClient, body: bytes) -> None:
    """HTML, truncated JSON or a wrong shape is a one-line ProviderError."""
    with aioresponses() as mocked:
        mocked.get(LISTS, status=200, body=body)
        with pytest.raises(ProviderError) as caught:
            await client.pull_page(AUTH, "lists", cursor=None, resume=None, options={})
    assert "\n" not in str(caught.value)


async def test_timeout_is_a_network_error(client: MailchimpClient) -> None:
    """A timeout is a retryable NetworkError."""
    with aioresponses() as mocked:
        mocked.get(LISTS, exception=TimeoutError())
        with pytest.raises(NetworkError):
            await client.pull_page(AUTH, "lists", cursor=None, resume=None, options={})


async def test_contacts_page_by_offset_and_resume_from_cursor(client: MailchimpClient) -> None:
    """Members are read 1000 at a time by offset; the stored cursor sends since_last_changed."""
    members = [
        {"id": f"h{i}", "email_address": f"{i}@x.test", "last_changed": "2026-01-01T00:00:00+00:00"}
        for i in range(2)
    ]
    resume = {"list_id": "L1", "since_last_changed": "2026-01-01T00:00:00+00:00"}
    with aioresponses() as mocked:
        mocked.get(MEMBERS, payload={"members": members[:1], "total_items": 2})
        mocked.get(MEMBERS, payload={"members": members[1:], "total_items": 2})
        first = await client.pull_page(
            AUTH, "contacts", cursor=None, resume=resume, options={"list_id": "L1"}
        )
        last = await client.pull_page(
            AUTH, "contacts", cursor=first.next_cursor, resume=resume, options={"list_id": "L1"}
        )
        urls = [str(key[1]) for key in mocked.requests]
    assert "count=1000" in urls[0] and "offset=0" in urls[0] and "since_last_changed=" in urls[0]
    assert "offset=1" in urls[1]
    assert last.next_cursor is None and "L1" == last.resume_cursor["list_id"]  # type: ignore[index]


async def test_cursor_of_another_list_means_full(client: MailchimpClient) -> None:
    """A stored cursor naming another audience is ignored: the pull is full."""
    with aioresponses() as mocked:
        mocked.get(MEMBERS, payload={"members": [], "total_items": 0})
        await client.pull_page(
            AUTH,
            "contacts",
            cursor=None,
            options={"list_id": "L1"},
            resume={"list_id": "OTHER", "since_last_changed": "2026-01-01T00:00:00+00:00"},
        )
        url = str(next(iter(mocked.requests))[1])
    assert "since_last_changed" not in url


async def test_push_contacts_in_batches_of_500_with_update_existing(client: MailchimpClient) -> None:
    """1001 contacts are three POST /lists/{id} calls, each with update_existing."""
    items = [
        PushItem(str(i), {"email_address": f"u{i}@x.test", "tags": [{"name": "vip"}]}, f"k{i}")
        for i in range(1001)
    ]

    def reply(url: Any, **kwargs: Any) -> Any:
        from aioresponses import CallbackResult

        members = kwargs["json"]["members"]
        return CallbackResult(
            payload={
                "new_members": [
                    {"id": subscriber_hash(m["email_address"]), "email_address": m["email_address"]}
                    for m in members
                ],
                "updated_members": [],
                "errors": [],
            }
        )

    with aioresponses() as mocked:
        mocked.post("https://us6.api.mailchimp.test/3.0/lists/L1", callback=reply, repeat=True)
        results = await client.push_batch(AUTH, "contacts", items, options={"list_id": "L1"})
        bodies = [c.kwargs["json"] for c in next(iter(mocked.requests.values()))]
    assert [500, 500, 1] == [len(b["members"]) for b in bodies]
    assert all(b["update_existing"] is True for b in bodies)
    assert ["vip"] == bodies[0]["members"][0]["tags"]
    assert 1001 == sum(r.outcome == "created" for r in results)


def test_member_payload_normalises_status_and_tags() -> None:
    """Boolean consent becomes a status word; tag objects become names."""
    assert {
        "email_address": "a@x.test",
        "status": "unsubscribed",
        "status_if_new": "unsubscribed",
        "tags": ["a"],
    } == member_payload({"email_address": "a@x.test", "status": False, "tags": [{"name": "a"}, {"name": ""}]})


def test_webhook_dedupe_key_is_the_body_hash() -> None:
    """A form webhook's event id is the SHA-256 of its raw body; a campaign event has no change."""
    client = MailchimpClient.__new__(MailchimpClient)
    body = (
        b"type=unsubscribe&fired_at=2026-01-02+03%3A04%3A05&data%5Bemail%5D=a%40x.test&data%5Blist_id%5D=L1"
    )
    hook = VerifiedWebhook(
        provider="mailchimp",
        venue_id="v",
        received_at=datetime.now(UTC),
        headers={},
        body=base64.b64encode(body).decode(),
    )
    parsed = client.parse_webhook(hook, body)
    change = parsed.changes[0]
    assert hashlib.sha256(body).hexdigest() == parsed.event_id == change.event_id
    assert ("unsubscribed", datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)) == (
        change.record.data["status"],
        change.occurred_at,
    )  # type: ignore[union-attr]
    assert [] == client.parse_webhook(hook, b"type=campaign&data%5Bid%5D=c1").changes
    with pytest.raises(DataError):
        client.parse_webhook(hook, b"data%5Bemail%5D=a%40x.test")


@pytest.mark.parametrize("body", [{}, {"new_members": 5}, {"errors": "none", "new_members": []}])
async def test_a_batch_reply_that_is_not_mailchimps_answer_is_retryable(
    client: MailchimpClient, body: dict[str, Any]
) -> None:
    """An empty 200 (or lists that are not lists) was read as every contact skipped, so
    nothing was written and nobody told; now the batch is a retryable provider error."""
    items = [PushItem("1", {"email_address": "a@x.test"}, "k1")]
    with aioresponses() as mocked:
        mocked.post("https://us6.api.mailchimp.test/3.0/lists/L1", payload=body)
        with pytest.raises(ProviderError) as caught:
            await client.push_batch(AUTH, "contacts", items, options={"list_id": "L1"})
    assert caught.value.retryable


@pytest.mark.parametrize("total", ["many", {"n": 2}, None])
async def test_a_page_whose_total_is_not_a_number_is_retryable(client: MailchimpClient, total: Any) -> None:
    members = [{"id": "h1", "email_address": "1@x.test"}]
    with aioresponses() as mocked:
        mocked.get(MEMBERS, payload={"members": members, "total_items": total})
        with pytest.raises(ProviderError) as caught:
            await client.pull_page(AUTH, "contacts", cursor=None, resume=None, options={"list_id": "L1"})
    assert caught.value.retryable


@pytest.mark.parametrize("body", [{}, {"email_address": "a@x.test"}])
async def test_a_fetched_member_without_an_id_is_retryable_not_a_key_error(
    client: MailchimpClient, body: dict[str, Any]
) -> None:
    with aioresponses() as mocked:
        mocked.get("https://us6.api.mailchimp.test/3.0/lists/L1/members/h1", payload=body)
        with pytest.raises(ProviderError) as caught:
            await client.fetch_record(AUTH, "contacts", "L1/h1")
    assert caught.value.retryable
