"""The ingress's venue directory: cached existence and secrets, bounded, expiring."""

from __future__ import annotations

from typing import Any

import pytest

from service.ingress import TtlCache, VaultDirectory
from service.vault import Vault, key_provider_from_settings


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_ttl_cache_expires_and_stays_bounded() -> None:
    """Entries expire after their TTL and the oldest go first past max_entries."""
    clock = Clock()
    cache: TtlCache[str] = TtlCache(max_entries=2, clock=clock)
    cache.put(("a", "p"), "A", ttl_s=10)
    cache.put(("b", "p"), "B", ttl_s=10)
    cache.put(("c", "p"), "C", ttl_s=10)
    assert ((False, None), (True, "B"), (True, "C")) == (
        cache.get(("a", "p")),
        cache.get(("b", "p")),
        cache.get(("c", "p")),
    )
    clock.now += 10
    assert ((False, None), 1) == (cache.get(("b", "p")), len(cache))


@pytest.fixture
def vault(pool: Any, settings: Any) -> Vault:
    return Vault(pool, key_provider_from_settings(settings))


async def test_known_venue_and_secret_cached(pool: Any, vault: Vault, venue_id: str) -> None:
    """A venue's existence and secret are read once within the TTL, then again after it."""
    clock = Clock()
    directory = VaultDirectory(pool, vault, ttl_s=30, clock=clock)
    await vault.set(venue_id, "stripe", "webhook_secret", "whsec_first")
    first = [await directory.webhook_secret(venue_id, "stripe") for _ in range(3)]
    await vault.set(venue_id, "stripe", "webhook_secret", "whsec_second")
    cached = await directory.webhook_secret(venue_id, "stripe")
    clock.now += 31
    fresh = await directory.webhook_secret(venue_id, "stripe")
    assert (["whsec_first"] * 3, "whsec_first", "whsec_second", 2) == (
        first,
        cached,
        fresh,
        directory.decryptions,
    )
    assert await directory.venue_known(venue_id, "stripe")


async def test_unknown_venue_negative_cache_is_short(pool: Any, vault: Vault, venue_id: str) -> None:
    """An unknown venue is remembered briefly, so a venue added moments later is found soon."""
    clock = Clock()
    directory = VaultDirectory(pool, vault, ttl_s=30, negative_ttl_s=5, clock=clock)
    assert not await directory.venue_known(venue_id, "mailchimp")
    await vault.set(venue_id, "mailchimp", "webhook_secret", "token-123")
    still_cached = await directory.venue_known(venue_id, "mailchimp")
    clock.now += 5
    assert (False, True) == (still_cached, await directory.venue_known(venue_id, "mailchimp"))
    assert 0 == directory.decryptions


async def test_missing_secret_is_none(pool: Any, vault: Vault, venue_id: str) -> None:
    """A venue without a webhook secret yields None, not an error."""
    await vault.set(venue_id, "stripe", "api_key", "sk_test_abc123")
    directory = VaultDirectory(pool, vault)
    assert (True, None) == (
        await directory.venue_known(venue_id, "stripe"),
        await directory.webhook_secret(venue_id, "stripe"),
    )


async def test_refresh_is_rate_limited(pool: Any, vault: Vault, venue_id: str) -> None:
    """A refresh re-reads the secret only when the cached one is older than min_refresh_s."""
    clock = Clock()
    directory = VaultDirectory(pool, vault, min_refresh_s=2, clock=clock)
    await vault.set(venue_id, "stripe", "webhook_secret", "whsec_one")
    await directory.webhook_secret(venue_id, "stripe")
    await vault.set(venue_id, "stripe", "webhook_secret", "whsec_two")
    too_soon = await directory.webhook_secret(venue_id, "stripe", refresh=True)
    clock.now += 2
    later = await directory.webhook_secret(venue_id, "stripe", refresh=True)
    assert ("whsec_one", "whsec_two", 2) == (too_soon, later, directory.decryptions)
