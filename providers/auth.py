"""VenueAuth over the credential vault: headers for each call, OAuth refresh on expiry or 401.

A :class:`VaultAuth` wraps one decrypted credential for one (venue, provider). For ``oauth``
credentials it hands the access token out until it is within five minutes of expiry, then
asks the shared :class:`providers.oauth.TokenRefresher` (one refresh at a time per
credential across every process, the new token set stored before it is used). After a
401 it asks once more with the token that failed, so a token another process already
replaced is simply reloaded rather than refreshed twice.

Build them through :class:`AuthFactory` (``await factory.for_venue(venue_id, provider)``).
"""

from __future__ import annotations

import asyncio
import base64
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import structlog

from service.errors import AuthenticationError, IntegrationError

if TYPE_CHECKING:
    from service.vault import Credential, CredentialInfo

log = structlog.get_logger(__name__)

REFRESH_MARGIN = timedelta(minutes=5)  # CONTRACT section 1: stale within 5 minutes of expiry
PUBLIC_VALUES = ("realm_id", "merchant_id", "server_prefix")


class CredentialSource(Protocol):
    """What VaultAuth needs of service.vault.Vault."""

    async def find_auth(self, venue_id: str, provider: str) -> Credential: ...

    async def record_use(self, info: CredentialInfo, *, ok: bool, error: str | None = None) -> None: ...


class Refresher(Protocol):
    """providers.oauth.TokenRefresher, as VaultAuth uses it."""

    async def refresh(self, venue_id: str, provider: str, *, force: bool = False,
                      failed_token: str | None = None) -> Credential: ...


def needs_refresh(expires_at: datetime | None, *, now: datetime | None = None) -> bool:
    """True when an access token is expired or within REFRESH_MARGIN of expiry."""
    if expires_at is None:
        return False
    return expires_at <= (now or datetime.now(UTC)) + REFRESH_MARGIN


def _expired(expires_at: datetime | None) -> bool:
    return expires_at is not None and expires_at <= datetime.now(UTC)


def is_stripe_test_key(key: str) -> bool:
    """Stripe test-mode keys get the test-mode rate limit (25/s)."""
    return key.startswith(("sk_test_", "rk_test_"))


class VaultAuth:
    """One venue's credential at one provider (implements providers.base.VenueAuth)."""

    def __init__(self, credential: Credential, *, vault: CredentialSource,
                 refresher: Refresher | None) -> None:
        self._credential = credential
        self._vault = vault
        self._refresher = refresher
        self._lock = asyncio.Lock()
        self._reported_valid = False
        info = credential.info
        self.venue_id = info.venue_id
        self.provider = info.provider
        self.kind = info.kind
        self.account_id = info.account_id or f"{info.venue_id}"
        self.test_mode = info.provider == "stripe" and is_stripe_test_key(credential.secret)

    def __repr__(self) -> str:  # never show the secret
        return f"VaultAuth({self.venue_id}/{self.provider}/{self.kind})"

    @property
    def is_oauth(self) -> bool:
        return self.kind == "oauth"

    def _tokens(self) -> dict[str, Any]:
        return self._credential.oauth() if self.is_oauth else {}

    async def headers(self) -> dict[str, str]:
        """Authorization headers for the next call, refreshing a token about to expire."""
        if not self.is_oauth:
            return _key_headers(self.provider, self._credential.secret)
        if needs_refresh(self._credential.info.expires_at):
            try:
                await self._refresh(failed_token=None)
            except IntegrationError as exc:
                if not exc.retryable or _expired(self._credential.info.expires_at):
                    raise
                # The token endpoint is away but the token still works for a few minutes: use it.
                log.warning("credential_refresh_deferred", venue_id=self.venue_id, provider=self.provider,
                            error=exc.message)
        return {"Authorization": f"Bearer {self._tokens()['access_token']}"}

    def api_key(self) -> str:
        """The raw API key or access token (the Stripe SDK takes it as ``api_key``)."""
        if self.is_oauth:
            return str(self._tokens()["access_token"])
        return self._credential.secret

    async def on_unauthorized(self) -> bool:
        """After a 401: refresh once (or reload a token another process refreshed)."""
        if not self.is_oauth or self._refresher is None or not self._tokens().get("refresh_token"):
            return False
        await self._refresh(failed_token=str(self._tokens()["access_token"]))
        return True

    async def _refresh(self, *, failed_token: str | None) -> None:
        if self._refresher is None:
            raise AuthenticationError(f"{self.provider} token for venue {self.venue_id} expired "
                                      "and no refresher is configured")
        async with self._lock:
            current = str(self._tokens().get("access_token"))
            if failed_token is not None and current != failed_token:
                return  # a sibling call on this object refreshed already
            if failed_token is None and not needs_refresh(self._credential.info.expires_at):
                return
            self._credential = await self._refresher.refresh(
                self.venue_id, self.provider, force=failed_token is not None, failed_token=failed_token)

    def value(self, name: str) -> str | None:
        """A non-secret credential field: realm_id, merchant_id, server_prefix."""
        if name not in PUBLIC_VALUES:
            return None
        found = getattr(self._credential.info, name, None)
        if found is None and self.is_oauth:
            found = self._tokens().get(name)
        return None if found is None else str(found)

    async def record_success(self) -> None:
        """Mark the credential valid after its first successful call (once per object)."""
        if not self._reported_valid:
            self._reported_valid = True
            await self._record(ok=True, error=None)

    async def record_auth_failure(self, message: str) -> None:
        """A 401 that a refresh could not cure: the credential is invalid (CONTRACT section 5)."""
        log.warning("credential_invalid", venue_id=self.venue_id, provider=self.provider)
        await self._record(ok=False, error=message)

    async def _record(self, *, ok: bool, error: str | None) -> None:
        # Bookkeeping only: a database hiccup here must not fail (and so repeat) a provider write.
        try:
            await self._vault.record_use(self._credential.info, ok=ok, error=error)
        except IntegrationError as exc:
            log.warning("credential_use_not_recorded", venue_id=self.venue_id, provider=self.provider,
                        error=exc.message)


