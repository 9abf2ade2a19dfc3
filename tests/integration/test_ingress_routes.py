"""Every ingress route and every status of CONTRACT section 6, over loopback HTTP with a fake
publisher and directory (the broker and the database are covered in test_ingress_broker.py)."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from providers import webhooks as hooks
from tests.integration.ingress_support import FakeDirectory, FakePublisher, Running, received, serve_ingress

VENUE = "venue-routes"
STRIPE_SECRET = "whsec_routes_secret"
MC_TOKEN = "mc-token-Abc_123"
SQUARE_KEY = "square-routes-key"
QB_TOKEN = "qb-routes-token"
EVENT = b'{"id":"evt_routes_1","object":"event","type":"customer.created","data":{"object":{}}}'
TWO_MIB = 2 * 1024 * 1024


@pytest.fixture
def directory() -> FakeDirectory:
    return FakeDirectory(
        known={(VENUE, "stripe"), (VENUE, "mailchimp"), ("venue-no-secret", "stripe")},
        secrets={(VENUE, "stripe"): STRIPE_SECRET, (VENUE, "mailchimp"): MC_TOKEN},
    )


@pytest.fixture
def publisher() -> FakePublisher:
    return FakePublisher()


@pytest.fixture
async def ingress(directory: FakeDirectory, publisher: FakePublisher) -> AsyncIterator[Running]:
    async with serve_ingress(
        directory=directory,
        publisher=publisher,
        square_signature_key=SQUARE_KEY,
        quickbooks_verifier_token=QB_TOKEN,
        confirm_timeout_s=0.3,
    ) as running:
        yield running


async def post(url: str, body: Any = b"", headers: dict[str, str] | None = None) -> tuple[int, Any]:
    if isinstance(body, bytes) and len(body) > 1024 * 1024:
        body = io.BytesIO(body)  # aiohttp warns about large raw bytes; BytesIO still sends a length
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.post(url, data=body, headers=headers or {}) as response:
            return response.status, await response.json(content_type=None)


def stripe_headers(body: bytes, *, secret: str = STRIPE_SECRET, at: int | None = None) -> dict[str, str]:
    return {
        "Stripe-Signature": hooks.sign_stripe(body, secret, timestamp=at),
        "Content-Type": "application/json",
    }


# Stripe ------------------------------------------------------------------------------


async def test_stripe_signed_is_published_with_exact_bytes(
    ingress: Running, publisher: FakePublisher
) -> None:
    """A correctly signed Stripe webhook answers 200 and publishes the exact bytes and headers."""
    headers = stripe_headers(EVENT)
    status, body = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, headers | {"X-Other": "1"})
    assert (200, {"status": "accepted"}) == (status, body)
    [(message, message_id)] = publisher.published
    assert ("stripe", VENUE) == (message.provider, message.venue_id)
    assert EVENT == base64.b64decode(message.body)
    expected_headers = {"stripe-signature": headers["Stripe-Signature"], "content-type": "application/json"}
    assert expected_headers == message.headers
    assert 36 == len(message_id)
    assert 1.0 == received(ingress.metrics, "stripe", 200)


async def test_stripe_forged_signature_401(ingress: Running, publisher: FakePublisher) -> None:
    """A body signed with another secret is refused 401 and nothing is published."""
    status, body = await post(
        f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, stripe_headers(EVENT, secret="whsec_forged")
    )
    assert 401 == status
    assert "does not match" in body["error"]
    assert STRIPE_SECRET not in json.dumps(body)
    assert [] == publisher.published
    assert 1.0 == received(ingress.metrics, "stripe", 401)


async def test_stripe_tampered_body_401(ingress: Running, publisher: FakePublisher) -> None:
    """A signed body changed in transit is refused 401."""
    headers = stripe_headers(EVENT)
    status, _ = await post(
        f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT.replace(b"routes", b"Routes"), headers
    )
    assert 401 == status
    assert [] == publisher.published


async def test_stripe_stale_timestamp_401(ingress: Running, publisher: FakePublisher) -> None:
    """A correct signature whose timestamp is over 300 s old is refused 401."""
    headers = stripe_headers(EVENT, at=int(time.time()) - 301)
    status, body = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, headers)
    assert (401, {"error": "Stripe signature timestamp is too old"}) == (status, body)
    assert [] == publisher.published


async def test_stripe_missing_signature_401(
    ingress: Running, publisher: FakePublisher, directory: FakeDirectory
) -> None:
    """No Stripe-Signature is a 401 that opens no secret."""
    status, body = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT)
    assert (401, {"error": "missing Stripe-Signature header"}) == (status, body)
    assert 0 == directory.secret_lookups
    assert [] == publisher.published


async def test_stripe_signature_without_timestamp_400(ingress: Running, publisher: FakePublisher) -> None:
    """A Stripe-Signature without t= cannot be checked at all: 400."""
    v1 = stripe_headers(EVENT)["Stripe-Signature"].split(",")[1]
    status, body = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, {"Stripe-Signature": v1})
    assert (400, {"error": "Stripe-Signature has no t= timestamp"}) == (status, body)
    assert [] == publisher.published
    assert 1.0 == received(ingress.metrics, "stripe", 400)


async def test_stripe_venue_without_secret_401(ingress: Running, publisher: FakePublisher) -> None:
    """A known venue with no webhook secret cannot be verified: 401."""
    status, body = await post(f"{ingress.url}/webhooks/stripe/venue-no-secret", EVENT, stripe_headers(EVENT))
    assert (401, {"error": "this venue has no Stripe webhook secret"}) == (status, body)
    assert [] == publisher.published


async def test_unknown_venue_404_before_anything(
    ingress: Running, publisher: FakePublisher, directory: FakeDirectory
) -> None:
    """An unknown venue is a 404 that reads no secret, even with a 2 MiB body."""
    status, body = await post(
        f"{ingress.url}/webhooks/stripe/venue-nobody", b"x" * TWO_MIB, stripe_headers(EVENT)
    )
    assert (404, {"error": "unknown venue for stripe"}) == (status, body)
    assert 0 == directory.secret_lookups
    assert [] == publisher.published
    assert 1.0 == received(ingress.metrics, "stripe", 404)


async def test_unknown_provider_404_json(ingress: Running) -> None:
    """An unknown provider route is a JSON 404."""
    status, body = await post(f"{ingress.url}/webhooks/shopify/{VENUE}", EVENT)
    assert (404, {"error": "Not Found"}) == (status, body)


async def test_same_event_twice_both_published(ingress: Running, publisher: FakePublisher) -> None:
    """The same event delivered twice is answered 200 twice and published twice (the daemon dedupes)."""
    headers = stripe_headers(EVENT)
    first = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, headers)
    second = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, headers)
    assert [200, 200] == [first[0], second[0]]
    assert [EVENT, EVENT] == [base64.b64decode(m.body) for m, _ in publisher.published]
    assert 2 == len({message_id for _, message_id in publisher.published})


async def test_signed_garbage_is_published(ingress: Running, publisher: FakePublisher) -> None:
    """A correctly signed body the daemon cannot use is still published (it dead-letters it)."""
    garbage = b"this is not json"
    status, _ = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", garbage, stripe_headers(garbage))
    assert 200 == status
    assert [garbage] == [base64.b64decode(m.body) for m, _ in publisher.published]


# Body limit --------------------------------------------------------------------------


async def test_two_mib_body_with_length_413(ingress: Running, publisher: FakePublisher) -> None:
    """A 2 MiB body declared by Content-Length is refused 413."""
    body = b"{" + b" " * (TWO_MIB - 2) + b"}"
    status, answer = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", body, stripe_headers(body))
    assert (413, {"error": f"body of {TWO_MIB} bytes is over the 1048576-byte limit"}) == (status, answer)
    assert [] == publisher.published
    assert 1.0 == received(ingress.metrics, "stripe", 413)


async def _answer_while_sending(url: str, first_bytes: int, headers: dict[str, str]) -> tuple[int, Any, int]:
    """POST a body that stalls after ``first_bytes`` until the answer arrives; (status, body, bytes sent)."""
    answered = asyncio.Event()
    sent = 0

    async def body() -> AsyncIterator[bytes]:
        nonlocal sent
        while sent < first_bytes:
            sent += 16 * 1024
            yield b" " * (16 * 1024)
        await asyncio.wait_for(answered.wait(), timeout=10)  # the rest only after the answer

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=15)) as session:
        async with session.post(url, data=body(), headers=headers) as response:
            answered.set()
            return response.status, await response.json(content_type=None), sent


async def test_two_mib_body_answered_before_it_is_sent(ingress: Running, publisher: FakePublisher) -> None:
    """With Content-Length 2 MiB the 413 comes while only 64 KiB have been sent."""
    headers = stripe_headers(EVENT) | {"Content-Length": str(TWO_MIB)}
    status, _, sent = await _answer_while_sending(
        f"{ingress.url}/webhooks/stripe/{VENUE}", 64 * 1024, headers
    )
    assert (413, 64 * 1024) == (status, sent)
    assert [] == publisher.published


async def test_chunked_body_over_limit_413_while_reading(ingress: Running, publisher: FakePublisher) -> None:
    """A chunked body is refused 413 as soon as it passes 1 MiB, before the rest is sent."""
    status, answer, sent = await _answer_while_sending(
        f"{ingress.url}/webhooks/stripe/{VENUE}", 1024 * 1024 + 32 * 1024, stripe_headers(EVENT)
    )
    assert (413, {"error": "body is over the 1048576-byte limit"}) == (status, answer)
    assert sent < TWO_MIB
    assert [] == publisher.published


async def test_body_exactly_at_limit_accepted(ingress: Running, publisher: FakePublisher) -> None:
    """A signed body of exactly 1,048,576 bytes is accepted."""
    body = b"{" + b" " * (hooks.MAX_BODY_BYTES - 2) + b"}"
    status, _ = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", body, stripe_headers(body))
    assert 200 == status
    assert hooks.MAX_BODY_BYTES == len(base64.b64decode(publisher.published[0][0].body))


# Broker ------------------------------------------------------------------------------


async def test_broker_down_503(ingress: Running, publisher: FakePublisher) -> None:
    """When the broker is away the answer is 503 and nothing is published."""
    publisher.mode = "down"
    status, body = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, stripe_headers(EVENT))
    assert (503, {"error": "the message broker is away or did not confirm within 0.3 s"}) == (status, body)
    assert [] == publisher.published
    assert 1.0 == received(ingress.metrics, "stripe", 503)


async def test_no_confirm_in_time_503(ingress: Running, publisher: FakePublisher) -> None:
    """A confirm that never comes is a 503 once the publisher's confirm timeout passes."""
    publisher.mode = "silent"
    started = time.monotonic()
    status, _ = await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, stripe_headers(EVENT))
    assert (503, [0.3]) == (status, publisher.timeouts_s)
    assert time.monotonic() - started < 2.0
    assert [] == publisher.published


