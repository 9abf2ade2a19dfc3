"""Per-account rate limiting: GCRA spacing per window, concurrency leases, 429 pauses.

Pure arithmetic over a ``BucketState``; the clock and the sleep are passed in, and the
state lives in a ``BucketStore`` (``MemoryBucketStore`` here for one process and the unit
tests, ``service.database.ratelimit.PostgresBucketStore`` shared by every process).

Why GCRA with a margin (numbers in bench/LIMITER.md): every grant is a reservation of
the next send time on a shared "theoretical arrival time" (TAT), spaced by
``(period + margin) / (quota - burst)``. Any half-open window of ``period + margin``
then holds at most ``quota`` grants, so a send that reaches the provider up to
``margin`` later than its grant (event-loop lag, network jitter) still cannot push any
provider-side window of ``period`` over the quota. Utilisation under saturation is
``period / (period + margin)``: 0.971 for one-second windows with the 30 ms default.
A waiter that wakes later than ``LATE_TOLERANCE_S`` (25 ms) after its slot gives the
slot up and reserves again, so a stalled process never fires a bunch of stale slots at
once; the 5 ms left of the margin absorb network jitter. A send up to ``margin`` late
is safe because the next ``quota`` reservations span ``period + margin``.

Windows are half-open, ``[t, t + period)``. A rate below 1/s becomes one call per
``1 / rate`` seconds; a fractional rate above 1/s is rounded down (a one-second window
cannot hold 2.5 calls).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from service.errors import ConfigurationError, IntegrationError, RateLimitError

T = TypeVar("T")

DEFAULT_MARGIN_S = 0.030  # jitter allowed between grant and arrival at the provider
LATE_TOLERANCE_S = 0.025  # a waiter later than this re-reserves instead of sending
LEASE_TTL_S = 30.0  # a crashed holder's concurrency slot comes back after this
SLOT_POLL_S = 0.02  # first re-check of a waiter for a concurrency slot; doubles up to:
SLOT_POLL_MAX_S = 0.25  # (a local release wakes local waiters at once)
MINUTE_BURST_DIVISOR = 50  # per-minute burst allowance: 2% of the minute quota

# (per_second live, per_second test, per_minute, concurrency); providers.md sections 1.6-4.4.
# Mailchimp publishes only "10 simultaneous connections"; 10/s is our own polite rate.
DEFAULTS: dict[str, tuple[float, float, int | None, int | None]] = {
    "stripe": (100.0, 25.0, None, None),
    "square": (10.0, 10.0, None, None),
    "quickbooks": (10.0, 10.0, 500, 10),
    "mailchimp": (10.0, 10.0, None, 10),
}


@dataclass(frozen=True)
class Limits:
    """One account's quotas: calls per second (+ burst), optional per minute and in flight."""

    per_second: float
    burst: int = 0
    per_minute: int | None = None
    concurrency: int | None = None

    def __post_init__(self) -> None:
        if not self.per_second > 0 or self.burst < 0:
            raise ConfigurationError(f"invalid rate limit {self.per_second}/s burst {self.burst}")
        if self.per_second >= 1 and self.burst >= math.floor(self.per_second):
            raise ConfigurationError(f"burst {self.burst} must be below the quota {self.per_second}/s")
        if self.per_second < 1 and self.burst:
            raise ConfigurationError("a rate below 1/s allows no burst")
        if self.per_minute is not None and self.per_minute < 1:
            raise ConfigurationError(f"invalid per-minute quota {self.per_minute}")
        if self.concurrency is not None and self.concurrency < 1:
            raise ConfigurationError(f"invalid concurrency cap {self.concurrency}")


@dataclass(frozen=True)
class Window:
    """A sliding window the provider counts in: at most ``quota`` calls per ``period_s``."""

    period_s: float
    quota: int
    burst: int

    def interval_s(self, margin_s: float) -> float:
        """Spacing between grants so that burst + grants in (period + margin) <= quota."""
        return (self.period_s + margin_s) / (self.quota - self.burst)

    @property
    def key(self) -> str:
        return repr(float(self.period_s))


