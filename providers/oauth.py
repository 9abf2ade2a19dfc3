"""OAuth token refresh: one at a time per credential, stored before it is used, never lost.

:class:`TokenRefresher` is shared by every VaultAuth in a process. ``refresh`` takes the
credential's refresh lock (``CredentialLocks``: a PostgreSQL advisory lock, so one refresh
runs at a time across every process), re-reads the row under it and decides again (another
holder may have refreshed already: then the stored tokens are simply returned), calls the
provider's token endpoint, and stores the new token set with ``Vault.replace_secret`` in the
same transaction before anyone uses it. A rotating refresh token is kept: the new one when
the provider sends it, else the old one. A refused refresh (400/401 from the token endpoint)
marks the credential invalid in that transaction and raises AuthenticationError.

Token endpoints (providers.md): QuickBooks ``QUICKBOOKS_OAUTH_URL`` (form body, HTTP Basic
client auth, rotating refresh token, ``expires_in``); Square ``SQUARE_OAUTH_URL`` (JSON body
with client_id/secret, ``expires_at``); Mailchimp tokens never expire (nothing to refresh).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager, AsyncExitStack
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

import aiohttp
import structlog

from providers.auth import needs_refresh
from providers.http import OAUTH_TIMEOUT, HttpReply, describe_body, send_request, spec_for, try_json
from service.config import Settings
from service.errors import (
    AuthenticationError,
    ConfigurationError,
    IntegrationError,
    ProviderError,
    RateLimitError,
)
from service.metrics import Metrics

if TYPE_CHECKING:
    from service.vault import Credential, CredentialInfo

log = structlog.get_logger(__name__)

SQUARE_VERSION = "2026-08-19"
NO_REFRESH = ("mailchimp",)  # Mailchimp access tokens never expire and have no refresh token


class LockedCredential(Protocol):
    """A credential row held under its refresh lock (service/database/locks.py)."""

    conn: Any
    row: Any

    async def mark_invalid(self, message: str) -> None: ...


class CredentialLocks(Protocol):
    """One refresh at a time per credential across processes; commit on exit."""

    def hold(self, venue_id: str, provider: str, kind: str = "oauth") -> AbstractAsyncContextManager[Any]: ...


class RefreshVault(Protocol):
    """What refreshing needs of service.vault.Vault."""

    async def open_row(self, row: Any) -> Credential: ...

    async def replace_secret(
        self, conn: Any, row: Any, secret: str, *, refreshed: bool
    ) -> CredentialInfo: ...

    async def find_auth(self, venue_id: str, provider: str) -> Credential: ...


class RefreshRefused(Exception):
    """The token endpoint refused the refresh token (it is revoked or expired)."""


class TokenRefresher:
    """Refreshes OAuth credentials for every VaultAuth of a process (see module docstring)."""

    def __init__(self, settings: Settings, vault: RefreshVault, *, locks: CredentialLocks,
                 session: aiohttp.ClientSession, metrics: Metrics | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
        self._settings = settings
        self._vault = vault
        self._locks = locks
        self._session = session
        self._metrics = metrics
        self._clock = clock

    async def refresh(self, venue_id: str, provider: str, *, force: bool = False,
                      failed_token: str | None = None) -> Credential:
        """The credential with a usable token: refreshed if due (or ``force``), else as stored.

        ``failed_token`` is the access token a provider just answered 401 to: the refresh
        happens only if it is still the stored one. Raises AuthenticationError when the
        provider refuses, NetworkError / ProviderError / RateLimitError when it is away."""
        if provider in NO_REFRESH:
            self._count(provider, "skipped")
            return await self._vault.find_auth(venue_id, provider)
        try:
            credential, outcome = await self._refresh_locked(venue_id, provider, force, failed_token)
        except IntegrationError:
            self._count(provider, "failed")
            raise
        self._count(provider, outcome)
        (log.info if outcome == "succeeded" else log.debug)(
            "credential_refresh", venue_id=venue_id, provider=provider, outcome=outcome)
        return credential

    async def _refresh_locked(self, venue_id: str, provider: str, force: bool,
                              failed_token: str | None) -> tuple[Credential, str]:
        refused: AuthenticationError | None = None
        async with self._locks.hold(venue_id, provider) as held:
            credential = await self._vault.open_row(held.row)
            tokens = credential.oauth()
            if not self._due(credential, tokens, force=force, failed_token=failed_token):
                return credential, "skipped"
            try:
                fresh = await self._exchange(provider, tokens)
            except RefreshRefused as exc:
                message = str(exc)
                await held.mark_invalid(message)  # committed with the lock released
                refused = AuthenticationError(message)
            else:
                secret = json.dumps(merge_tokens(tokens, fresh, now=self._clock()))
                info = await self._vault.replace_secret(held.conn, held.row, secret, refreshed=True)
                credential = type(credential)(info, secret)
        if refused is not None:
            log.warning("credential_refresh_refused", venue_id=venue_id, provider=provider)
            raise refused
        return credential, "succeeded"

    def _due(self, credential: Credential, tokens: dict[str, Any], *, force: bool,
             failed_token: str | None) -> bool:
        if failed_token is not None:
            return bool(tokens.get("access_token") == failed_token)
        return force or needs_refresh(credential.info.expires_at, now=self._clock())

    async def _exchange(self, provider: str, tokens: dict[str, Any]) -> dict[str, Any]:
        refresh_token = tokens.get("refresh_token")
        if not refresh_token:
            raise RefreshRefused(f"{provider} access token expired and the credential has no refresh token")
        if provider == "quickbooks":
            reply = await self._post_quickbooks(str(refresh_token))
        elif provider == "square":
            reply = await self._post_square(str(refresh_token))
        else:
            raise ConfigurationError(f"{provider} has no OAuth token refresh")
        return read_token_reply(reply)

    async def _post_quickbooks(self, refresh_token: str) -> HttpReply:
        client_id, secret = _client(self._settings.quickbooks_client_id,
                                    self._settings.quickbooks_client_secret, "QUICKBOOKS")
        basic = base64.b64encode(f"{client_id}:{secret}".encode()).decode()
        return await send_request(
            self._session, spec_for("quickbooks"), "POST", self._settings.quickbooks_oauth_url,
            operation="oauth_refresh", metrics=self._metrics, timeout=OAUTH_TIMEOUT,
            data={"grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"Authorization": f"Basic {basic}", "Accept": "application/json"},
        )

    async def _post_square(self, refresh_token: str) -> HttpReply:
        client_id, secret = _client(self._settings.square_client_id,
                                    self._settings.square_client_secret, "SQUARE")
        return await send_request(
            self._session, spec_for("square"), "POST", self._settings.square_token_url,
            operation="oauth_refresh", metrics=self._metrics, timeout=OAUTH_TIMEOUT,
            json_body={"client_id": client_id, "client_secret": secret,
                       "grant_type": "refresh_token", "refresh_token": refresh_token},
            headers={"Square-Version": SQUARE_VERSION, "Accept": "application/json"},
        )

    def _count(self, provider: str, outcome: str) -> None:
        if self._metrics is not None:
            self._metrics.credential_refreshes.labels(provider=provider, outcome=outcome).inc()


def _client(client_id: str | None, secret: Any, prefix: str) -> tuple[str, str]:
    if not client_id or secret is None:
        raise ConfigurationError(f"{prefix}_CLIENT_ID and {prefix}_CLIENT_SECRET are needed to refresh")
    return client_id, secret.get_secret_value()


def read_token_reply(reply: HttpReply) -> dict[str, Any]:
    """The token endpoint's answer as a dict; refused -> RefreshRefused, else our errors."""
    if reply.status in (400, 401):
        body = try_json(reply.body)
        if not isinstance(body, dict):  # a proxy's page, not the OAuth server's answer
            raise ProviderError(f"{reply.provider} token endpoint: HTTP {reply.status}: "
                                f"{describe_body(reply.body, reply.headers)}", status=reply.status, retryable=True)
        named = _oauth_error(reply.status, body)
        if _client_refused(body):  # our app's client, not this venue's grant: no credential is wrong
            raise ConfigurationError(f"{reply.provider} token endpoint refused our OAuth client "
                                     f"({named}): check {reply.provider.upper()}_CLIENT_ID/_SECRET")
        raise RefreshRefused(f"{reply.provider} refused the token refresh: {named}")
    if reply.status == 429:
        raise RateLimitError(f"{reply.provider} token endpoint answered 429", status=429)
    if reply.status != 200:
        raise ProviderError(f"{reply.provider} token endpoint: HTTP {reply.status}: "
                            f"{describe_body(reply.body, reply.headers)}", status=reply.status)
    body = reply.json_object()
    if not isinstance(body.get("access_token"), str) or not body["access_token"]:
        raise reply.garbage("token reply has no access_token")
    return body