# Mailchimp ---------------------------------------------------------------------------


async def test_mailchimp_form_post_published(ingress: Running, publisher: FakePublisher) -> None:
    """A Mailchimp form post with the venue's token is published with its content type."""
    form = {"type": "subscribe", "fired_at": "2026-01-01 10:00:00", "data[email]": "a@example.com"}
    status, _ = await post(f"{ingress.url}/webhooks/mailchimp/{VENUE}/{MC_TOKEN}", form)
    assert 200 == status
    [(message, _)] = publisher.published
    assert ("mailchimp", VENUE) == (message.provider, message.venue_id)
    assert {"content-type": "application/x-www-form-urlencoded"} == message.headers
    assert b"type=subscribe" in base64.b64decode(message.body)


async def test_mailchimp_wrong_token_401(ingress: Running, publisher: FakePublisher) -> None:
    """A wrong URL token is a 401 that does not echo the token."""
    status, body = await post(f"{ingress.url}/webhooks/mailchimp/{VENUE}/{MC_TOKEN}x", {"type": "subscribe"})
    assert (401, {"error": "the webhook URL token is not this venue's"}) == (status, body)
    assert [] == publisher.published


async def test_mailchimp_unknown_venue_404(ingress: Running) -> None:
    """A venue without Mailchimp is a 404."""
    status, _ = await post(f"{ingress.url}/webhooks/mailchimp/venue-nobody/{MC_TOKEN}", {"type": "subscribe"})
    assert 404 == status