def _key_headers(provider: str, key: str) -> dict[str, str]:
    if provider == "mailchimp":
        # Mailchimp takes HTTP Basic with any user name and the key as the password.
        token = base64.b64encode(f"anystring:{key}".encode()).decode()
        return {"Authorization": f"Basic {token}"}
    return {"Authorization": f"Bearer {key}"}


class AuthFactory:
    """Builds a VaultAuth per (venue, provider): oauth wins over api_key."""

    def __init__(self, vault: CredentialSource, *, refresher: Refresher | None) -> None:
        self._vault = vault
        self._refresher = refresher

    async def for_venue(self, venue_id: str, provider: str) -> VaultAuth:
        """The venue's auth; raises UnknownEntityError when it has no credential."""
        credential = await self._vault.find_auth(venue_id, provider)
        if credential.info.status == "invalid":
            raise AuthenticationError(
                f"{provider} credential for venue {venue_id} is invalid: "
                f"{credential.info.last_error or 'store a new one with credentials set'}")
        return VaultAuth(credential, vault=self._vault, refresher=self._refresher)


class NoAuth:
    """No credential at all: a health check only needs the provider to answer in its own way."""

    venue_id = "health"
    account_id = "health-check"
    test_mode = False

    def __init__(self, provider: str, **values: str) -> None:
        self.provider = provider
        self._values = values  # e.g. a placeholder realm_id for a path that needs one

    async def headers(self) -> dict[str, str]:
        return {}

    async def on_unauthorized(self) -> bool:
        return False

    def value(self, name: str) -> str | None:
        return self._values.get(name)


class StaticAuth:
    """A VenueAuth over a fixed secret, for tests and one-off calls (no vault, no refresh)."""

    def __init__(self, *, provider: str, secret: str, account_id: str = "test",
                 venue_id: str = "venue", values: dict[str, str] | None = None,
                 bearer: bool = False) -> None:
        self.provider = provider
        self._bearer = bearer
        self.venue_id = venue_id
        self.account_id = account_id
        self.test_mode = provider == "stripe" and is_stripe_test_key(secret)
        self._secret = secret
        self._values = dict(values or {})
        self.unauthorized_calls = 0

    def __repr__(self) -> str:
        return f"StaticAuth({self.provider})"

    async def headers(self) -> dict[str, str]:
        if self._bearer:
            return {"Authorization": f"Bearer {self._secret}"}
        return _key_headers(self.provider, self._secret)

    def api_key(self) -> str:
        return self._secret

    async def on_unauthorized(self) -> bool:
        self.unauthorized_calls += 1
        return False

    def value(self, name: str) -> str | None:
        return self._values.get(name)
