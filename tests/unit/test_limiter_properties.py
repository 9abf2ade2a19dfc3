"""Properties of the rate limiter under a virtual clock (CONTRACT section 6)."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import math
import random
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.errors import RateLimitError
from service.limiter import DEFAULT_MARGIN_S, Limits, MemoryBucketStore, RateLimiter

T = TypeVar("T")
SETTLE_STEPS = 25  # loop turns that let every runnable task reach its next virtual sleep
PROPERTY = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class VirtualTime:
    """A fake clock: sleeps complete in time order, as fast as the event loop runs."""

    def __init__(self, *, oversleep: Callable[[], float] = lambda: 0.0) -> None:
        self.now = 1_000_000.0
        self._oversleep = oversleep
        self._timers: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        when = self.now + max(0.0, delay) + self._oversleep()
        heapq.heappush(self._timers, (when, next(self._seq), future))
        await future

    async def run(self, main: Coroutine[Any, Any, T]) -> T:
        """Run ``main``, jumping the clock to the next timer whenever every task is asleep."""
        task = asyncio.ensure_future(main)
        while not task.done():
            for _ in range(SETTLE_STEPS):
                await asyncio.sleep(0)
            while self._timers and self._timers[0][2].done():
                heapq.heappop(self._timers)  # cancelled sleepers
            if task.done():
                break
            assert self._timers, "deadlock: every task waits and no timer is set"
            when, _, future = heapq.heappop(self._timers)
            self.now = max(self.now, when)
            future.set_result(None)
        return task.result()


def provider_windows(limits: Limits) -> list[tuple[float, int]]:
    """(period, quota) pairs as the provider counts them, derived independently of the limiter."""
    found = [(1.0, math.floor(limits.per_second))] if limits.per_second >= 1 else [(1 / limits.per_second, 1)]
    if limits.per_minute is not None:
        found.append((60.0, limits.per_minute))
    return found


def busiest_window(times: list[float], period: float) -> int:
    """The most timestamps in any half-open window [t, t + period)."""
    ordered = sorted(times)
    best, start = 0, 0
    for end, stamp in enumerate(ordered):
        while ordered[start] <= stamp - period:
            start += 1
        best = max(best, end - start + 1)
    return best


@st.composite
def limits_strategy(draw: st.DrawFn, *, concurrency: bool = False) -> Limits:
    per_second = draw(st.sampled_from([0.5, 1.0, 2.5, 3.0, 10.0, 25.0, 100.0]))
    burst = draw(st.integers(0, max(0, math.floor(per_second) - 1))) if per_second >= 1 else 0
    per_minute = draw(st.one_of(st.none(), st.integers(3, 40)))
    cap = draw(st.integers(1, 4)) if concurrency else None
    return Limits(per_second=per_second, burst=min(burst, 5), per_minute=per_minute, concurrency=cap)


async def grant_times(
    limiter: RateLimiter, vt: VirtualTime, *, key: str, limits: Limits, calls: list[float],
    max_wait_s: float = 1e9,
) -> list[float]:
    """Each entry of ``calls`` is a task that idles that long, then acquires once."""
    stamps: list[float] = []

    async def one(idle_s: float) -> None:
        await vt.sleep(idle_s)
        async with limiter.acquire("stripe", key, limits, max_wait_s=max_wait_s):
            stamps.append(vt.now)

    await asyncio.gather(*(one(idle) for idle in calls))
    return stamps


idle_lists = st.lists(st.floats(0, 90, allow_nan=False), min_size=1, max_size=60)


@PROPERTY
@given(limits=limits_strategy(), idles=idle_lists, data=st.data())
def test_no_window_at_the_provider_holds_more_than_the_quota(
    limits: Limits, idles: list[float], data: st.DataObject
) -> None:
    """Grants plus any arrival jitter up to the margin never exceed a window's quota."""
    vt = VirtualTime()
    limiter = RateLimiter(MemoryBucketStore(), clock=vt.clock, sleep=vt.sleep)
    stamps = asyncio.run(vt.run(grant_times(limiter, vt, key="a", limits=limits, calls=idles)))
    jitter = data.draw(st.lists(st.floats(0, DEFAULT_MARGIN_S), min_size=len(stamps), max_size=len(stamps)))
    arrivals = [stamp + delay for stamp, delay in zip(stamps, jitter, strict=True)]
    for period, quota in provider_windows(limits):
        assert busiest_window(arrivals, period) <= quota


