"""The sandbox's shared core: accounts, tokens, limits, faults, the calls log, the middleware.

Every provider module (``sandbox/stripe.py``, ``square.py``, ``quickbooks.py``,
``mailchimp.py``) exposes a ``Plugin`` class built as ``Plugin(state)`` that satisfies
:class:`ProviderPlugin`. The middleware made by :func:`make_middleware` runs in front of
every request under a provider prefix (``/stripe``, ``/square``, ...), in this order:

1. read the body (``request["body"]``, bytes);
2. resolve the account with ``plugin.identify`` unless ``plugin.is_public`` (token and
   metadata endpoints authenticate themselves and may set ``request["account"]``);
3. apply matching faults: a status fault (after its latency) answers ``plugin.error_response``
   before the handler runs (so nothing is stored); ``"timeout"`` runs the handler, then
   holds the connection (60 s) and closes it without answering;
4. unknown credentials -> ``plugin.unauthorized``;
5. per-account limits (sliding 1 s and 1 min windows, in-flight cap) -> ``plugin.rate_limited``;
6. a latency fault's wait (counted as in flight, like a slow provider), then the handler,
   with ``request["account"]`` and ``request["body"]`` set;
7. the call is logged in arrival order (401s, 429s, faults and token calls included).

Nothing here imports the service: the sandbox must be able to disagree with our client.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import random
import secrets
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol
from urllib.parse import parse_qsl

from aiohttp import web

TIMEOUT_HOLD_S = 60.0  # CONTRACT section 7: a "timeout" fault holds the connection this long
CALLS_LOG_MAX = 500_000  # the oldest calls drop off so long benchmarks don't exhaust memory

# aiohttp warns once per plain string key stored on a request; the plug-in interface
# (sandbox/INTERFACE.md) fixes the string keys "account" and "body", so mark them as known.
_SEEN_KEYS = getattr(web.BaseRequest, "_seen_str_keys", None)
if isinstance(_SEEN_KEYS, set):
    _SEEN_KEYS.update({"account", "body"})


@dataclass(frozen=True)
class Limits:
    """An account's limits; None means unlimited."""

    per_second: float | None = None
    per_minute: int | None = None
    concurrency: int | None = None


@dataclass(eq=False)
class Account:
    """One provider account the sandbox knows (registered through POST /_sandbox/accounts)."""

    provider: str
    name: str
    api_key: str | None = None
    oauth: dict[str, Any] | None = None
    webhook_secrets: list[str] = field(default_factory=list)  # newest last
    data: dict[str, Any] = field(default_factory=dict)  # the provider module's own store

    def client_matches(self, client_id: str | None, client_secret: str | None) -> bool:
        """The OAuth client a token call presents is the one registered with this account
        (CONTRACT section 7: OAuth clients must match the service's); any client when the
        account registered none."""
        oauth = self.oauth or {}
        want_id, want_secret = oauth.get("client_id"), oauth.get("client_secret")
        return (want_id is None or (client_id is not None and hmac.compare_digest(client_id, str(want_id)))) and (
            want_secret is None or (client_secret is not None and hmac.compare_digest(client_secret, str(want_secret)))
        )


@dataclass
class Token:
    """A token the sandbox issued (or was registered with) for an account."""

    account: Account
    kind: str  # "access" or "refresh"
    expires_at: float | None  # Unix seconds; None never expires
    revoked: bool = False


@dataclass
class Fault:
    """A fault from POST /_sandbox/faults (CONTRACT section 7)."""

    provider: str
    account: str | None = None
    path_prefix: str | None = None
    status: int | str | None = None  # an HTTP status, "timeout", or None (latency only)
    latency_ms: float = 0.0
    rate: float = 1.0
    count: int | None = None
    fired: int = 0

    def matches(self, provider: str, account: Account | None, path: str) -> bool:
        if self.provider != provider or (self.count is not None and self.fired >= self.count):
            return False
        if self.account is not None and (account is None or account.name != self.account):
            return False
        return self.path_prefix is None or path.startswith(self.path_prefix)

    def as_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "account": self.account,
            "path_prefix": self.path_prefix,
            "status": self.status,
            "latency_ms": self.latency_ms,
            "rate": self.rate,
            "count": self.count,
            "fired": self.fired,
        }


