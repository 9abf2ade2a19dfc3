"""Provider defaults, overrides and the pure arithmetic of the limiter."""

from __future__ import annotations

import asyncio
import math
from typing import Any

import pytest

from service.errors import ConfigurationError, NetworkError, RateLimitError
from service.limiter import (
    DEFAULT_MARGIN_S,
    BucketState,
    Limits,
    MemoryBucketStore,
    RateLimiter,
    limits_for,
    pause,
    reserve,
    state_from_json,
    state_to_json,
    windows,
)
from tests.helpers import eventually


def test_provider_defaults_follow_the_contract() -> None:
    """Stripe 100/s live and 25/s test, QuickBooks 10/s + 500/min + 10 in flight, and so on."""
    assert Limits(100.0, 0, None, None) == limits_for("stripe")
    assert Limits(25.0, 0, None, None) == limits_for("stripe", test_mode=True)
    assert Limits(10.0, 0, 500, 10) == limits_for("quickbooks")
    assert Limits(10.0, 0, None, 10) == limits_for("mailchimp")
    assert Limits(10.0, 0, None, None) == limits_for("square")


def test_overrides_replace_rate_and_concurrency() -> None:
    """RATE_LIMIT_<PROVIDER>_* values win over the defaults."""
    assert Limits(4.0, 0, None, 2) == limits_for("square", per_second=4.0, concurrency=2)
    assert Limits(3.0, 0, 500, 10) == limits_for("quickbooks", test_mode=True, per_second=3.0)


def test_unknown_provider_and_bad_limits_are_configuration_errors() -> None:
    """A provider without limits or an impossible burst fails loudly."""
    with pytest.raises(ConfigurationError):
        limits_for("paypal")
    with pytest.raises(ConfigurationError):
        Limits(per_second=10, burst=10)
    with pytest.raises(ConfigurationError):
        Limits(per_second=0.5, burst=1)


@pytest.mark.parametrize("limits", [limits_for("stripe"), limits_for("quickbooks"), Limits(25, burst=3)])
def test_every_burst_fits_inside_its_window(limits: Limits) -> None:
    """burst + rate x (period + margin) <= quota for every window."""
    for window in windows(limits):
        rate = 1 / window.interval_s(DEFAULT_MARGIN_S)
        assert window.burst + rate * (window.period_s + DEFAULT_MARGIN_S) <= window.quota + 1e-9


def test_slow_rates_become_one_call_per_period() -> None:
    """0.5/s is one call every two seconds."""
    assert [(2.0, 1)] == [(w.period_s, w.quota) for w in windows(Limits(per_second=0.5))]


def test_reserve_spaces_grants_and_refuses_without_changing_state() -> None:
    """The second grant waits one interval; a refused one leaves the state as it was."""
    limits = Limits(per_second=10)
    state, first = reserve(BucketState(), now=100.0, limits=limits, margin_s=0.0, max_wait_s=1.0)
    state, second = reserve(state, now=100.0, limits=limits, margin_s=0.0, max_wait_s=1.0)
    after, refused = reserve(state, now=100.0, limits=limits, margin_s=0.0, max_wait_s=0.05)
    assert (100.0, 100.1) == (first.at, pytest.approx(second.at))
    assert ("too_long", state) == (refused.kind, after)


def test_pause_voids_reservations_and_blocks_until_retry_after() -> None:
    """A 429 bumps the epoch and no grant comes before its end."""
    limits = Limits(per_second=10)
    state, _ = reserve(BucketState(), now=0.0, limits=limits, margin_s=0.0, max_wait_s=9)
    state, _ = pause(state, now=0.0, retry_after_s=2.0)
    _, decision = reserve(state, now=0.5, limits=limits, margin_s=0.0, max_wait_s=9)
    assert (1, 2.0) == (state.epoch, decision.at)


