"""The daemon's cache of decrypted credentials: shared loads, and a Square merchant lookup
that failed is not asked again on every miss."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pytest

from service import lifecycle
from service.lifecycle import MERCHANT_LOOKUP_BACKOFF_S, AuthCache


@dataclass
class Auth:
    merchant_id: str | None
    is_oauth: bool = False

    def value(self, name: str) -> Any:
        return self.merchant_id if name == "merchant_id" else None


@dataclass
class Source:
    """app.auth: counts reads; a read waits for ``gate`` when one is given."""

    merchant_id: str | None = None
    reads: int = 0
    gate: asyncio.Event | None = None

    async def for_venue(self, venue_id: str, provider: str) -> Auth:
        self.reads += 1
        if self.gate is not None:
            await self.gate.wait()
        return Auth(self.merchant_id)


@dataclass
class Clock:
    now: float = 1000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Lookups:
    """learn_square_merchant: fails (Square away) until ``answer`` is set."""

    answer: str | None = None
    source: Source = field(default_factory=Source)
    asked: int = 0

    async def __call__(self, settings: Any, vault: Any, info: Any, secret: str) -> Any:
        self.asked += 1
        if self.answer is not None:
            self.source.merchant_id = self.answer
        return SimpleNamespace(merchant_id=self.answer)


def app_with(source: Source) -> Any:
    async def get(venue_id: str, provider: str, kind: str) -> Any:
        return SimpleNamespace(info=SimpleNamespace(venue_id=venue_id), secret="EAAA-secret")

    return SimpleNamespace(settings=None, auth=source, vault=SimpleNamespace(get=get))


async def test_a_failed_merchant_lookup_waits_its_backoff_then_learns(monkeypatch: pytest.MonkeyPatch) -> None:
    """Square cannot answer: the first miss asks, misses within the backoff do not (the
    auth goes on without the id), the first miss after it asks again and learns the id."""
    source = Source()
    lookups = Lookups(source=source)
    monkeypatch.setattr(lifecycle, "learn_square_merchant", lookups)
    clock = Clock()
    cache = AuthCache(app_with(source), ttl_s=0.0, clock=clock)  # every call misses
    for _ in range(3):
        assert (await cache("venue-1", "square")).merchant_id is None
        clock.now += 1.0
    assert (1, 3) == (lookups.asked, source.reads)
    clock.now += MERCHANT_LOOKUP_BACKOFF_S
    lookups.answer = "MERCHANT-1"
    assert "MERCHANT-1" == (await cache("venue-1", "square")).merchant_id
    assert 2 == lookups.asked
    assert "MERCHANT-1" == (await cache("venue-1", "square")).merchant_id
    assert 2 == lookups.asked  # known now: nothing more to ask


async def test_misses_of_one_key_at_once_share_one_load() -> None:
    """Sixteen deliveries of one venue missing the cache together read the vault once; a
    waiter cancelled meanwhile does not cancel the load for the others."""
    source = Source(merchant_id="M", gate=asyncio.Event())
    cache = AuthCache(app_with(source), clock=Clock())
    waiters = [asyncio.ensure_future(cache("venue-1", "stripe")) for _ in range(16)]
    await asyncio.sleep(0)  # every waiter has asked (one loop turn: no timing involved)
    waiters[0].cancel()
    source.gate.set()  # type: ignore[union-attr]
    results = await asyncio.gather(*waiters[1:])
    assert {"M"} == {auth.merchant_id for auth in results}
    assert 1 == source.reads


async def test_a_lookup_whose_answer_cannot_be_stored_waits_its_backoff_too(monkeypatch: pytest.MonkeyPatch) -> None:
    """Square answered but storing the merchant id failed (the database): that miss fails,
    and the next misses within the backoff go on without asking Square again."""
    source = Source()
    asked = 0

    async def storing_fails(settings: Any, vault: Any, info: Any, secret: str) -> Any:
        nonlocal asked
        asked += 1
        raise OSError("connection reset while storing the merchant id")

    monkeypatch.setattr(lifecycle, "learn_square_merchant", storing_fails)
    cache = AuthCache(app_with(source), ttl_s=0.0, clock=Clock())
    with pytest.raises(OSError):
        await cache("venue-1", "square")
    assert (await cache("venue-1", "square")).merchant_id is None
    assert 1 == asked