class ProviderPlugin(Protocol):
    """What each provider module's ``Plugin(state)`` class provides."""

    name: str

    def add_routes(self, app: web.Application, prefix: str) -> None: ...
    def identify(self, request: web.Request) -> Account | None: ...
    def is_public(self, request: web.Request) -> bool: ...
    def unauthorized(self, request: web.Request) -> web.StreamResponse: ...
    def rate_limited(self, request: web.Request) -> web.StreamResponse: ...
    def error_response(self, request: web.Request, status: int) -> web.StreamResponse: ...
    def limits(self, account: Account) -> Limits: ...
    def idempotency_key(self, request: web.Request, body: bytes) -> str | None: ...
    def register(self, account: Account) -> None: ...
    def reset(self) -> None: ...
    async def build_webhook(self, account: Account, spec: dict[str, Any]) -> tuple[dict[str, str], bytes]: ...


def parse_time(value: str | float | int | None) -> float | None:
    """Unix seconds from an RFC 3339 string or a number; None stays None."""
    if value is None or isinstance(value, int | float):
        return value
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


class _Usage:
    """One account's recent calls (sliding windows) and calls in flight."""

    __slots__ = ("second", "minute", "in_flight")

    def __init__(self) -> None:
        self.second: deque[float] = deque()
        self.minute: deque[float] = deque()
        self.in_flight = 0

    def admit(self, limits: Limits, now: float) -> bool:
        """Count the call and return True if it fits every window; else count nothing."""
        if limits.concurrency is not None and self.in_flight >= limits.concurrency:
            return False
        if not _fits(self.second, limits.per_second, now - 1.0):
            return False
        if not _fits(self.minute, limits.per_minute, now - 60.0):
            return False
        if limits.per_second is not None:
            self.second.append(now)
        if limits.per_minute is not None:
            self.minute.append(now)
        self.in_flight += 1
        return True


def _fits(window: deque[float], quota: float | None, horizon: float) -> bool:
    if quota is None:
        return True
    while window and window[0] <= horizon:
        window.popleft()
    return len(window) < quota