def _client_refused(body: dict[str, Any]) -> bool:
    """The OAuth server refused the client (RFC 6749 ``invalid_client`` or
    ``unauthorized_client``; Square names client_id or client_secret in its error)."""
    if body.get("error") in ("invalid_client", "unauthorized_client"):
        return True
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        detail = str(errors[0].get("detail") or "").lower()
        return "client_id" in detail or "client_secret" in detail
    return False


def _oauth_error(status: int, body: dict[str, Any]) -> str:
    """The OAuth error a token endpoint's JSON answer names (``HTTP <status>`` if none)."""
    if isinstance(body.get("error"), str):
        return " ".join(str(body.get(k, "")) for k in ("error", "error_description")).strip()
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        return str(errors[0].get("code") or errors[0].get("detail") or f"HTTP {status}")
    return f"HTTP {status}"


def merge_tokens(old: dict[str, Any], fresh: dict[str, Any], *, now: datetime) -> dict[str, Any]:
    """The stored token set after a refresh: new access token and expiry, the refresh token
    rotated only when the provider sent a new one, account ids kept."""
    merged = dict(old)
    merged["access_token"] = fresh["access_token"]
    if isinstance(fresh.get("refresh_token"), str) and fresh["refresh_token"]:
        merged["refresh_token"] = fresh["refresh_token"]
    merged["expires_at"] = _expiry(fresh, now=now)
    if fresh.get("merchant_id") and not merged.get("merchant_id"):
        merged["merchant_id"] = fresh["merchant_id"]
    return merged