def windows(limits: Limits) -> tuple[Window, ...]:
    """The provider-side windows a Limits value stands for."""
    if limits.per_second >= 1:
        found = [Window(1.0, math.floor(limits.per_second), limits.burst)]
    else:
        found = [Window(1.0 / limits.per_second, 1, 0)]
    if limits.per_minute is not None:
        found.append(Window(60.0, limits.per_minute, limits.per_minute // MINUTE_BURST_DIVISOR))
    return tuple(found)


def limits_for(
    provider: str, *, test_mode: bool = False, per_second: float | None = None,
    concurrency: int | None = None,
) -> Limits:
    """Default limits of a provider with configured overrides; raises ConfigurationError."""
    if provider not in DEFAULTS:
        raise ConfigurationError(f"no rate limits known for provider {provider!r}")
    live, test, per_minute, cap = DEFAULTS[provider]
    return Limits(
        per_second=per_second if per_second is not None else (test if test_mode else live),
        burst=0,
        per_minute=per_minute,
        concurrency=concurrency if concurrency is not None else cap,
    )


# --- state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class BucketState:
    """Shared state of one (provider, account): per-window TAT, pause, epoch and leases.

    ``tat`` maps a window key to (theoretical arrival time, reset horizon), the horizon
    being ``(burst + 1) * interval``, which ``pause`` needs without knowing the limits.
    ``epoch`` changes on every pause so that reservations made before it are redone.
    """

    tat: dict[str, tuple[float, float]] = field(default_factory=dict)
    paused_until: float = 0.0
    epoch: int = 0
    leases: dict[str, float] = field(default_factory=dict)


def state_to_json(state: BucketState) -> str:
    """The JSON kept in rate_limit_buckets.state (paused_until has its own column)."""
    return json.dumps({"tat": state.tat, "epoch": state.epoch, "leases": state.leases})


def state_from_json(text: str | None, paused_until: float = 0.0) -> BucketState:
    """Parse what state_to_json wrote; empty or missing means a fresh bucket."""
    raw: dict[str, Any] = json.loads(text) if text else {}
    tat = {str(k): (float(v[0]), float(v[1])) for k, v in raw.get("tat", {}).items()}
    leases = {str(k): float(v) for k, v in raw.get("leases", {}).items()}
    return BucketState(tat, float(paused_until), int(raw.get("epoch", 0)), leases)


@dataclass(frozen=True)
class Decision:
    """What ``reserve`` decided: a send time, no free slot, or a wait too long."""

    kind: str  # "granted", "no_slot" or "too_long"
    at: float = 0.0
    wait_s: float = 0.0
    epoch: int = 0
    tokens: float = 0.0


def _live_leases(state: BucketState, now: float) -> dict[str, float]:
    return {lease: expiry for lease, expiry in state.leases.items() if expiry > now}


@functools.lru_cache(maxsize=1024)
def _spans(limits: Limits, margin_s: float) -> tuple[tuple[str, int, float], ...]:
    """(window key, burst, grant interval) of each window: worked out once per Limits."""
    return tuple((w.key, w.burst, w.interval_s(margin_s)) for w in windows(limits))


def reserve(
    state: BucketState, *, now: float, limits: Limits, margin_s: float, max_wait_s: float,
    lease: str | None = None, lease_ttl_s: float = LEASE_TTL_S,
) -> tuple[BucketState, Decision]:
    """Reserve the next send time (and a concurrency slot when ``lease`` is given)."""
    leases = _live_leases(state, now)
    full = limits.concurrency is not None and len(leases) >= limits.concurrency
    if lease is not None and lease not in leases and full:
        return replace(state, leases=leases), Decision("no_slot")
    spans = _spans(limits, margin_s)
    at = max(now, state.paused_until)
    for key, burst, interval in spans:
        tat, _ = state.tat.get(key, (0.0, 0.0))
        at = max(at, tat - burst * interval)
    if at - now > max_wait_s:
        return replace(state, leases=leases), Decision("too_long", at=at, wait_s=at - now)
    tat_after = dict(state.tat)
    tokens = math.inf
    for key, burst, interval in spans:
        new_tat = max(state.tat.get(key, (0.0, 0.0))[0], at) + interval
        tat_after[key] = (new_tat, (burst + 1) * interval)
        tokens = min(tokens, max(0.0, (now + (burst + 1) * interval - new_tat) / interval))
    if lease is not None:
        leases[lease] = at + lease_ttl_s
    new_state = BucketState(tat_after, state.paused_until, state.epoch, leases)
    return new_state, Decision("granted", at=at, wait_s=at - now, epoch=state.epoch, tokens=tokens)


def release(state: BucketState, *, lease: str) -> tuple[BucketState, None]:
    """Give a concurrency slot back."""
    leases = {k: v for k, v in state.leases.items() if k != lease}
    return replace(state, leases=leases), None


def renew(state: BucketState, *, now: float, lease: str, lease_ttl_s: float) -> tuple[BucketState, bool]:
    """Extend a held lease; False when it had already expired (and was lost)."""
    if state.leases.get(lease, -math.inf) <= now:
        return state, False
    return replace(state, leases={**state.leases, lease: now + lease_ttl_s}), True


def pause(state: BucketState, *, now: float, retry_after_s: float) -> tuple[BucketState, None]:
    """A 429: no grant before now + retry_after_s; reservations made before are redone.

    Outstanding reservations are voided by the new epoch, so the TAT is pulled back to
    what the sends that really happened (all at or before ``now``) can have left:
    a conforming send at s leaves TAT <= s + (burst + 1) * interval.
    """
    until = max(state.paused_until, now + max(0.0, retry_after_s))
    tat = {k: (min(tat, now + horizon), horizon) for k, (tat, horizon) in state.tat.items()}
    return replace(state, tat=tat, paused_until=until, epoch=state.epoch + 1), None


# --- stores -----------------------------------------------------------------------------


class BucketStore(Protocol):
    """Atomic read-modify-write of one (provider, account) bucket, shared by processes."""

    async def update(
        self, provider: str, account: str, change: Callable[[BucketState], tuple[BucketState, T]]
    ) -> T:
        """Apply ``change`` to the current state atomically and return its result."""
        ...

    async def read(self, provider: str, account: str) -> BucketState:
        """The current state, without locking."""
        ...


class MemoryBucketStore:
    """One process's buckets in a dict (atomic because ``change`` never awaits)."""

    def __init__(self) -> None:
        self._states: dict[tuple[str, str], BucketState] = {}

    async def update(
        self, provider: str, account: str, change: Callable[[BucketState], tuple[BucketState, T]]
    ) -> T:
        key = (provider, account)
        new_state, result = change(self._states.get(key, BucketState()))
        self._states[key] = new_state
        return result

    async def read(self, provider: str, account: str) -> BucketState:
        return self._states.get((provider, account), BucketState())


class LimiterObserver(Protocol):
    """Where the limiter reports for metrics; labels are the provider only."""

    def waited(self, provider: str, seconds: float) -> None: ...

    def tokens_available(self, provider: str, tokens: float) -> None: ...

    def throttled(self, provider: str) -> None: ...


# --- the limiter ------------------------------------------------------------------------


class RateLimiter:
    """Gate for every provider call: a spaced send time plus a concurrency slot per account."""

    def __init__(
        self, store: BucketStore, *, clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        observer: LimiterObserver | None = None, margin_s: float = DEFAULT_MARGIN_S,
        lease_ttl_s: float = LEASE_TTL_S, slot_poll_s: float = SLOT_POLL_S,
        late_tolerance_s: float = LATE_TOLERANCE_S,
    ) -> None:
        self._store = store
        self._clock = clock
        self._sleep = sleep
        self._observer = observer
        self._margin_s = margin_s
        self._lease_ttl_s = lease_ttl_s
        self._slot_poll_s = slot_poll_s
        self._late_tolerance_s = late_tolerance_s
        self._freed: dict[tuple[str, str], asyncio.Event] = {}  # local releases wake local waiters
        # The store's update without waiting, where it has one (PostgresBucketStore's)
        self._update_now: Callable[..., tuple[bool, Any]] | None = getattr(store, "update_now", None)
        self.redone = 0  # reservations given up (woken late or voided by a 429), for the bench

    def acquire(
        self, provider: str, account: str, limits: Limits, *, max_wait_s: float
    ) -> _Gate:
        """``async with``: wait for a send time and a slot; RateLimitError at once if that
        takes over max_wait_s.

        The slot is released on exit, also when the body raises or is cancelled.
        """
        return _Gate(self, provider, account, limits, max_wait_s)

    def _granted_now(self, provider: str, account: str, limits: Limits) -> bool:
        """A send time due now, reserved without waiting where the store can (an account
        this process owns: PostgresBucketStore.update_now). False: nothing was reserved,
        and the caller takes the usual way (_grant), which also waits and retries."""
        if self._update_now is None:
            return False
        now = self._clock()

        def change(state: BucketState) -> tuple[BucketState, Decision]:
            return reserve(state, now=now, limits=limits, margin_s=self._margin_s, max_wait_s=0.0)

        kept, decision = self._update_now(provider, account, change)
        if not kept or decision is None or decision.kind != "granted":
            return False
        if self._observer is not None:
            self._observer.waited(provider, 0.0)
            self._observer.tokens_available(provider, decision.tokens)
        return True

    async def penalize(self, provider: str, account: str, retry_after_s: float) -> None:
        """A 429 from the provider: pause this account in every process for retry_after_s."""
        def change(state: BucketState) -> tuple[BucketState, None]:
            return pause(state, now=self._clock(), retry_after_s=retry_after_s)  # under the lock

        await self._store.update(provider, account, change)
        if self._observer is not None:
            self._observer.throttled(provider)

    async def _grant(
        self, provider: str, account: str, limits: Limits, lease: str | None, max_wait_s: float
    ) -> None:
        start = self._clock()
        deadline = start + max_wait_s
        poll_s = self._slot_poll_s

        def change(state: BucketState) -> tuple[BucketState, Decision]:
            now = self._clock()
            return reserve(state, now=now, limits=limits, margin_s=self._margin_s,
                           max_wait_s=deadline - now, lease=lease, lease_ttl_s=self._lease_ttl_s)

        while True:
            decision = await self._store.update(provider, account, change)
            if decision.kind == "no_slot":
                await self._wait_for_slot(provider, account, limits, deadline, poll_s)
                poll_s = min(2 * poll_s, max(SLOT_POLL_MAX_S, self._slot_poll_s))
            elif decision.kind == "too_long":
                raise RateLimitError(
                    f"{provider} rate limit: next send in {decision.wait_s:.3f}s, over the"
                    f" {max_wait_s:.3f}s bound", retry_after_s=decision.wait_s,
                )
            elif await self._still_good(provider, account, decision):
                break
            else:
                self.redone += 1
        if self._observer is not None:
            self._observer.waited(provider, max(0.0, self._clock() - start))
            self._observer.tokens_available(provider, decision.tokens)

    async def _wait_for_slot(
        self, provider: str, account: str, limits: Limits, deadline: float, poll_s: float
    ) -> None:
        """Sleep until the next look for a free slot, or until this process frees one."""
        remaining = deadline - self._clock()
        if remaining <= 0:
            raise RateLimitError(
                f"{provider}: all {limits.concurrency} concurrent slots of the account are busy",
                retry_after_s=max(1.0, self._slot_poll_s),
            )
        freed = self._freed.setdefault((provider, account), asyncio.Event())
        sleeper = asyncio.ensure_future(self._sleep(min(poll_s, remaining)))
        waker = asyncio.ensure_future(freed.wait())
        try:
            await asyncio.wait({sleeper, waker}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            sleeper.cancel()
            waker.cancel()

    async def _still_good(self, provider: str, account: str, decision: Decision) -> bool:
        """After sleeping to the slot: False when woken too late or a 429 voided it."""
        delay = decision.at - self._clock()
        if delay > 0:
            await self._sleep(delay)
        if decision.wait_s > 0:
            state = await self._store.read(provider, account)
            if state.epoch != decision.epoch:
                return False
        return self._clock() - decision.at <= self._late_tolerance_s

    async def _keep_lease(self, provider: str, account: str, lease: str) -> None:
        """Renew a held slot so that only a dead holder's lease runs out."""
        def change(state: BucketState) -> tuple[BucketState, bool]:
            return renew(state, now=self._clock(), lease=lease, lease_ttl_s=self._lease_ttl_s)

        while True:
            await self._sleep(self._lease_ttl_s / 3)
            try:
                if not await self._store.update(provider, account, change):
                    return
            except IntegrationError:
                continue  # the store is away: try again next period, the lease may still hold

    async def _release(self, provider: str, account: str, lease: str) -> None:
        """Give the slot back even if this task is being cancelled (shielded).

        A store failure is swallowed: the lease then runs out by itself within its TTL, and
        the caller's own outcome (or exception) is what matters.
        """
        def change(state: BucketState) -> tuple[BucketState, None]:
            return release(state, lease=lease)

        with contextlib.suppress(IntegrationError):
            await asyncio.shield(self._store.update(provider, account, change))
        freed = self._freed.pop((provider, account), None)
        if freed is not None:
            freed.set()



class _Gate:
    """What ``RateLimiter.acquire`` returns: an async context manager as a plain class, not
    an ``asynccontextmanager`` generator, whose machinery cost as much per provider call as
    the usual grant itself (a send time due now on an account this process owns)."""

    __slots__ = ("_limiter", "_provider", "_account", "_limits", "_max_wait_s", "_lease", "_renewer")

    def __init__(self, limiter: RateLimiter, provider: str, account: str, limits: Limits,
                 max_wait_s: float) -> None:
        self._limiter = limiter
        self._provider = provider
        self._account = account
        self._limits = limits
        self._max_wait_s = max_wait_s
        self._lease: str | None = None
        self._renewer: asyncio.Future[None] | None = None

    async def __aenter__(self) -> None:
        limiter, provider, account, limits = self._limiter, self._provider, self._account, self._limits
        if limits.concurrency is None:
            if not limiter._granted_now(provider, account, limits):
                await limiter._grant(provider, account, limits, None, self._max_wait_s)
            return
        lease = uuid.uuid4().hex
        try:
            await limiter._grant(provider, account, limits, lease, self._max_wait_s)
        except BaseException:
            await limiter._release(provider, account, lease)
            raise
        self._lease = lease
        self._renewer = asyncio.ensure_future(limiter._keep_lease(provider, account, lease))

    async def __aexit__(self, *exc_info: object) -> None:
        lease, renewer = self._lease, self._renewer
        if lease is None or renewer is None:
            return
        self._lease = self._renewer = None
        renewer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await renewer
        await self._limiter._release(self._provider, self._account, lease)
