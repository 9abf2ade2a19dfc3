"""In-memory fakes for tests: a rate gate that records what it was asked.

``FakeProvider`` (an in-memory ProviderClient for the engine's tests) lives here too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any


class RecordingGate:
    """A RateGate that never waits and remembers every acquire and penalty."""

    def __init__(self) -> None:
        self.acquired: list[tuple[str, str, Any]] = []
        self.penalties: list[tuple[str, str, float]] = []
        self.in_flight = 0

    @asynccontextmanager
    async def acquire(self, provider: str, account: str, limits: Any, *,
                      max_wait_s: float) -> AsyncIterator[None]:
        self.acquired.append((provider, account, limits))
        self.in_flight += 1
        try:
            yield
        finally:
            self.in_flight -= 1

    def penalize(self, provider: str, account: str, retry_after_s: float) -> None:
        self.penalties.append((provider, account, retry_after_s))


def fake_limits_for(provider: str, **options: Any) -> dict[str, Any]:
    """Stands in for service.limiter.limits_for: echoes what it was asked."""
    return {"provider": provider, **options}