def _expiry(fresh: dict[str, Any], *, now: datetime) -> str | None:
    if isinstance(fresh.get("expires_in"), int | float) and not isinstance(fresh["expires_in"], bool):
        try:  # NaN or out of range: the expiry is unknown, the new tokens are still stored
            when = now + timedelta(seconds=float(fresh["expires_in"]))
        except (OverflowError, ValueError):
            return None
    elif isinstance(fresh.get("expires_at"), str):
        try:
            when = datetime.fromisoformat(fresh["expires_at"].replace("Z", "+00:00"))
        except ValueError:
            return None
    else:
        return None
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


class Refresher(TokenRefresher):
    """TokenRefresher wired as lifecycle builds it: the PostgreSQL lock on ``pool`` and the
    shared session of ``http`` (a providers.http.ProviderHttp)."""

    def __init__(self, *, settings: Settings, vault: RefreshVault, pool: Any, http: Any,
                 metrics: Metrics | None = None) -> None:
        from service.database.locks import PgCredentialLocks

        super().__init__(settings, vault, locks=PgCredentialLocks(pool), session=http.session,
                         metrics=metrics)


def _default_locks(vault: Any) -> CredentialLocks:
    # `credentials rotate` reaches here through lifecycle.refresh_now with no lock injected:
    # the default is the PostgreSQL one on the vault's own pool.
    from service.database.locks import PgCredentialLocks

    return PgCredentialLocks(vault._pool)


async def refresh_credential(
    settings: Settings, vault: Any, venue_id: str, provider: str, *, force: bool = False,
    session: aiohttp.ClientSession | None = None, locks: CredentialLocks | None = None,
    metrics: Metrics | None = None,
) -> CredentialInfo:
    """Refresh one OAuth credential now (``credentials rotate``); returns its new metadata.

    Raises AuthenticationError when the provider refuses (the credential is then invalid)."""
    async with AsyncExitStack() as stack:
        if session is None:
            session = await stack.enter_async_context(aiohttp.ClientSession())
        refresher = TokenRefresher(settings, vault, locks=locks or _default_locks(vault),
                                   session=session, metrics=metrics)
        credential = await refresher.refresh(venue_id, provider, force=force)
        return credential.info
