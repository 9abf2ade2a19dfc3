"""Token endpoint replies: refused vs away, rotating refresh tokens kept, expiry computed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from providers.auth import needs_refresh
from providers.http import HttpReply
from providers.oauth import RefreshRefused, merge_tokens, read_token_reply
from service.errors import ConfigurationError, ProviderError, RateLimitError

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def reply(status: int, body: object) -> HttpReply:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return HttpReply("quickbooks", "oauth_refresh", status, {"Content-Type": "application/json"}, raw)


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, {"error": "invalid_grant"}, "invalid_grant"),
        (401, {"errors": [{"category": "AUTHENTICATION_ERROR", "code": "UNAUTHORIZED"}]}, "UNAUTHORIZED"),
    ],
)
def test_refusals(status: int, body: object, expected: str) -> None:
    """400/401 from a token endpoint is a refusal of the venue's grant, naming the OAuth error."""
    with pytest.raises(RefreshRefused) as caught:
        read_token_reply(reply(status, body))
    assert expected in str(caught.value)


@pytest.mark.parametrize(
    "body",
    [
        {"error": "invalid_client"},
        {"error": "unauthorized_client", "error_description": "client not allowed"},
        {"errors": [{"category": "AUTHENTICATION_ERROR", "code": "UNAUTHORIZED", "detail": "Invalid client_id."}]},
    ],
)
def test_a_refused_client_is_our_configuration_not_the_venues_credential(body: object) -> None:
    """The OAuth server refusing our app's client (a rotated client secret, say) says
    nothing about the venue's grant: a ConfigurationError naming the settings, never a
    refusal that would mark every venue's credential invalid."""
    with pytest.raises(ConfigurationError, match="_CLIENT_ID/_SECRET"):
        read_token_reply(reply(401, body))


@pytest.mark.parametrize("body", [b"<html>401 Authorization Required</html>", b""])
def test_a_400_or_401_that_is_not_the_oauth_servers_answer_is_retryable(body: bytes) -> None:
    """A proxy's page is not a refusal of the grant (the credential stays valid)."""
    with pytest.raises(ProviderError) as caught:
        read_token_reply(reply(401, body))
    assert caught.value.retryable


@pytest.mark.parametrize("expires_in", [float("nan"), 1e300, 10**30])
def test_an_expiry_out_of_range_keeps_the_new_tokens(expires_in: float) -> None:
    """The refresh succeeded: a nonsense expires_in must not lose the rotated tokens (it
    raised after the old refresh token was already spent)."""
    merged = merge_tokens({"access_token": "a", "refresh_token": "r"},
                          {"access_token": "b", "refresh_token": "r2", "expires_in": expires_in}, now=NOW)
    assert ("b", "r2", None) == (merged["access_token"], merged["refresh_token"], merged["expires_at"])


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (503, b"<html>down</html>", ProviderError),
        (429, {}, RateLimitError),
        (200, b"<html>", ProviderError),
        (200, {"token_type": "bearer"}, ProviderError),
    ],
)
def test_outages_and_garbage_are_retryable(status: int, body: object, expected: type) -> None:
    """5xx, 429 and unusable 200s are retryable errors, never a refusal."""
    with pytest.raises(expected) as caught:
        read_token_reply(reply(status, body))
    assert caught.value.retryable


def test_merge_keeps_old_refresh_token_and_ids() -> None:
    """No refresh token in the reply keeps the stored one; realm id kept; expiry from expires_in."""
    old = {"access_token": "a", "refresh_token": "r", "expires_at": None, "realm_id": "9"}
    merged = merge_tokens(old, {"access_token": "b", "expires_in": 3600}, now=NOW)
    assert {
        "access_token": "b",
        "refresh_token": "r",
        "expires_at": "2026-01-01T13:00:00Z",
        "realm_id": "9",
    } == merged


def test_merge_rotates_refresh_token_and_reads_expires_at() -> None:
    """A new refresh token replaces the old; Square's expires_at is kept as RFC 3339 UTC."""
    merged = merge_tokens(
        {"access_token": "a", "refresh_token": "r"},
        {"access_token": "b", "refresh_token": "r2", "expires_at": "2026-02-01T00:00:00Z"},
        now=NOW,
    )
    assert ("r2", "2026-02-01T00:00:00Z") == (merged["refresh_token"], merged["expires_at"])


def test_refresh_window_is_five_minutes() -> None:
    """A token is due within five minutes of expiry, and never without an expiry."""
    assert needs_refresh(NOW + timedelta(minutes=4, seconds=59), now=NOW)
    assert not needs_refresh(NOW + timedelta(minutes=6), now=NOW)
    assert not needs_refresh(None, now=NOW)
