"""Which venues exist and their webhook secrets, cached briefly so the ingress stays cheap.

An unknown venue costs one indexed query (and then nothing for a few seconds), never a
decryption: existence is checked before any secret is opened. Secrets are cached for
``ttl_s`` in a bounded map so a burst of webhooks for one venue decrypts once.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, Generic, Protocol, TypeVar

from service.database import credentials as db
from service.errors import NetworkError, UnknownEntityError
from service.vault import Vault

V = TypeVar("V")
LOOKUP_TIMEOUT_S = 5.0


class WebhookDirectory(Protocol):
    """What the ingress needs to know about venues; raises NetworkError when it cannot say."""

    async def venue_known(self, venue_id: str, provider: str) -> bool:
        """True when the venue has any credential for the provider."""
        ...

    async def webhook_secret(self, venue_id: str, provider: str, *, refresh: bool = False) -> str | None:
        """The venue's webhook_secret for the provider, or None when it has none.

        ``refresh`` asks to bypass the cache (after a failed check: the secret may have just
        been rotated); an implementation may limit how often it honours that.
        """
        ...


class TtlCache(Generic[V]):
    """A bounded map whose entries expire; the oldest entry goes first when full."""

    def __init__(self, *, max_entries: int, clock: Callable[[], float] = time.monotonic) -> None:
        self._entries: OrderedDict[tuple[str, str], tuple[float, float, V]] = OrderedDict()
        self._max = max_entries
        self._clock = clock

    def get(self, key: tuple[str, str]) -> tuple[bool, V | None]:
        """(hit, value): a miss when absent or expired."""
        entry = self._entries.get(key)
        if entry is None:
            return False, None
        if entry[0] <= self._clock():
            del self._entries[key]
            return False, None
        return True, entry[2]

    def age_s(self, key: tuple[str, str]) -> float | None:
        """Seconds since the entry was stored, None when there is none."""
        entry = self._entries.get(key)
        return None if entry is None else self._clock() - entry[1]

    def put(self, key: tuple[str, str], value: V, *, ttl_s: float) -> None:
        self._entries.pop(key, None)
        now = self._clock()
        self._entries[key] = (now + ttl_s, now, value)
        while len(self._entries) > self._max:
            self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


class VaultDirectory:
    """WebhookDirectory over the credentials table and the vault, with TTL caches."""

    def __init__(
        self, pool: Any, vault: Vault, *, ttl_s: float = 30.0, negative_ttl_s: float = 5.0,
        max_entries: int = 10_000, min_refresh_s: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._pool = pool
        self._vault = vault
        self._ttl_s = ttl_s
        self._negative_ttl_s = negative_ttl_s
        self._min_refresh_s = min_refresh_s
        self._known: TtlCache[bool] = TtlCache(max_entries=max_entries, clock=clock)
        self._secrets: TtlCache[str | None] = TtlCache(max_entries=max_entries, clock=clock)
        self.decryptions = 0  # secrets opened (tests check that unknown venues cost none)

    async def venue_known(self, venue_id: str, provider: str) -> bool:
        hit, known = self._known.get((venue_id, provider))
        if hit:
            return bool(known)
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                found = await db.venue_known(self._pool, venue_id, provider)
        except Exception as exc:
            raise NetworkError(f"cannot look up the venue: {exc.__class__.__name__}") from exc
        self._known.put((venue_id, provider), found, ttl_s=self._ttl_s if found else self._negative_ttl_s)
        return found

    async def webhook_secret(self, venue_id: str, provider: str, *, refresh: bool = False) -> str | None:
        key = (venue_id, provider)
        hit, secret = self._secrets.get(key)
        age_s = self._secrets.age_s(key)
        # A refresh is honoured at most every min_refresh_s per venue, so a flood of forged
        # signatures costs at most one decryption per venue per interval.
        if hit and not (refresh and age_s is not None and age_s >= self._min_refresh_s):
            return secret
        try:
            async with asyncio.timeout(LOOKUP_TIMEOUT_S):
                self.decryptions += 1
                secret = (await self._vault.get(venue_id, provider, "webhook_secret")).secret
        except UnknownEntityError:
            secret = None
        except Exception as exc:
            raise NetworkError(f"cannot read the webhook secret: {exc.__class__.__name__}") from exc
        self._secrets.put((venue_id, provider), secret, ttl_s=self._ttl_s if secret else self._negative_ttl_s)
        return secret
