"""The sandbox core's pure parts: tokens, limit windows, fault matching, Stripe form decoding."""

from __future__ import annotations

import pytest

from sandbox.core import Account, Fault, Limits, SandboxState, _Usage
from sandbox.stripe.forms import StripeError, decode


def _state(**options: object) -> SandboxState:
    return SandboxState(**options)  # type: ignore[arg-type]


def test_issued_token_expires_after_its_ttl() -> None:
    """A token works until its TTL passes on the sandbox clock, then identifies nobody."""
    state = _state()
    account = state.add_account(Account(provider="square", name="v1"))
    token = state.issue_token(account, ttl_s=60)
    assert account is state.account_for_token("square", token)
    state.clock_offset_s = 61
    assert state.account_for_token("square", token) is None


def test_refresh_tokens_are_not_access_tokens_and_revocation_sticks() -> None:
    """A refresh token does not authenticate API calls; a revoked token stops working."""
    state = _state()
    account = state.add_account(Account(provider="quickbooks", name="v1"))
    refresh = state.issue_token(account, kind="refresh", ttl_s=None)
    access = state.issue_token(account, ttl_s=None)
    assert (None, account) == (
        state.account_for_token("quickbooks", refresh),
        state.account_for_token("quickbooks", refresh, kind="refresh"),
    )
    state.revoke_token("quickbooks", access)
    assert state.account_for_token("quickbooks", access) is None


def test_registered_oauth_tokens_honour_expires_at() -> None:
    """An access token registered with an RFC 3339 expires_at in the past is refused."""
    state = _state()
    state.add_account(
        Account(
            provider="square",
            name="v1",
            oauth={"access_token": "old", "expires_at": "2000-01-01T00:00:00Z", "refresh_token": "r"},
        )
    )
    assert state.account_for_token("square", "old") is None
    assert "v1" == state.account_for_token("square", "r", kind="refresh").name  # type: ignore[union-attr]


def test_token_ttl_setting_overrides_the_provider_default() -> None:
    """SANDBOX_TOKEN_TTL_SECONDS wins over the provider's own lifetime."""
    assert (3600, 5.0) == (
        _state().token_ttl_s("quickbooks", 3600),
        _state(token_ttl_seconds=5.0).token_ttl_s("quickbooks", 3600),
    )


def test_sliding_windows_and_concurrency_admit_exactly_the_quota() -> None:
    """Per second, per minute and in-flight caps each admit exactly their quota."""
    second = _Usage()
    admitted = [second.admit(Limits(per_second=10), 100.0 + i * 0.01) for i in range(15)]
    assert [True] * 10 + [False] * 5 == admitted
    assert second.admit(Limits(per_second=10), 101.001)  # the first call left the window
    minute = _Usage()
    assert 500 == sum(minute.admit(Limits(per_minute=500), 100.0 + i * 0.05) for i in range(600))
    flight = _Usage()
    assert [True, True, False] == [flight.admit(Limits(concurrency=2), 1.0) for _ in range(3)]


def test_fault_matching_by_provider_account_path_and_count() -> None:
    """A fault matches its provider, account and path prefix, until count faults have fired."""
    account = Account(provider="stripe", name="v1")
    fault = Fault(provider="stripe", account="v1", path_prefix="/v1/refunds", status=500, count=1)
    assert (True, False, False, False) == (
        fault.matches("stripe", account, "/v1/refunds"),
        fault.matches("stripe", account, "/v1/customers"),
        fault.matches("square", account, "/v1/refunds"),
        fault.matches("stripe", None, "/v1/refunds"),
    )
    fault.fired = 1
    assert not fault.matches("stripe", account, "/v1/refunds")


def test_stripe_form_decoding_nests_brackets_and_lists() -> None:
    """Bracketed keys become nested objects; indexed and empty brackets become lists."""
    raw = "email=a%40b.c&address[city]=Paris&metadata[k]=v&expand[0]=x&expand[1]=y&types[]=a&types[]=b"
    assert {
        "email": "a@b.c",
        "address": {"city": "Paris"},
        "metadata": {"k": "v"},
        "expand": ["x", "y"],
        "types": ["a", "b"],
    } == decode(raw)
    with pytest.raises(StripeError):
        decode("bad]key=1")
