"""Property: flipping any byte of a signed body or its signature fails every provider's check."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from providers import webhooks as w

SECRET = "whsec_property_secret"
KEY = "square-property-key"
URL = "https://ingress.example/webhooks/square"
TOKEN = "quickbooks-property-token"

bodies = st.binary(min_size=1, max_size=512)
utf8_bodies = st.text(min_size=1, max_size=256).map(str.encode)


def _flip(data: bytes, index: int, mask: int) -> bytes:
    i = index % len(data)
    return data[:i] + bytes([data[i] ^ mask]) + data[i + 1:]


@settings(max_examples=150, deadline=None)
@given(body=utf8_bodies, index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_stripe_flipped_body_byte_fails(body: bytes, index: int, mask: int) -> None:
    """A Stripe-signed body with one byte changed never verifies."""
    header = w.sign_stripe(body, SECRET)
    w.verify_stripe(body, header, SECRET)
    with pytest.raises(w.SignatureRejected):
        w.verify_stripe(_flip(body, index, mask), header, SECRET)


@settings(max_examples=150, deadline=None)
@given(body=utf8_bodies, index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_stripe_flipped_signature_byte_fails(body: bytes, index: int, mask: int) -> None:
    """Changing any byte of the v1 signature fails (or makes the header uncheckable)."""
    header = w.sign_stripe(body, SECRET).encode()
    start = header.index(b"v1=") + 3
    flipped = header[:start] + _flip(header[start:], index, mask)
    with pytest.raises((w.SignatureRejected, w.SignatureUncheckable)):
        w.verify_stripe(body, flipped.decode("latin-1"), SECRET)


@settings(max_examples=150, deadline=None)
@given(body=bodies, index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_square_flipped_byte_fails(body: bytes, index: int, mask: int) -> None:
    """A Square-signed body with one byte changed never verifies."""
    sig = w.sign_square(body, signature_key=KEY, notification_url=URL)
    w.verify_square(body, sig, signature_key=KEY, notification_url=URL)
    with pytest.raises(w.SignatureRejected):
        w.verify_square(_flip(body, index, mask), sig, signature_key=KEY, notification_url=URL)


@settings(max_examples=150, deadline=None)
@given(body=bodies, index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=255))
def test_quickbooks_flipped_byte_fails(body: bytes, index: int, mask: int) -> None:
    """An intuit-signed body with one byte changed never verifies."""
    sig = w.sign_quickbooks(body, verifier_token=TOKEN)
    w.verify_quickbooks(body, sig, verifier_token=TOKEN)
    with pytest.raises(w.SignatureRejected):
        w.verify_quickbooks(_flip(body, index, mask), sig, verifier_token=TOKEN)


@settings(max_examples=150, deadline=None)
@given(token=st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=8, max_size=64),
       index=st.integers(min_value=0), mask=st.integers(min_value=1, max_value=127))
def test_mailchimp_flipped_token_byte_fails(token: str, index: int, mask: int) -> None:
    """A Mailchimp URL token with one byte changed never matches."""
    w.verify_mailchimp_token(token, token)
    flipped = _flip(token.encode(), index, mask).decode("latin-1")
    with pytest.raises(w.SignatureRejected):
        w.verify_mailchimp_token(flipped, token)