@PROPERTY
@given(limits=limits_strategy(), seed=st.integers(0, 2**32 - 1), calls=st.integers(5, 60))
def test_late_wakers_never_push_a_window_over_the_quota(limits: Limits, seed: int, calls: int) -> None:
    """A loop that oversleeps (a stalled process) still sends within every window's quota."""
    rng = random.Random(seed)
    vt = VirtualTime(oversleep=lambda: 0.0 if rng.random() < 0.6 else rng.uniform(0, 0.2))
    limiter = RateLimiter(MemoryBucketStore(), clock=vt.clock, sleep=vt.sleep)
    stamps = asyncio.run(vt.run(grant_times(limiter, vt, key="a", limits=limits, calls=[0.0] * calls)))
    assert calls == len(stamps)
    for period, quota in provider_windows(limits):
        assert busiest_window(stamps, period) <= quota


@PROPERTY
@given(limits=st.lists(limits_strategy(), min_size=2, max_size=4), loads=st.data())
def test_no_key_starves_another(limits: list[Limits], loads: st.DataObject) -> None:
    """Each key gets exactly the grant times it would get alone, however busy the others are."""
    calls = [loads.draw(idle_lists) for _ in limits]

    async def together(vt: VirtualTime) -> list[list[float]]:
        limiter = RateLimiter(MemoryBucketStore(), clock=vt.clock, sleep=vt.sleep)
        runs = (grant_times(limiter, vt, key=f"k{i}", limits=lim, calls=calls[i])
                for i, lim in enumerate(limits))
        return list(await asyncio.gather(*runs))

    shared_vt = VirtualTime()
    shared = asyncio.run(shared_vt.run(together(shared_vt)))
    for index, lim in enumerate(limits):
        alone_vt = VirtualTime()
        limiter = RateLimiter(MemoryBucketStore(), clock=alone_vt.clock, sleep=alone_vt.sleep)
        run = grant_times(limiter, alone_vt, key="x", limits=lim, calls=calls[index])
        alone = asyncio.run(alone_vt.run(run))
        assert sorted(alone) == sorted(shared[index])


@PROPERTY
@given(limits=limits_strategy(), calls=st.integers(1, 40), max_wait_s=st.floats(0, 3))
def test_a_wait_over_the_bound_raises_at_once_and_costs_nothing(
    limits: Limits, calls: int, max_wait_s: float
) -> None:
    """Refused acquires raise at once with a retry hint; granted ones stay within the quota."""
    vt = VirtualTime()
    limiter = RateLimiter(MemoryBucketStore(), clock=vt.clock, sleep=vt.sleep)
    granted: list[float] = []
    refusals: list[tuple[float, float, float | None]] = []

    async def one() -> None:
        asked = vt.now
        try:
            async with limiter.acquire("square", "a", limits, max_wait_s=max_wait_s):
                granted.append(vt.now)
        except RateLimitError as exc:
            refusals.append((asked, vt.now, exc.retry_after_s))

    async def main() -> None:
        await asyncio.gather(*(one() for _ in range(calls)))

    asyncio.run(vt.run(main()))
    assert calls == len(granted) + len(refusals)
    assert all(asked == raised and hint is not None and hint > max_wait_s for asked, raised, hint in refusals)
    assert all(stamp - 1_000_000.0 <= max_wait_s + 1e-9 for stamp in granted)
    for period, quota in provider_windows(limits):
        assert busiest_window(granted, period) <= quota