class SandboxState:
    """All in-memory state of one sandbox: accounts, tokens, faults, calls, plugins."""

    def __init__(
        self,
        *,
        token_ttl_seconds: float | None = None,
        clients: dict[str, tuple[str | None, str | None]] | None = None,
        app_keys: dict[str, str | None] | None = None,
        timeout_hold_s: float = TIMEOUT_HOLD_S,
    ) -> None:
        self.token_ttl_seconds = token_ttl_seconds
        self.clients: dict[str, tuple[str | None, str | None]] = dict(clients or {})
        self.app_keys: dict[str, str | None] = dict(app_keys or {})
        self.timeout_hold_s = timeout_hold_s
        self.plugins: dict[str, ProviderPlugin] = {}
        self.clock_offset_s = 0.0
        self.holds: set[asyncio.Event] = set()
        self._clear()

    def _clear(self) -> None:
        self.accounts: dict[tuple[str, str], Account] = {}
        self._keys: dict[tuple[str, str], Account] = {}
        self._tokens: dict[tuple[str, str], Token] = {}
        self._usage: dict[int, _Usage] = {}
        self.faults: list[Fault] = []
        self.calls: deque[dict[str, Any]] = deque(maxlen=CALLS_LOG_MAX)

    def clock(self) -> float:
        """Sandbox time in Unix seconds (real time plus any offset set through control)."""
        return time.time() + self.clock_offset_s

    def reset(self) -> None:
        """Empty all state, accounts included, and every plugin's own state."""
        self._clear()
        self.clock_offset_s = 0.0
        for plugin in self.plugins.values():
            plugin.reset()

    # Accounts ------------------------------------------------------------------------

    def add_account(self, account: Account) -> Account:
        """Register (or re-register, keeping its data) an account and index its credentials."""
        key = (account.provider, account.name)
        old = self.accounts.get(key)
        if old is not None:
            self._forget(old)
            account.data = old.data
        self.accounts[key] = account
        if account.api_key:
            self._keys[(account.provider, account.api_key)] = account
        oauth = account.oauth or {}
        if oauth.get("access_token"):
            expires = parse_time(oauth.get("expires_at"))
            self._tokens[(account.provider, oauth["access_token"])] = Token(account, "access", expires)
        if oauth.get("refresh_token"):
            self._tokens[(account.provider, oauth["refresh_token"])] = Token(account, "refresh", None)
        return account

    def _forget(self, account: Account) -> None:
        self._keys = {k: a for k, a in self._keys.items() if a is not account}
        self._tokens = {k: t for k, t in self._tokens.items() if t.account is not account}

    def account(self, provider: str, name: str) -> Account | None:
        return self.accounts.get((provider, name))

    def account_for_key(self, provider: str, key: str) -> Account | None:
        return self._keys.get((provider, key))

    # Tokens --------------------------------------------------------------------------

    def issue_token(
        self,
        account: Account,
        *,
        kind: str = "access",
        ttl_s: float | None,
        prefix: str = "",
    ) -> str:
        """A fresh random token for ``account``; ``ttl_s`` None never expires."""
        token = prefix + secrets.token_urlsafe(24)
        expires = None if ttl_s is None else self.clock() + ttl_s
        self._tokens[(account.provider, token)] = Token(account, kind, expires)
        return token

    def token(self, provider: str, token: str) -> Token | None:
        """The record of a token, expired or revoked ones included."""
        return self._tokens.get((provider, token))

    def account_for_token(self, provider: str, token: str, *, kind: str = "access") -> Account | None:
        """The token's account; None when unknown, of another kind, expired or revoked."""
        record = self._tokens.get((provider, token))
        if record is None or record.kind != kind or record.revoked:
            return None
        if record.expires_at is not None and record.expires_at <= self.clock():
            return None
        return record.account

    def token_expires_at(self, provider: str, token: str) -> float | None:
        record = self._tokens.get((provider, token))
        return None if record is None else record.expires_at

    def revoke_token(self, provider: str, token: str) -> None:
        record = self._tokens.get((provider, token))
        if record is not None:
            record.revoked = True

    def token_ttl_s(self, provider: str, default_s: float | None) -> float | None:
        """Access-token lifetime: SANDBOX_TOKEN_TTL_SECONDS when set, else the provider's."""
        return self.token_ttl_seconds if self.token_ttl_seconds is not None else default_s

    # Limits and faults ------------------------------------------------------------------

    def usage(self, account: Account) -> _Usage:
        usage = self._usage.get(id(account))
        if usage is None:
            usage = self._usage[id(account)] = _Usage()
        return usage

    def firing_faults(self, provider: str, account: Account | None, path: str) -> list[Fault]:
        """The faults that fire for this call (each counted as fired)."""
        fired = []
        for fault in self.faults:
            if fault.matches(provider, account, path) and (fault.rate >= 1.0 or random.random() < fault.rate):
                fault.fired += 1
                fired.append(fault)
        return fired


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_middleware(state: SandboxState) -> Any:
    """The middleware that runs steps 1-7 of this module's docstring for provider paths."""

    @web.middleware
    async def sandbox_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        path = request.path
        plugin = state.plugins.get(path.split("/", 2)[1]) if path.count("/") >= 2 else None
        if plugin is None:
            return await handler(request)
        entry: dict[str, Any] = {
            "provider": plugin.name,
            "account": None,
            "method": request.method,
            "path": path[len(plugin.name) + 1 :],
            "idempotency_key": None,
            "status": None,
            "fault": None,
            "at": round(state.clock(), 6),
        }
        state.calls.append(entry)
        body = await request.read()
        request["body"] = body
        entry["idempotency_key"] = plugin.idempotency_key(request, body)
        response = await _dispatch(state, plugin, request, handler, entry)
        entry["status"] = response.status
        return response

    return sandbox_middleware


