"""Provider health: the pure state transitions, HealthMonitor.check with fake checks, and /health."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from service import health
from service.config import PROVIDERS
from service.errors import NetworkError
from service.health import HealthMonitor, ProviderHealth, add_provider_health_route, next_health
from service.metrics import Metrics

T0 = datetime(2026, 1, 1, tzinfo=UTC)
HEALTH_KEYS = {"state", "consecutive_failures", "last_error", "response_time_seconds", "checked_at"}


def _fail(previous: ProviderHealth, n: int, error: str = "boom") -> ProviderHealth:
    return next_health(previous, ok=False, response_time_s=0.1, error=error, now=T0 + timedelta(minutes=n))


def _ok(previous: ProviderHealth, response_time_s: float = 0.1) -> ProviderHealth:
    return next_health(previous, ok=True, response_time_s=response_time_s, error=None, now=T0)


def _health_gauge(metrics: Metrics, provider: str) -> dict[str, float]:
    """{state: value} of integration_provider_health_state for one provider."""
    values = {}
    for family in metrics.registry.collect():
        if family.name == "integration_provider_health_state":
            for sample in family.samples:
                if sample.labels["provider"] == provider:
                    values[sample.labels["state"]] = sample.value
    return values


def test_three_consecutive_failures_make_a_provider_unhealthy() -> None:
    """healthy -> degraded -> degraded -> unhealthy, counting failures and keeping the last error."""
    states = [ProviderHealth()]
    for n in range(1, 5):
        states.append(_fail(states[-1], n, error=f"error {n}"))
    expected = [("healthy", 0), ("degraded", 1), ("degraded", 2), ("unhealthy", 3), ("unhealthy", 4)]
    assert expected == [(s.state, s.consecutive_failures) for s in states]
    assert ("error 4", T0 + timedelta(minutes=4)) == (states[-1].last_error, states[-1].checked_at)


@pytest.mark.parametrize("failures", [1, 2, 3, 5])
def test_one_success_recovers_from_any_number_of_failures(failures: int) -> None:
    """A fast success after failures is healthy with the count reset; the last error is kept for people."""
    state = ProviderHealth()
    for n in range(failures):
        state = _fail(state, n, error="timed out")
    recovered = _ok(state, response_time_s=0.2)
    r = recovered
    assert ("healthy", 0, "timed out", 0.2) == (
        r.state, r.consecutive_failures, r.last_error, r.response_time_seconds)


def test_a_slow_success_is_degraded_not_unhealthy() -> None:
    """A success slower than SLOW_S is degraded with no failure counted; a fast one after it is healthy."""
    slow = _ok(_fail(_fail(ProviderHealth(), 1), 2), response_time_s=health.SLOW_S + 0.5)
    assert ("degraded", 0) == (slow.state, slow.consecutive_failures)
    assert "healthy" == _ok(slow, response_time_s=health.SLOW_S).state
    assert "unhealthy" != _fail(slow, 3).state


async def test_monitor_check_counts_failures_of_a_fake_check() -> None:
    """check() runs the provider's check, classifies its error, and moves state and metrics together."""
    outcomes: list[Exception | None] = [
        NetworkError("connection refused"), RuntimeError("bad"), ValueError(), None]

    async def fake_check() -> None:
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    metrics = Metrics()
    monitor = HealthMonitor({"stripe": fake_check}, pool=None, metrics=metrics, interval_s=300)
    seen = [await monitor.check("stripe") for _ in range(4)]
    assert [("degraded", 1, "connection refused"), ("degraded", 2, "RuntimeError: bad"),
            ("unhealthy", 3, "ValueError"), ("healthy", 0, "ValueError")] == [
        (s.state, s.consecutive_failures, s.last_error) for s in seen]
    assert {"healthy": 1.0, "degraded": 0.0, "unhealthy": 0.0} == _health_gauge(metrics, "stripe")


async def test_monitor_metrics_show_unhealthy_only_for_the_failing_provider() -> None:
    """After three failures the gauge says unhealthy for that provider; others stay healthy."""

    async def failing() -> None:
        raise NetworkError("no route to host")

    metrics = Metrics()
    monitor = HealthMonitor({"square": failing}, pool=None, metrics=metrics, interval_s=300)
    for _ in range(3):
        await monitor.check("square")
    assert {"healthy": 0.0, "degraded": 0.0, "unhealthy": 1.0} == _health_gauge(metrics, "square")
    assert {"healthy": 1.0, "degraded": 0.0, "unhealthy": 0.0} == _health_gauge(metrics, "stripe")


async def test_a_hanging_check_fails_at_the_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A check that never answers counts as a failure once CHECK_TIMEOUT_S passes."""
    monkeypatch.setattr(health, "CHECK_TIMEOUT_S", 0.05)
    never = asyncio.Event()

    async def hanging() -> None:
        await never.wait()

    monitor = HealthMonitor({"mailchimp": hanging}, pool=None, metrics=Metrics(), interval_s=300)
    state = await monitor.check("mailchimp")
    assert ("degraded", 1, "TimeoutError") == (state.state, state.consecutive_failures, state.last_error)
    assert state.response_time_seconds is not None and state.response_time_seconds >= 0.05


async def test_monitor_marks_a_slow_success_degraded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The monitor feeds the measured time into the rules: a success above SLOW_S is degraded."""
    monkeypatch.setattr(health, "SLOW_S", -1.0)

    async def fine() -> None:
        return None

    monitor = HealthMonitor({"quickbooks": fine}, pool=None, metrics=Metrics(), interval_s=300)
    state = await monitor.check("quickbooks")
    assert ("degraded", 0, None) == (state.state, state.consecutive_failures, state.last_error)


async def test_run_checks_every_provider_until_stopped() -> None:
    """run() checks each provider once at start and returns promptly when stop is set."""
    checked: list[str] = []
    stop = asyncio.Event()

    def make(provider: str) -> Callable[[], Awaitable[None]]:
        async def check() -> None:
            checked.append(provider)
            if len(checked) == len(PROVIDERS):
                stop.set()
        return check

    monitor = HealthMonitor({p: make(p) for p in PROVIDERS}, pool=None, metrics=Metrics(), interval_s=3600)
    await asyncio.wait_for(monitor.run(stop), timeout=5)
    assert sorted(PROVIDERS) == sorted(checked)


async def test_health_endpoint_answers_the_contract_shape() -> None:
    """GET /health is 200 with {"providers": {p: {state, consecutive_failures, last_error, ...}}}."""

    async def failing() -> None:
        raise NetworkError("connection reset")

    monitor = HealthMonitor({"stripe": failing}, pool=None, metrics=Metrics(), interval_s=300)
    for _ in range(3):
        await monitor.check("stripe")
    app = web.Application()
    add_provider_health_route(app, monitor)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/health")
        body = await response.json()
    assert (200, {"providers"}, set(PROVIDERS)) == (response.status, set(body), set(body["providers"]))
    assert [HEALTH_KEYS] * len(PROVIDERS) == [set(v) for v in body["providers"].values()]
    stripe = body["providers"]["stripe"]
    assert ("unhealthy", 3, "connection reset") == (
        stripe["state"], stripe["consecutive_failures"], stripe["last_error"])
    assert stripe["checked_at"].endswith("Z") and isinstance(stripe["response_time_seconds"], float)
    assert {"state": "healthy", "consecutive_failures": 0, "last_error": None,
            "response_time_seconds": None, "checked_at": None} == body["providers"]["square"]