async def test_mailchimp_url_check_get(ingress: Running, publisher: FakePublisher) -> None:
    """Mailchimp's GET URL check answers 200 for the right token, 401/404 otherwise, never publishing."""
    async with aiohttp.ClientSession() as session:
        statuses = []
        for path in (f"{VENUE}/{MC_TOKEN}", f"{VENUE}/wrong", f"venue-nobody/{MC_TOKEN}"):
            async with session.get(f"{ingress.url}/webhooks/mailchimp/{path}") as response:
                statuses.append(response.status)
    assert [200, 401, 404] == statuses
    assert [] == publisher.published


# Square and QuickBooks (app-wide) ----------------------------------------------------


async def test_square_signed_published_without_venue(ingress: Running, publisher: FakePublisher) -> None:
    """A Square webhook signed over our public URL + body is published with venue_id null."""
    body = b'{"merchant_id":"M1","event_id":"e-1","type":"customer.created"}'
    sig = hooks.sign_square(body, signature_key=SQUARE_KEY, notification_url=f"{ingress.url}/webhooks/square")
    status, _ = await post(f"{ingress.url}/webhooks/square", body, {hooks.SQUARE_SIGNATURE: sig})
    assert 200 == status
    [(message, _)] = publisher.published
    assert ("square", None, {hooks.SQUARE_SIGNATURE: sig, "content-type": "application/octet-stream"}) == (
        message.provider,
        message.venue_id,
        message.headers,
    )


