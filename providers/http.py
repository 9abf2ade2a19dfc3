"""The one HTTP helper every provider client calls (and the Stripe SDK's HTTP client wraps).

For each request, in this order: the venue's auth headers (which may refresh an OAuth token
first, *outside* the limiter so a refresh never waits behind calls that wait on it); one
rate-limiter token keyed ``(provider, account)``; the request on the caller's shared
``aiohttp.ClientSession`` with the provider's own ``ClientTimeout``; metrics; then the answer
is mapped to ``service.errors``:

    2xx                  the reply (JSON checked when asked: garbage -> ProviderError)
    401                  AuthenticationError, after one refresh + retry for OAuth
    403                  AuthorizationError
    400 / 404 / 422      ValidationError or DataError, as the provider's error hook says
    409                  the provider's hook; default ProviderError, retryable
    429                  RateLimitError(retry_after_s) + limiter.penalize
    5xx                  ProviderError(status), retryable
    aiohttp / timeout    NetworkError

It never retries by itself (the engine schedules retries); the one exception is the single
retry after an OAuth refresh that CONTRACT section 5 asks for. Provider quirks (how to read
an error body) come in through :class:`ProviderSpec`.
"""

from __future__ import annotations

import inspect
import json
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any, Protocol, cast, runtime_checkable

import aiohttp
import structlog

from providers.base import VenueAuth
from service.config import Settings
from service.errors import (
    AuthenticationError,
    AuthorizationError,
    DataError,
    IntegrationError,
    NetworkError,
    ProviderError,
    RateLimitError,
    ValidationError,
)
from service.limiter import limits_for as default_limits_for
from service.metrics import Metrics, status_class

log = structlog.get_logger(__name__)

DEFAULT_MAX_WAIT_S = 10.0  # longer limiter waits become RateLimitError: the engine reschedules
TIMEOUTS: dict[str, aiohttp.ClientTimeout] = {
    # QuickBooks times requests out itself after 120 s; the others answer well within 30 s.
    # No sock_read: the total bounds a stalled read 5 s later, and a sock_read timer is
    # re-armed on every chunk read (about 5% of the daemon's CPU on the consume bench).
    "stripe": aiohttp.ClientTimeout(total=30, connect=5),
    "square": aiohttp.ClientTimeout(total=30, connect=5),
    "quickbooks": aiohttp.ClientTimeout(total=60, connect=5),
    "mailchimp": aiohttp.ClientTimeout(total=60, connect=5),
}
OAUTH_TIMEOUT = aiohttp.ClientTimeout(total=20, connect=5)

QueryParams = Mapping[str, Any] | Sequence[tuple[str, str]]  # pairs keep repeated or bracketed keys


@dataclass(frozen=True, slots=True)
class HttpReply:
    """A provider's answer: status, headers and the raw body."""

    provider: str
    operation: str
    status: int
    headers: Mapping[str, str]
    body: bytes

    def json(self) -> Any:
        """The body as JSON (None for an empty body); garbage raises ProviderError."""
        if not self.body.strip():
            return None
        try:
            return json.loads(self.body)
        except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
            raise self.garbage(f"body is not JSON ({describe_body(self.body, self.headers)})") from None

    def json_object(self) -> dict[str, Any]:
        """The body as a JSON object; anything else raises ProviderError."""
        value = self.json()
        if not isinstance(value, dict):
            raise self.garbage(f"expected a JSON object, got {type(value).__name__}")
        return value

    def garbage(self, what: str) -> ProviderError:
        """A one-line ProviderError for an answer we cannot use (retryable: often a proxy glitch)."""
        return ProviderError(f"{self.provider} {self.operation}: HTTP {self.status}: {what}",
                             status=self.status, retryable=True)


def provider_session() -> aiohttp.ClientSession:
    """The one session a process sends every provider call through. It keeps no cookies:
    it is shared by every venue's credentials, so a cookie a provider (or its edge) sets on
    one venue's call must never ride along on another venue's; none of the APIs needs one,
    and the jar's bookkeeping on each call goes too."""
    return aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())


# error_hook(status, parsed body or None) -> (error class to use or None for the default, message)
ErrorHook = Callable[[int, Any], tuple[type[IntegrationError] | None, str | None]]