async def _dispatch(
    state: SandboxState,
    plugin: ProviderPlugin,
    request: web.Request,
    handler: Handler,
    entry: dict[str, Any],
) -> web.StreamResponse:
    public = plugin.is_public(request)
    account = None if public else plugin.identify(request)
    request["account"] = account
    if account is not None:
        entry["account"] = account.name
    latency_s, timeout = 0.0, False
    if state.faults:
        # A token or metadata call names its account only in its handler: for faults scoped
        # to an account, find it here from the token the call carries.
        scoped = _token_account(state, plugin.name, request) if public else account
        for fault in state.firing_faults(plugin.name, scoped, entry["path"]):
            if scoped is not None:
                entry["account"] = scoped.name
            latency_s += fault.latency_ms / 1000.0
            if fault.status == "timeout":
                timeout = True
            elif fault.status is not None:
                entry["fault"] = "status"
                if latency_s:
                    await asyncio.sleep(latency_s)
                return plugin.error_response(request, int(fault.status))
    if account is None and not public:
        return plugin.unauthorized(request)
    response = await _limited(state, plugin, request, handler, account, entry, latency_s)
    if timeout:
        entry["status"] = response.status
        entry["fault"] = "timeout"
        await _hold_and_close(state, request)
    return response


def _token_account(state: SandboxState, provider: str, request: web.Request) -> Account | None:
    """The account whose token (refresh, access, or one to revoke) a public call carries,
    in its JSON or form body or its Authorization header; None when it names none."""
    body: bytes = request.get("body") or b""
    candidates: list[Any] = []
    try:
        payload = json.loads(body) if body else None
    except ValueError:
        payload = None
    if isinstance(payload, dict):
        candidates += [payload.get(k) for k in ("refresh_token", "token", "access_token")]
    else:
        form = dict(parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True))
        candidates += [form.get(k) for k in ("refresh_token", "token", "access_token")]
    candidates.append(request.headers.get("Authorization", "").rpartition(" ")[2])
    for value in candidates:
        record = state.token(provider, value) if isinstance(value, str) and value else None
        if record is not None:
            return record.account
    return None


async def _limited(
    state: SandboxState,
    plugin: ProviderPlugin,
    request: web.Request,
    handler: Handler,
    account: Account | None,
    entry: dict[str, Any],
    latency_s: float,
) -> web.StreamResponse:
    """Admit the call under the account's limits, then run it (a latency fault counts as in flight)."""
    if account is None:
        if latency_s:
            await asyncio.sleep(latency_s)
        response = await _run(plugin, request, handler)
        named = request.get("account")
        if named is not None:
            entry["account"] = named.name
        return response
    usage = state.usage(account)
    if not usage.admit(plugin.limits(account), state.clock()):
        return plugin.rate_limited(request)
    try:
        if latency_s:
            await asyncio.sleep(latency_s)
        return await _run(plugin, request, handler)
    finally:
        usage.in_flight -= 1


async def _run(plugin: ProviderPlugin, request: web.Request, handler: Handler) -> web.StreamResponse:
    """The handler; a routing miss (no route, wrong method) gets the provider's own body."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if request.match_info.http_exception is not None:
            return plugin.error_response(request, exc.status)
        raise


async def _hold_and_close(state: SandboxState, request: web.Request) -> None:
    """Hold the connection (the call already took effect), then close it unanswered."""
    released = asyncio.Event()
    state.holds.add(released)
    try:
        await asyncio.wait_for(released.wait(), timeout=state.timeout_hold_s)
    except TimeoutError:
        pass
    finally:
        state.holds.discard(released)
    if request.transport is not None:
        request.transport.abort()
    raise asyncio.CancelledError  # nothing is written back: the outcome stays unknown


def release_holds(state: SandboxState) -> None:
    """Close every held connection now (on shutdown)."""
    for event in list(state.holds):
        event.set()