def test_state_round_trips_through_json() -> None:
    """What the PostgreSQL store writes it reads back unchanged."""
    state = BucketState({"1.0": (5.5, 0.1)}, 7.0, 3, {"lease": 9.0})
    assert state == state_from_json(state_to_json(state), 7.0)
    assert BucketState() == state_from_json("{}")


async def test_refusal_carries_the_wait_as_retry_after() -> None:
    """The caller gets a RateLimitError with the wait so it can republish the message delayed."""
    now = [50.0]
    limiter = RateLimiter(MemoryBucketStore(), clock=lambda: now[0])
    limits = Limits(per_second=1)
    async with limiter.acquire("square", "m", limits, max_wait_s=0):
        pass
    with pytest.raises(RateLimitError) as caught:
        async with limiter.acquire("square", "m", limits, max_wait_s=0.5):
            pass
    assert caught.value.retry_after_s == pytest.approx(1 + DEFAULT_MARGIN_S)


class Recorder:
    """A LimiterObserver that keeps what it was told."""

    def __init__(self) -> None:
        self.events: list[tuple[str, str, float]] = []

    def waited(self, provider: str, seconds: float) -> None:
        self.events.append(("waited", provider, seconds))

    def tokens_available(self, provider: str, tokens: float) -> None:
        self.events.append(("tokens", provider, tokens))

    def throttled(self, provider: str) -> None:
        self.events.append(("throttled", provider, math.nan))


async def test_observer_hears_waits_tokens_and_429s_by_provider() -> None:
    """Metrics get the wait, the tokens left and each 429, labelled by provider only."""
    recorder = Recorder()
    limiter = RateLimiter(MemoryBucketStore(), clock=lambda: 10.0, observer=recorder)
    async with limiter.acquire("stripe", "acct", Limits(per_second=100, burst=4), max_wait_s=1):
        pass
    await limiter.penalize("stripe", "acct", 1.0)
    assert ["waited", "tokens", "throttled"] == [kind for kind, _, _ in recorder.events]
    assert {"stripe"} == {provider for _, provider, _ in recorder.events}
    assert (0.0, pytest.approx(4.0)) == (recorder.events[0][2], recorder.events[1][2])


async def test_a_local_release_wakes_a_local_waiter_at_once() -> None:
    """A waiter for a slot in the same process gets it on release, not at its next poll."""
    limiter = RateLimiter(MemoryBucketStore(), slot_poll_s=60)
    limits = Limits(per_second=1000, concurrency=1)
    holding, let_go = asyncio.Event(), asyncio.Event()

    async def holder() -> None:
        async with limiter.acquire("quickbooks", "realm", limits, max_wait_s=1):
            holding.set()
            await let_go.wait()

    async def waiter() -> None:
        async with limiter.acquire("quickbooks", "realm", limits, max_wait_s=120):
            pass

    held = asyncio.create_task(holder())
    await holding.wait()
    waiting = asyncio.create_task(waiter())
    await eventually(lambda: ("quickbooks", "realm") in limiter._freed, timeout=5, what="a waiter")
    let_go.set()
    await asyncio.wait_for(asyncio.gather(held, waiting), timeout=5)
    assert {} == (await limiter._store.read("quickbooks", "realm")).leases


class FailingReleaseStore(MemoryBucketStore):
    """A store whose releases fail, as when PostgreSQL goes away mid-call."""

    async def update(self, provider: str, account: str, change: Any) -> Any:
        if getattr(change, "__qualname__", "").startswith("RateLimiter._release"):
            raise NetworkError("rate-limit store failed: ConnectionResetError")
        return await super().update(provider, account, change)


async def test_a_failed_release_keeps_the_callers_own_error() -> None:
    """When the slot cannot be given back, the call's own exception still reaches the caller."""
    limiter = RateLimiter(FailingReleaseStore())
    with pytest.raises(KeyError):
        async with limiter.acquire("mailchimp", "user", Limits(per_second=10, concurrency=1), max_wait_s=1):
            raise KeyError("the provider call failed")