def _no_hook(status: int, body: Any) -> tuple[type[IntegrationError] | None, str | None]:
    return None, None


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider's quirks for the helper: its timeout and how to read its error bodies."""

    name: str
    timeout: aiohttp.ClientTimeout
    error_hook: ErrorHook = _no_hook
    default_retry_after_s: float = 1.0  # how long to back the limiter off after a bare 429
    headers: Mapping[str, str] = field(default_factory=dict)  # sent on every call (API version)


def spec_for(name: str, *, error_hook: ErrorHook = _no_hook, default_retry_after_s: float = 1.0,
             headers: Mapping[str, str] | None = None) -> ProviderSpec:
    """A ProviderSpec with the provider's standard timeout."""
    return ProviderSpec(name=name, timeout=TIMEOUTS[name], error_hook=error_hook,
                        default_retry_after_s=default_retry_after_s, headers=dict(headers or {}))


class RateGate(Protocol):
    """What the helper needs of service.limiter.RateLimiter."""

    def acquire(self, provider: str, account: str, limits: Any, *,
                max_wait_s: float) -> AbstractAsyncContextManager[Any]: ...

    def penalize(self, provider: str, account: str, retry_after_s: float) -> Any: ...


@runtime_checkable
class ReportsUse(Protocol):
    """Optional VenueAuth extras (providers/auth.py has them): valid/invalid bookkeeping."""

    async def record_success(self) -> None: ...

    async def record_auth_failure(self, message: str) -> None: ...


_REPORTS_USE: dict[type, bool] = {}


def reports_use(auth: VenueAuth) -> bool:
    """``isinstance(auth, ReportsUse)``, remembered per class: a runtime-checkable
    Protocol's isinstance walks the protocol's members on every call (a few microseconds
    on every provider call)."""
    known = _REPORTS_USE.get(type(auth))
    if known is None:
        known = _REPORTS_USE[type(auth)] = isinstance(auth, ReportsUse)
    return known


LimitsFor = Callable[..., Any]


class ProviderHttp:
    """The shared helper: limiter token, timeout, metrics, status and exception mapping."""

    def __init__(self, session: aiohttp.ClientSession, *, limiter: RateGate, settings: Settings,
                 metrics: Metrics | None = None, max_wait_s: float = DEFAULT_MAX_WAIT_S,
                 limits_for: LimitsFor | None = None) -> None:
        self.session = session
        self.limiter = limiter
        self.settings = settings
        self.metrics = metrics
        self.max_wait_s = max_wait_s
        self._limits_for: LimitsFor = limits_for or default_limits_for
        self._limits: dict[tuple[str, bool], Any] = {}

    def limits(self, provider: str, *, test_mode: bool) -> Any:
        """The provider's limits, with the RATE_LIMIT_* overrides (cached)."""
        key = (provider, test_mode)
        if key not in self._limits:
            per_second, concurrency = self.settings.rate_override(provider)
            self._limits[key] = self._limits_for(
                provider, test_mode=test_mode, per_second=per_second, concurrency=concurrency)
        return self._limits[key]

    async def request(
        self, spec: ProviderSpec, auth: VenueAuth, method: str, url: str, *, operation: str,
        params: QueryParams | None = None, json_body: Any = None, data: Any = None,
        headers: Mapping[str, str] | None = None, sign: bool = True,
    ) -> HttpReply:
        """One call; returns a 2xx reply or raises IntegrationError (see module docstring).

        ``sign=False`` when the caller already put the credential in ``headers`` (the Stripe
        SDK does). A 401 on a refreshable credential refreshes once and retries once."""
        reply = await self._attempt(spec, auth, method, url, operation, params, json_body, data,
                                    headers, sign)
        if reply.status == 401 and await auth.on_unauthorized():
            reply = await self._attempt(spec, auth, method, url, operation, params, json_body,
                                        data, headers, sign)
        error = self.error_for(spec, reply)
        if error is not None:
            await self._after_error(spec, auth, error)
            raise error
        if reports_use(auth):
            await cast(ReportsUse, auth).record_success()
        return reply

    async def request_json(self, spec: ProviderSpec, auth: VenueAuth, method: str, url: str, *,
                           operation: str, **kwargs: Any) -> Any:
        """Like :meth:`request`, returning the parsed JSON body (None when empty)."""
        reply = await self.request(spec, auth, method, url, operation=operation, **kwargs)
        return reply.json()

    async def _attempt(
        self, spec: ProviderSpec, auth: VenueAuth, method: str, url: str, operation: str,
        params: QueryParams | None, json_body: Any, data: Any,
        headers: Mapping[str, str] | None, sign: bool,
    ) -> HttpReply:
        merged = dict(spec.headers)
        if sign:
            merged.update(await auth.headers())  # before the gate: a refresh must not hold a slot
        merged.update(headers or {})
        limits = self.limits(spec.name, test_mode=auth.test_mode)
        async with self.limiter.acquire(spec.name, auth.account_id, limits, max_wait_s=self.max_wait_s):
            return await self.send(spec, method, url, operation=operation, params=params,
                                   json_body=json_body, data=data, headers=merged)

    async def send(
        self, spec: ProviderSpec, method: str, url: str, *, operation: str,
        params: QueryParams | None = None, json_body: Any = None, data: Any = None,
        headers: Mapping[str, str] | None = None,
    ) -> HttpReply:
        """The bare call inside the limiter gate (see :func:`send_request`)."""
        return await send_request(self.session, spec, method, url, operation=operation,
                                  metrics=self.metrics, params=params, json_body=json_body,
                                  data=data, headers=headers)

    def error_for(self, spec: ProviderSpec, reply: HttpReply) -> IntegrationError | None:
        """The error a reply means, or None for a success."""
        return map_status(spec, reply, max_retry_after_s=self.settings.retry_max_delay_seconds)

    async def penalize(self, spec: ProviderSpec, account: str, error: RateLimitError) -> None:
        """Tell the limiter the provider pushed back, so every process slows down for this account."""
        wait_s = error.retry_after_s if error.retry_after_s is not None else spec.default_retry_after_s
        outcome = self.limiter.penalize(spec.name, account, wait_s)
        if inspect.isawaitable(outcome):
            await outcome

    async def _after_error(self, spec: ProviderSpec, auth: VenueAuth, error: IntegrationError) -> None:
        if isinstance(error, RateLimitError):
            await self.penalize(spec, auth.account_id, error)
        if isinstance(error, AuthenticationError) and reports_use(auth):
            await cast(ReportsUse, auth).record_auth_failure(error.message)


