"""Provider health: a periodic check per provider and the daemon's ``/health`` answer.

State per provider (CONTRACT section 6): ``healthy`` after a successful check, ``degraded``
after one or two consecutive failures (or a success slower than ``SLOW_S``), ``unhealthy``
after three consecutive failures. The latest state is kept in memory and in the
``provider_health`` table, so every process answers the same.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from aiohttp import web

from service.config import PROVIDERS
from service.errors import classify
from service.messages import rfc3339, utcnow
from service.metrics import Metrics

log = structlog.get_logger(__name__)

UNHEALTHY_AFTER = 3
SLOW_S = 5.0
CHECK_TIMEOUT_S = 15.0

HealthCheck = Callable[[], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class ProviderHealth:
    state: str = "healthy"
    consecutive_failures: int = 0
    last_error: str | None = None
    response_time_seconds: float | None = None
    checked_at: datetime | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "consecutive_failures": self.consecutive_failures,
            "last_error": self.last_error,
            "response_time_seconds": self.response_time_seconds,
            "checked_at": None if self.checked_at is None else rfc3339(self.checked_at),
        }


def next_health(
    previous: ProviderHealth, *, ok: bool, response_time_s: float, error: str | None, now: datetime
) -> ProviderHealth:
    """The state after one check (pure: the transitions the tests pin down)."""
    if ok:
        state = "degraded" if response_time_s > SLOW_S else "healthy"
        return ProviderHealth(state, 0, previous.last_error, response_time_s, now)
    failures = previous.consecutive_failures + 1
    state = "unhealthy" if failures >= UNHEALTHY_AFTER else "degraded"
    return replace(
        previous,
        state=state,
        consecutive_failures=failures,
        last_error=error,
        response_time_seconds=response_time_s,
        checked_at=now,
    )


class HealthMonitor:
    """Runs each provider's check on an interval and keeps the resulting states."""

    def __init__(
        self,
        checks: Mapping[str, HealthCheck],
        *,
        pool: asyncpg.Pool | None,
        metrics: Metrics,
        interval_s: float,
    ) -> None:
        self._checks = dict(checks)
        self._pool = pool
        self._metrics = metrics
        self._interval_s = interval_s
        self.states: dict[str, ProviderHealth] = {p: ProviderHealth() for p in PROVIDERS}
        for provider in PROVIDERS:
            metrics.set_health(provider, "healthy")

    async def check(self, provider: str) -> ProviderHealth:
        """Run one provider's check now and record the new state."""
        started = time.monotonic()
        error: str | None = None
        try:
            async with asyncio.timeout(CHECK_TIMEOUT_S):
                await self._checks[provider]()
        except Exception as exc:
            error = str(classify(exc)) if str(exc) else type(exc).__name__
        elapsed = round(time.monotonic() - started, 4)
        state = next_health(
            self.states[provider], ok=error is None, response_time_s=elapsed, error=error, now=utcnow()
        )
        self.states[provider] = state
        self._metrics.set_health(provider, state.state)
        await self._store(provider, state)
        if error is not None:
            log.warning("provider_check_failed", provider=provider, state=state.state, error=error)
        return state

    async def _store(self, provider: str, state: ProviderHealth) -> None:
        if self._pool is None:
            return
        try:
            await self._pool.execute(
                """INSERT INTO provider_health (provider, state, consecutive_failures, last_error,
                       response_time_seconds, checked_at) VALUES ($1, $2, $3, $4, $5, $6)
                   ON CONFLICT (provider) DO UPDATE SET state = EXCLUDED.state,
                       consecutive_failures = EXCLUDED.consecutive_failures,
                       last_error = EXCLUDED.last_error,
                       response_time_seconds = EXCLUDED.response_time_seconds,
                       checked_at = EXCLUDED.checked_at""",
                provider,
                state.state,
                state.consecutive_failures,
                state.last_error,
                state.response_time_seconds,
                state.checked_at,
                timeout=5,
            )
        except Exception as exc:  # health must not fail because the database is away
            log.warning("provider_health_not_stored", error=exc.__class__.__name__)

    async def run(self, stop: asyncio.Event) -> None:
        """Check every provider, then every interval, until ``stop`` is set."""
        while not stop.is_set():
            await asyncio.gather(*(self.check(p) for p in self._checks))
            try:
                await asyncio.wait_for(stop.wait(), timeout=self._interval_s)
            except TimeoutError:
                pass

    def as_json(self) -> dict[str, Any]:
        return {"providers": {p: s.as_json() for p, s in self.states.items()}}


MONITOR_KEY = web.AppKey("health_monitor", HealthMonitor)


async def health(request: web.Request) -> web.Response:
    """GET /health: always 200, each provider's state."""
    return web.json_response(request.app[MONITOR_KEY].as_json())


def add_provider_health_route(app: web.Application, monitor: HealthMonitor) -> None:
    app[MONITOR_KEY] = monitor
    app.router.add_get("/health", health)
