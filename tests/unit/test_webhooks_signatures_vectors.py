"""Each provider's signature check against the documented vectors and its failure modes."""

from __future__ import annotations

import time

import pytest

from providers import webhooks as w

STRIPE_BODY = b'{"id":"evt_123","object":"event","type":"customer.created"}'
STRIPE_SECRET = "whsec_test_secret"
SQUARE_KEY = "Ibxx_5AKakO-3qeNVR61Dw"
SQUARE_URL = "https://webhook.site/679a4f3a-dcfa-49ee-bac5-9d0edad886b9"
SQUARE_BODY = (
    b'{"merchant_id":"MLEFBHHSJGVHD","type":"webhooks.test_notification","event_id":'
    b'"ac3ac95b-f97d-458c-a6e6-18981597e05f","created_at":"2022-07-13T20:30:59.037339943Z",'
    b'"data":{"type":"webhooks","id":"bc368e64-01aa-407e-b46e-3231809b1129"}}'
)
QB_TOKEN = "test-verifier-token"
QB_BODY = (
    b'{"eventNotifications":[{"realmId":"123146096291789","dataChangeEvent":{"entities":'
    b'[{"name":"Customer","id":"1","operation":"Create","lastUpdated":"2025-01-01T00:00:00.000Z"}]}}]}'
)


def test_stripe_vector_signature() -> None:
    """Our Stripe signer reproduces the documented example."""
    expected = "t=1700000000,v1=d4614dbc82e21d983b7993d5e6767485fa5cde0a992683a6f6ebbd300e3614f9"
    assert expected == w.sign_stripe(STRIPE_BODY, STRIPE_SECRET, timestamp=1700000000)


def test_stripe_fresh_signature_passes() -> None:
    """A freshly signed body verifies."""
    w.verify_stripe(STRIPE_BODY, w.sign_stripe(STRIPE_BODY, STRIPE_SECRET), STRIPE_SECRET)


def test_stripe_stale_timestamp_rejected() -> None:
    """A correct signature older than 300 s is rejected as stale (401)."""
    header = w.sign_stripe(STRIPE_BODY, STRIPE_SECRET, timestamp=int(time.time()) - 301)
    with pytest.raises(w.SignatureRejected, match="too old"):
        w.verify_stripe(STRIPE_BODY, header, STRIPE_SECRET)


def test_stripe_any_matching_v1_passes() -> None:
    """With several v1 signatures (a secret being rolled), one match is enough."""
    good = w.sign_stripe(STRIPE_BODY, STRIPE_SECRET)
    t, v1 = good.split(",")
    w.verify_stripe(STRIPE_BODY, f"{t},v1={'0' * 64},{v1},v0=abc", STRIPE_SECRET)


def test_stripe_wrong_secret_rejected() -> None:
    """A body signed with another secret is rejected (401)."""
    header = w.sign_stripe(STRIPE_BODY, "whsec_other")
    with pytest.raises(w.SignatureRejected):
        w.verify_stripe(STRIPE_BODY, header, STRIPE_SECRET)


@pytest.mark.parametrize("header", [None, ""])
def test_stripe_missing_header_rejected(header: str | None) -> None:
    """No Stripe-Signature is a 401, not a 400."""
    with pytest.raises(w.SignatureRejected, match="missing"):
        w.verify_stripe(STRIPE_BODY, header, STRIPE_SECRET)


@pytest.mark.parametrize("header", ["v1=abc", "t=soon,v1=abc", "garbage"])
def test_stripe_unparseable_header_is_uncheckable(header: str) -> None:
    """A Stripe-Signature without a usable t= cannot be checked (400)."""
    with pytest.raises(w.SignatureUncheckable):
        w.verify_stripe(STRIPE_BODY, header, STRIPE_SECRET)


def test_stripe_header_without_a_v1_signature_is_rejected() -> None:
    """A timestamp and no v1= signature is a missing signature: 401 (CONTRACT section 6),
    not the 400 kept for a header that cannot be checked at all."""
    with pytest.raises(w.SignatureRejected, match="no v1= signature"):
        w.verify_stripe(STRIPE_BODY, "t=1700000000", STRIPE_SECRET)


def test_stripe_non_utf8_body_rejected() -> None:
    """Bytes that are not UTF-8 cannot carry a Stripe signature."""
    body = b"\xff\xfe"
    with pytest.raises(w.SignatureRejected):
        w.verify_stripe(body, w.sign_stripe(body, STRIPE_SECRET), STRIPE_SECRET)


def test_square_vector_signature() -> None:
    """Our Square signer reproduces Square's official test vector, and it verifies."""
    expected = "GF4YkrJgGBDZ9NIYbNXBnMzqb2HoL4RW/S6vkZ9/2N4="
    assert expected == w.sign_square(SQUARE_BODY, signature_key=SQUARE_KEY, notification_url=SQUARE_URL)
    w.verify_square(SQUARE_BODY, expected, signature_key=SQUARE_KEY, notification_url=SQUARE_URL)


def test_square_other_url_rejected() -> None:
    """The signature binds the notification URL: another URL fails."""
    sig = w.sign_square(SQUARE_BODY, signature_key=SQUARE_KEY, notification_url=SQUARE_URL)
    with pytest.raises(w.SignatureRejected):
        w.verify_square(SQUARE_BODY, sig, signature_key=SQUARE_KEY, notification_url=SQUARE_URL + "x")


def test_square_missing_header_rejected() -> None:
    """No Square signature header is a 401."""
    with pytest.raises(w.SignatureRejected, match="missing"):
        w.verify_square(SQUARE_BODY, None, signature_key=SQUARE_KEY, notification_url=SQUARE_URL)


def test_quickbooks_vector_signature() -> None:
    """Our intuit-signature reproduces the documented example, and it verifies."""
    expected = "2u4Ai3jvu8WVKJjiGfjN4bEcENtj2bDTB4LNOrtUt84="
    assert expected == w.sign_quickbooks(QB_BODY, verifier_token=QB_TOKEN)
    w.verify_quickbooks(QB_BODY, expected, verifier_token=QB_TOKEN)


def test_quickbooks_missing_header_rejected() -> None:
    """No intuit-signature is a 401."""
    with pytest.raises(w.SignatureRejected, match="missing"):
        w.verify_quickbooks(QB_BODY, None, verifier_token=QB_TOKEN)


def test_mailchimp_token() -> None:
    """The URL token must equal the stored one; no stored token never matches."""
    w.verify_mailchimp_token("tok-123", "tok-123")
    with pytest.raises(w.SignatureRejected):
        w.verify_mailchimp_token("tok-124", "tok-123")
    with pytest.raises(w.SignatureRejected):
        w.verify_mailchimp_token("tok-123", None)


def test_forwarded_headers_only_signature_and_content_type() -> None:
    """Only the provider's signature and content-type are forwarded, lower-cased."""
    headers = {"Stripe-Signature": "t=1,v1=a", "Content-Type": "application/json", "Cookie": "x"}
    expected = {"stripe-signature": "t=1,v1=a", "content-type": "application/json"}
    assert expected == w.forwarded_headers("stripe", headers)
    assert {"content-type": "application/json"} == w.forwarded_headers("mailchimp", headers)


def test_route_paths() -> None:
    """Route paths match CONTRACT section 6."""
    assert "/webhooks/stripe/v1" == w.route_path("stripe", "v1")
    assert "/webhooks/mailchimp/v1/tok" == w.route_path("mailchimp", "v1", "tok")
    assert "/webhooks/square" == w.route_path("square")
    assert "/webhooks/quickbooks" == w.route_path("quickbooks")