async def send_request(
    session: aiohttp.ClientSession, spec: ProviderSpec, method: str, url: str, *, operation: str,
    metrics: Metrics | None, params: QueryParams | None = None, json_body: Any = None,
    data: Any = None, headers: Mapping[str, str] | None = None,
    timeout: aiohttp.ClientTimeout | None = None,
) -> HttpReply:
    """One bare request: timeout, metrics, exception mapping; no limiter, no status mapping.

    Raises NetworkError for connection failures and timeouts. providers/oauth.py calls it
    directly for token endpoints (OAuth servers are not the rate-limited API)."""
    started = time.monotonic()
    status: int | None = None
    try:
        async with session.request(
            method, url, params=params, json=json_body, data=data, headers=headers,
            timeout=timeout or spec.timeout, allow_redirects=False,
        ) as response:
            status = response.status
            body = await _read_bounded(response, f"{spec.name} {operation}: HTTP {status}")
            return HttpReply(spec.name, operation, status, response.headers, body)
    except (aiohttp.ClientError, TimeoutError, OSError) as exc:
        raise NetworkError(f"{spec.name} {operation}: {describe_network_error(exc)}") from exc
    finally:
        _observe(metrics, spec.name, operation, status, time.monotonic() - started)


MAX_BODY_BYTES = 32 * 1024 * 1024  # far above any page or batch answer of the four APIs


async def _read_bounded(response: aiohttp.ClientResponse, where: str) -> bytes:
    """The body, refused past MAX_BODY_BYTES (as sent, or once decompressed: a gzip bomb
    is stopped as it inflates) instead of held whole: one provider's or proxy's runaway
    answer must not take the daemon's memory, and with it every venue's syncs."""
    declared = response.content_length
    if (declared or 0) > MAX_BODY_BYTES:
        raise ProviderError(f"{where}: body of {declared} bytes is over the "
                            f"{MAX_BODY_BYTES} bytes accepted", status=response.status, retryable=True)
    if declared is not None and response.headers.get("Content-Encoding", "identity") == "identity":
        return await response.read()  # exactly the declared length: the one-read common case
    chunks, size = [], 0
    async for chunk in response.content.iter_chunked(1 << 16):
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise ProviderError(f"{where}: body over the {MAX_BODY_BYTES} bytes accepted",
                                status=response.status, retryable=True)
        chunks.append(chunk)
    return b"".join(chunks)