class Boom(Exception):
    """The provider call failed."""


@PROPERTY
@given(
    limits=limits_strategy(concurrency=True),
    plans=st.lists(
        st.tuples(st.floats(0, 45), st.sampled_from(["ok", "raise", "cancel"]), st.floats(0, 50)),
        min_size=1, max_size=15,
    ),
)
def test_concurrency_never_exceeds_the_cap_and_slots_come_back(
    limits: Limits, plans: list[tuple[float, str, float]]
) -> None:
    """In-flight calls stay within the cap, also across lease renewals, failures and cancels."""
    vt = VirtualTime()
    store = MemoryBucketStore()
    limiter = RateLimiter(store, clock=vt.clock, sleep=vt.sleep, slot_poll_s=0.7)
    in_flight, peak = 0, 0

    async def call(hold_s: float, outcome: str) -> None:
        nonlocal in_flight, peak
        async with limiter.acquire("quickbooks", "realm", limits, max_wait_s=1e9):
            in_flight += 1
            peak = max(peak, in_flight)
            try:
                await vt.sleep(hold_s)
                if outcome == "raise":
                    raise Boom("provider failed")
            finally:
                in_flight -= 1

    async def cancel_later(task: asyncio.Task[None], after_s: float) -> None:
        await vt.sleep(after_s)
        task.cancel()

    async def main() -> None:
        tasks = [asyncio.ensure_future(call(hold, outcome)) for hold, outcome, _ in plans]
        cancels = [cancel_later(task, after)
                   for task, (_, outcome, after) in zip(tasks, plans, strict=True) if outcome == "cancel"]
        await asyncio.gather(*cancels)
        await asyncio.gather(*tasks, return_exceptions=True)
        async with limiter.acquire("quickbooks", "realm", limits, max_wait_s=1e9):
            pass  # a slot is free again

    asyncio.run(vt.run(main()))
    assert peak <= (limits.concurrency or 0)
    assert {} == asyncio.run(store.read("quickbooks", "realm")).leases


def test_penalize_pauses_waiting_and_new_callers() -> None:
    """After a 429 nothing is granted until Retry-After has passed, reservations included."""
    vt = VirtualTime()
    limiter = RateLimiter(MemoryBucketStore(), clock=vt.clock, sleep=vt.sleep)
    limits = Limits(per_second=10)
    start = vt.now

    async def penalize_soon() -> float:
        await vt.sleep(0.5)
        await limiter.penalize("stripe", "a", 3.0)
        return vt.now

    async def main() -> tuple[list[float], float]:
        stamps, paused_at = await asyncio.gather(
            grant_times(limiter, vt, key="a", limits=limits, calls=[0.0] * 30), penalize_soon()
        )
        return stamps, paused_at

    stamps, paused_at = asyncio.run(vt.run(main()))
    assert start + 0.5 == paused_at
    assert [] == [s for s in stamps if paused_at < s < paused_at + 3.0]
    assert 30 == len(stamps)
    assert busiest_window(stamps, 1.0) <= 10


def test_saturation_uses_at_least_95_percent_of_the_quota() -> None:
    """With more callers than quota, grants run at quota / (1 + margin) for every provider."""
    for limits in (Limits(per_second=100), Limits(per_second=25), Limits(per_second=10, per_minute=500)):
        vt = VirtualTime()
        limiter = RateLimiter(MemoryBucketStore(), clock=vt.clock, sleep=vt.sleep)
        stamps = asyncio.run(vt.run(grant_times(limiter, vt, key="a", limits=limits, calls=[0.0] * 700)))
        period, quota = provider_windows(limits)[-1]
        span = min(period, max(stamps) - min(stamps))
        count = sum(1 for s in stamps if s < min(stamps) + span)
        assert count / (quota * span / period) >= 0.95
