"""Webhook signature checks and dedupe keys (CONTRACT section 6), as pure functions.

Each provider signs the raw body its own way; every check here works on the exact bytes
received and compares in constant time:

- Stripe: ``Stripe-Signature: t=<unix>,v1=<hex>``, checked by the ``stripe`` package
  (HMAC-SHA256 of ``"{t}.{body}"`` with the ``whsec_`` secret, 300 s tolerance).
- Square: ``x-square-hmacsha256-signature`` = base64 HMAC-SHA256 of the route's public URL
  followed by the body, keyed with the app's signature key.
- QuickBooks: ``intuit-signature`` = base64 HMAC-SHA256 of the body, keyed with the app's
  verifier token.
- Mailchimp signs nothing: the venue's secret token is part of the URL.

A failed check raises :class:`SignatureRejected` (HTTP 401: missing, bad or stale) or
:class:`SignatureUncheckable` (HTTP 400: the header cannot be parsed at all).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from typing import Any

import stripe

MAX_BODY_BYTES = 1_048_576
STRIPE_TOLERANCE_S = 300

STRIPE_SIGNATURE = "stripe-signature"
SQUARE_SIGNATURE = "x-square-hmacsha256-signature"
QUICKBOOKS_SIGNATURE = "intuit-signature"

# The headers forwarded in a verified webhook message, per provider (lower-case).
FORWARDED_HEADERS: Mapping[str, tuple[str, ...]] = {
    "stripe": (STRIPE_SIGNATURE, "content-type"),
    "square": (SQUARE_SIGNATURE, "content-type"),
    "quickbooks": (QUICKBOOKS_SIGNATURE, "content-type"),
    "mailchimp": ("content-type",),
}

# What to subscribe to at each provider (used by `webhooks register`).
EVENT_TYPES: Mapping[str, tuple[str, ...]] = {
    "stripe": (
        "customer.created", "customer.updated", "customer.deleted",
        "payment_intent.succeeded", "payment_intent.payment_failed", "payment_intent.canceled",
        "charge.succeeded", "charge.failed", "charge.refunded",
        "refund.created", "refund.updated", "refund.failed",
    ),
    "square": (
        "customer.created", "customer.updated", "customer.deleted",
        "order.created", "order.updated", "inventory.count.updated",
        "location.created", "location.updated",
    ),
    "quickbooks": ("Customer", "Invoice", "Payment"),
    "mailchimp": ("subscribe", "unsubscribe", "profile", "upemail", "cleaned"),
}


class SignatureRejected(Exception):
    """The signature or token is missing, wrong or stale (HTTP 401)."""

    status = 401


class SignatureUncheckable(Exception):
    """The signature header cannot be parsed, so nothing can be checked (HTTP 400)."""

    status = 400


def route_path(provider: str, venue_id: str | None = None, token: str | None = None) -> str:
    """The ingress route path of a provider's webhooks (append to INGRESS_PUBLIC_URL)."""
    if provider == "stripe":
        return f"/webhooks/stripe/{venue_id}"
    if provider == "mailchimp":
        return f"/webhooks/mailchimp/{venue_id}/{token}"
    if provider in ("square", "quickbooks"):
        return f"/webhooks/{provider}"
    raise ValueError(f"unknown provider {provider!r}")


def forwarded_headers(provider: str, headers: Mapping[str, str]) -> dict[str, str]:
    """Only the signature and content-type headers, with lower-case names."""
    wanted = FORWARDED_HEADERS[provider]
    return {name.lower(): value for name, value in headers.items() if name.lower() in wanted}


# Stripe ------------------------------------------------------------------------------


def _stripe_parts(header: str) -> tuple[int, list[str]]:
    """(timestamp, v1 signatures) of a Stripe-Signature header; raise SignatureUncheckable."""
    timestamp: int | None = None
    signatures: list[str] = []
    for item in header.split(","):
        key, _, value = item.strip().partition("=")
        if key == "t" and timestamp is None:
            try:
                timestamp = int(value)
            except ValueError:
                raise SignatureUncheckable("Stripe-Signature has a malformed t=") from None
        elif key == "v1":
            signatures.append(value)
    if timestamp is None:
        raise SignatureUncheckable("Stripe-Signature has no t= timestamp")
    if not signatures:  # a missing signature (401), not one that cannot be checked (400)
        raise SignatureRejected("Stripe-Signature has no v1= signature")
    return timestamp, signatures