def _observe(metrics: Metrics | None, provider: str, operation: str, status: int | None,
             duration_s: float) -> None:
    if metrics is not None:
        metrics.child(metrics.provider_calls, provider, operation, status_class(status)).inc()
        metrics.child(metrics.provider_call_duration, provider, operation).observe(duration_s)
        # 429s are counted by the limiter's observer when penalize() is called, not here.
    log.debug("provider_call", provider=provider, operation=operation, status=status,
              duration_s=round(duration_s, 4))


def map_status(spec: ProviderSpec, reply: HttpReply, *, max_retry_after_s: float) -> IntegrationError | None:
    """Pure status -> error mapping for one reply (None for 2xx)."""
    status = reply.status
    if 200 <= status < 300:
        return None
    body = try_json(reply.body)
    # A body that is not JSON reaches the hook as bytes: QuickBooks' throttle fault is XML.
    override, detail = spec.error_hook(status, body if body is not None else reply.body)
    prefix = f"{spec.name} {reply.operation}: HTTP {status}"
    message = f"{prefix}: {detail}" if detail else f"{prefix}: {describe_body(reply.body, reply.headers)}"
    cls = override or _default_class(status)
    if cls is DataError and status in (404, 410) and not isinstance(body, dict):
        # Not the provider's own "no such object" (all four answer a JSON object): a gateway
        # or a misrouted call. Taken as "gone", a webhook's record would be announced deleted.
        cls = ProviderError
    retry_after_s = parse_retry_after(reply.headers.get("Retry-After"), cap_s=max_retry_after_s)
    if cls is RateLimitError:
        return RateLimitError(message, retry_after_s=retry_after_s, status=status)
    if cls is ProviderError:  # a 503 may say when to come back, too
        return ProviderError(message, status=status, retryable=status >= 500 or status in (404, 409, 408, 410),
                             retry_after_s=retry_after_s)
    return cls(message, status=status)


def _default_class(status: int) -> type[IntegrationError]:
    if status == 401:
        return AuthenticationError
    if status == 403:
        return AuthorizationError
    if status == 429:
        return RateLimitError
    if status in (404, 410):
        return DataError
    if status >= 500 or status in (409, 408) or status < 400:
        return ProviderError
    return ValidationError  # 400, 422 and the other 4xx: the request itself is wrong


def try_json(body: bytes) -> Any:
    """The body as JSON, or None when it is empty or not JSON."""
    try:
        return json.loads(body) if body.strip() else None
    except (UnicodeDecodeError, ValueError, RecursionError):  # RecursionError: nested too deep
        return None


def parse_retry_after(value: str | None, *, cap_s: float, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date), capped; None when absent or bad."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):  # OverflowError: year 99999...
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    if seconds != seconds:  # NaN
        return None
    return min(max(seconds, 0.0), cap_s)


def describe_body(body: bytes, headers: Mapping[str, str]) -> str:
    """A short, one-line, secret-free description of a body we could not use."""
    kind = headers.get("Content-Type", "no content type").split(";")[0].strip()
    if not body.strip():
        return f"empty body ({kind})"
    start = body.lstrip()[:1]
    if start == b"<":
        return f"an HTML/XML page ({kind}, {len(body)} bytes)"
    if start in (b"{", b"["):
        return f"truncated or malformed JSON ({kind}, {len(body)} bytes)"
    return f"unreadable body ({kind}, {len(body)} bytes)"


def describe_network_error(exc: BaseException) -> str:
    """One line naming a connection failure, without URLs or headers."""
    if isinstance(exc, TimeoutError | aiohttp.ServerTimeoutError):
        return "timed out"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.__class__.__name__})"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "server disconnected"
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "response body cut short"
    return exc.__class__.__name__


def require(value: Any, key: str, kind: type, *, reply: HttpReply) -> Any:
    """``value[key]`` checked to be of ``kind``; a wrong shape raises ProviderError."""
    if not isinstance(value, dict) or not isinstance(value.get(key), kind):
        raise reply.garbage(f"response has no {kind.__name__} {key!r}")
    return value[key]