async def test_square_signed_for_other_url_401(ingress: Running, publisher: FakePublisher) -> None:
    """A Square signature over another URL is a 401."""
    body = b'{"event_id":"e-2"}'
    sig = hooks.sign_square(
        body, signature_key=SQUARE_KEY, notification_url="https://elsewhere/webhooks/square"
    )
    status, _ = await post(f"{ingress.url}/webhooks/square", body, {hooks.SQUARE_SIGNATURE: sig})
    assert 401 == status
    assert [] == publisher.published


async def test_quickbooks_signed_published_and_forged_401(ingress: Running, publisher: FakePublisher) -> None:
    """QuickBooks: a good intuit-signature is 200, a forged one 401, a missing one 401."""
    body = b'{"eventNotifications":[{"realmId":"123","dataChangeEvent":{"entities":[]}}]}'
    good = hooks.sign_quickbooks(body, verifier_token=QB_TOKEN)
    forged = hooks.sign_quickbooks(body, verifier_token="not-the-token")
    url = f"{ingress.url}/webhooks/quickbooks"
    results = [
        (await post(url, body, h))[0]
        for h in ({hooks.QUICKBOOKS_SIGNATURE: good}, {hooks.QUICKBOOKS_SIGNATURE: forged}, {})
    ]
    assert [200, 401, 401] == results
    [(message, _)] = publisher.published
    assert ("quickbooks", None) == (message.provider, message.venue_id)