def verify_stripe(
    body: bytes, header: str | None, secret: str, *, tolerance_s: int = STRIPE_TOLERANCE_S,
) -> None:
    """Check a Stripe-Signature with the stripe package; raise SignatureRejected/Uncheckable."""
    if not header:
        raise SignatureRejected("missing Stripe-Signature header")
    if not header.isascii():
        raise SignatureRejected("Stripe signature does not match the body")
    try:
        payload = body.decode("utf-8")
    except UnicodeDecodeError:
        # Stripe signs UTF-8 JSON; bytes that are not UTF-8 cannot carry its signature.
        _stripe_parts(header)
        raise SignatureRejected("Stripe signature does not match the body") from None
    try:
        stripe.WebhookSignature.verify_header(payload, header, secret, tolerance_s)
    except stripe.SignatureVerificationError as exc:
        _stripe_parts(header)  # an unparseable header is a 400, not a 401
        if "tolerance" in str(exc):
            raise SignatureRejected("Stripe signature timestamp is too old") from None
        raise SignatureRejected("Stripe signature does not match the body") from None


def sign_stripe(body: bytes, secret: str, *, timestamp: int | None = None) -> str:
    """A Stripe-Signature header for ``body`` (tests, the bench and the demo)."""
    at = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{at}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={at},v1={digest}"


# Square and QuickBooks ---------------------------------------------------------------


def _b64_hmac(key: str, message: bytes) -> str:
    return base64.b64encode(hmac.new(key.encode(), message, hashlib.sha256).digest()).decode()


def _compare(expected: str, given: str, what: str) -> None:
    if not given.isascii() or not hmac.compare_digest(expected.encode(), given.strip().encode()):
        raise SignatureRejected(f"{what} does not match the body")


def sign_square(body: bytes, *, signature_key: str, notification_url: str) -> str:
    """The x-square-hmacsha256-signature value for ``body`` sent to ``notification_url``."""
    return _b64_hmac(signature_key, notification_url.encode() + body)


def verify_square(body: bytes, header: str | None, *, signature_key: str, notification_url: str) -> None:
    """Check Square's HMAC over the route's public URL + body; raise SignatureRejected."""
    if not header:
        raise SignatureRejected("missing x-square-hmacsha256-signature header")
    expected = sign_square(body, signature_key=signature_key, notification_url=notification_url)
    _compare(expected, header, "Square signature")


def sign_quickbooks(body: bytes, *, verifier_token: str) -> str:
    """The intuit-signature value for ``body``."""
    return _b64_hmac(verifier_token, body)


def verify_quickbooks(body: bytes, header: str | None, *, verifier_token: str) -> None:
    """Check Intuit's HMAC of the body with the verifier token; raise SignatureRejected."""
    if not header:
        raise SignatureRejected("missing intuit-signature header")
    _compare(sign_quickbooks(body, verifier_token=verifier_token), header, "intuit-signature")


# Mailchimp ---------------------------------------------------------------------------


def verify_mailchimp_token(given: str, expected: str | None) -> None:
    """Compare the URL token with the venue's stored token in constant time."""
    if expected is None or not hmac.compare_digest(
        given.encode("utf-8", "surrogateescape"), expected.encode("utf-8", "surrogateescape")
    ):
        raise SignatureRejected("the webhook URL token is not this venue's")


# Dedupe keys -------------------------------------------------------------------------


def _json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None


def _string_field(value: Any, field: str) -> str | None:
    if isinstance(value, dict):
        found = value.get(field)
        if isinstance(found, str) and found:
            return found
    return None


def body_digest(body: bytes) -> str:
    """The SHA-256 (hex) of the raw body: the fallback dedupe key."""
    return hashlib.sha256(body).hexdigest()


def dedupe_keys(provider: str, body: bytes) -> list[str]:
    """One dedupe key per event in the body (CONTRACT section 6), never empty.

    Stripe event ``id``, Square ``event_id``, each QuickBooks CloudEvents ``id``; else
    (Mailchimp, classic QuickBooks, anything unreadable) the SHA-256 of the raw body.
    """
    data = _json(body)
    key: str | None = None
    if provider == "stripe":
        key = _string_field(data, "id")
    elif provider == "square":
        key = _string_field(data, "event_id")
    elif provider == "quickbooks":
        events = data if isinstance(data, list) else [data]
        ids = [_string_field(e, "id") for e in events if isinstance(e, dict) and "specversion" in e]
        if ids and all(ids) and len(ids) == len(events):
            return [i for i in ids if i]
    return [key if key else body_digest(body)]


def dedupe_key(provider: str, body: bytes) -> str:
    """The one dedupe key of a single-event body (a multi-event body: its SHA-256)."""
    keys = dedupe_keys(provider, body)
    return keys[0] if len(keys) == 1 else body_digest(body)