async def test_app_wide_route_never_404(ingress: Running) -> None:
    """The app-wide routes never answer 404 for a venue, whatever the body names."""
    body = b'{"merchant_id":"nobody-we-know","event_id":"e-3"}'
    sig = hooks.sign_square(body, signature_key=SQUARE_KEY, notification_url=f"{ingress.url}/webhooks/square")
    status, _ = await post(f"{ingress.url}/webhooks/square", body, {hooks.SQUARE_SIGNATURE: sig})
    assert 200 == status


async def test_app_wide_key_missing_503(directory: FakeDirectory, publisher: FakePublisher) -> None:
    """Without SQUARE_WEBHOOK_SIGNATURE_KEY nothing can be verified: 503 so Square retries."""
    async with serve_ingress(directory=directory, publisher=publisher) as running:
        status, body = await post(f"{running.url}/webhooks/square", b"{}", {hooks.SQUARE_SIGNATURE: "x"})
    assert (503, {"error": "SQUARE_WEBHOOK_SIGNATURE_KEY is not configured on this ingress"}) == (
        status,
        body,
    )
    assert [] == publisher.published


# Health and metrics ------------------------------------------------------------------


async def test_healthz_and_metrics(ingress: Running) -> None:
    """/healthz is 200 and /metrics exports webhooks received by provider and status."""
    await post(f"{ingress.url}/webhooks/stripe/venue-nobody", EVENT)
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ingress.url}/healthz") as response:
            assert 200 == response.status
        async with session.get(f"{ingress.url}/metrics") as response:
            text = await response.text()
    assert 'integration_webhooks_received_total{provider="stripe",status="404"} 1.0' in text


async def test_chunked_body_under_limit_accepted(ingress: Running, publisher: FakePublisher) -> None:
    """A chunked body (no Content-Length) under the limit is read whole and published exactly."""
    pieces = [EVENT[:20], EVENT[20:50], EVENT[50:]]

    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    async with aiohttp.ClientSession() as session:
        headers = stripe_headers(EVENT)
        async with session.post(f"{ingress.url}/webhooks/stripe/{VENUE}", data=body(), headers=headers) as r:
            status = r.status
    assert 200 == status
    assert [EVENT] == [base64.b64decode(m.body) for m, _ in publisher.published]


async def test_refusal_logs_never_carry_secrets(ingress: Running) -> None:
    """Refusals are logged with a reason, never the secret, the signature or the body."""
    from structlog.testing import capture_logs

    forged = stripe_headers(EVENT, secret="whsec_forged")
    with capture_logs() as logs:
        await post(f"{ingress.url}/webhooks/stripe/{VENUE}", EVENT, forged)
        await post(f"{ingress.url}/webhooks/mailchimp/{VENUE}/{MC_TOKEN}x", {"type": "subscribe"})
    text = json.dumps(logs, default=str)
    assert ["webhook_refused", "webhook_refused"] == [entry["event"] for entry in logs]
    for secret in (STRIPE_SECRET, MC_TOKEN, forged["Stripe-Signature"], "evt_routes_1"):
        assert secret not in text


async def test_stalled_body_400_after_body_timeout(
    directory: FakeDirectory, publisher: FakePublisher
) -> None:
    """A body that stops arriving is answered 400 after the body timeout, nothing published."""
    async with serve_ingress(directory=directory, publisher=publisher, body_timeout_s=0.3) as running:
        status, answer, sent = await _answer_while_sending(
            f"{running.url}/webhooks/stripe/{VENUE}", 16 * 1024, stripe_headers(EVENT)
        )
    assert (400, {"error": "the body did not arrive within 0.3 s"}, 16 * 1024) == (status, answer, sent)
    assert [] == publisher.published


async def test_wrong_method_405_json_with_allow(ingress: Running) -> None:
    """A wrong method on a webhook route is a JSON 405 naming the allowed method."""
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{ingress.url}/webhooks/stripe/{VENUE}") as response:
            answer = (response.status, await response.json(), response.headers.get("Allow"))
    assert (405, {"error": "Method Not Allowed"}, "POST") == answer
