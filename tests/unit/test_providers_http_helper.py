"""The shared provider HTTP helper: limiter gate, status and exception mapping, metrics."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from providers.auth import StaticAuth
from providers.fake import RecordingGate, fake_limits_for
from providers.http import ProviderHttp, parse_retry_after, spec_for
from service.config import Settings
from service.errors import (
    AuthenticationError,
    AuthorizationError,
    DataError,
    NetworkError,
    ProviderError,
    RateLimitError,
    ValidationError,
)
from service.metrics import Metrics

URL = "https://api.example.test/v1/things"
SPEC = spec_for("square")


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def gate() -> RecordingGate:
    return RecordingGate()


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def http(session: aiohttp.ClientSession, gate: RecordingGate, metrics: Metrics) -> ProviderHttp:
    settings = Settings(retry_max_delay_seconds=300, rate_limit_square_per_second=7)
    return ProviderHttp(session, limiter=gate, settings=settings, metrics=metrics, limits_for=fake_limits_for)


class RefreshingAuth(StaticAuth):
    """An OAuth-like auth whose refresh swaps in a new token."""

    async def on_unauthorized(self) -> bool:
        self.unauthorized_calls += 1
        self._secret = "fresh-token"
        return True


async def test_success_takes_a_limiter_token_with_overrides(http: ProviderHttp, gate: RecordingGate) -> None:
    """A call takes one token keyed (provider, account) with the RATE_LIMIT_* override."""
    auth = StaticAuth(provider="square", secret="k", account_id="merchant-1")
    with aioresponses() as mocked:
        mocked.get(URL, payload={"ok": True})
        body = await http.request_json(SPEC, auth, "GET", URL, operation="list_things")
    assert {"ok": True} == body
    assert [
        (
            "square",
            "merchant-1",
            {"provider": "square", "test_mode": False, "per_second": 7, "concurrency": None},
        )
    ] == gate.acquired


async def test_auth_header_is_sent(http: ProviderHttp) -> None:
    """The venue's credential goes in the Authorization header."""
    auth = StaticAuth(provider="square", secret="sq-token")
    with aioresponses() as mocked:
        mocked.get(URL, payload={})
        await http.request(SPEC, auth, "GET", URL, operation="op")
        sent = next(iter(mocked.requests.values()))[0]
    assert "Bearer sq-token" == sent.kwargs["headers"]["Authorization"]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (401, AuthenticationError),
        (403, AuthorizationError),
        (400, ValidationError),
        (422, ValidationError),
        (404, DataError),
        (409, ProviderError),
        (500, ProviderError),
        (503, ProviderError),
        (429, RateLimitError),
    ],
)
async def test_status_maps_to_category(http: ProviderHttp, status: int, expected: type) -> None:
    """Each HTTP status maps to its error category."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, status=status, payload={"errors": [{"detail": "nope"}]})
        with pytest.raises(expected) as caught:
            await http.request(SPEC, auth, "GET", URL, operation="op")
    assert status == caught.value.status
    assert "\n" not in str(caught.value)


async def test_5xx_and_409_are_retryable_4xx_not(http: ProviderHttp) -> None:
    """5xx and 409 are retryable provider errors; a 400 is not retryable."""
    auth = StaticAuth(provider="square", secret="k")
    outcomes = []
    with aioresponses() as mocked:
        for status in (502, 409, 400):
            mocked.get(URL, status=status, body="")
            with pytest.raises(Exception) as caught:
                await http.request(SPEC, auth, "GET", URL, operation="op")
            outcomes.append(caught.value.retryable)
    assert [True, True, False] == outcomes


async def test_429_reads_retry_after_and_penalizes(
    http: ProviderHttp, gate: RecordingGate, metrics: Metrics
) -> None:
    """A 429 carries Retry-After seconds and penalizes the limiter for that long."""
    auth = StaticAuth(provider="square", secret="k", account_id="m-9")
    with aioresponses() as mocked:
        mocked.get(URL, status=429, headers={"Retry-After": "7"}, body="")
        with pytest.raises(RateLimitError) as caught:
            await http.request(SPEC, auth, "GET", URL, operation="op")
    assert 7.0 == caught.value.retry_after_s
    assert [("square", "m-9", 7.0)] == gate.penalties


async def test_429_without_retry_after_penalizes_by_default(http: ProviderHttp, gate: RecordingGate) -> None:
    """A bare 429 leaves retry_after_s unset and backs the limiter off by the provider default."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, status=429, body="")
        with pytest.raises(RateLimitError) as caught:
            await http.request(SPEC, auth, "GET", URL, operation="op")
    assert caught.value.retry_after_s is None
    assert [("square", "test", 1.0)] == gate.penalties


def test_retry_after_http_date_is_capped() -> None:
    """Retry-After as an HTTP date becomes seconds from now, capped at the maximum."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    soon = format_datetime(now + timedelta(seconds=30), usegmt=True)
    late = format_datetime(now + timedelta(hours=2), usegmt=True)
    assert 30.0 == parse_retry_after(soon, cap_s=300, now=now)
    assert 300.0 == parse_retry_after(late, cap_s=300, now=now)
    assert 300.0 == parse_retry_after("9999", cap_s=300)
    assert parse_retry_after("soon-ish", cap_s=300) is None
    assert parse_retry_after("Mon, 01 Jan 99999999999999999999 00:00:00 GMT", cap_s=300) is None  # overflows


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b"<html><body>Bad gateway</body></html>", "text/html"),
        (b'{"data": [1, 2', "application/json"),
        (b"\x00\xff garbage", "application/octet-stream"),
        (b"[" * 100_000, "application/json"),  # nested past Python's recursion limit
    ],
)
async def test_garbage_is_a_one_line_provider_error(
    http: ProviderHttp, body: bytes, content_type: str
) -> None:
    """HTML, truncated JSON or binary on a 200 is a one-line ProviderError."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, status=200, body=body, content_type=content_type)
        with pytest.raises(ProviderError) as caught:
            await http.request_json(SPEC, auth, "GET", URL, operation="op")
    assert "\n" not in str(caught.value)
    assert str(caught.value).startswith("square op: HTTP 200")


@pytest.mark.parametrize(
    ("body", "content_type"), [(b"<html><body>404 Not Found</body></html>", "text/html"), (b"", "text/plain")]
)
async def test_a_404_that_is_not_the_providers_own_answer_is_not_a_missing_record(
    http: ProviderHttp, body: bytes, content_type: str
) -> None:
    """A gateway's HTML (or empty) 404 is a retryable provider error: read as the provider's
    "no such object", a webhook's fetch would have announced the record deleted."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, status=404, body=body, content_type=content_type)
        with pytest.raises(ProviderError) as caught:
            await http.request(SPEC, auth, "GET", URL, operation="op")
    assert (404, True) == (caught.value.status, caught.value.retryable)
    assert not isinstance(caught.value, DataError)


async def test_an_error_page_nested_too_deep_is_still_a_retryable_provider_error(http: ProviderHttp) -> None:
    """A 502 whose body is JSON nested past the recursion limit: its status decides (it
    escaped as a RecursionError, dead-lettered as unknown)."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, status=502, body=b"[" * 100_000, content_type="application/json")
        with pytest.raises(ProviderError) as caught:
            await http.request_json(SPEC, auth, "GET", URL, operation="op")
    assert caught.value.retryable


@pytest.mark.parametrize("declared", [True, False])
async def test_a_body_past_the_limit_is_refused_not_held(
    http: ProviderHttp, monkeypatch: pytest.MonkeyPatch, declared: bool
) -> None:
    """A runaway answer (declared by Content-Length or only found while reading) is a
    retryable ProviderError once it passes MAX_BODY_BYTES, never held whole in memory."""
    import providers.http as provider_http

    monkeypatch.setattr(provider_http, "MAX_BODY_BYTES", 1000)
    auth = StaticAuth(provider="square", secret="k")
    headers = {"Content-Length": "20000"} if declared else {}
    with aioresponses() as mocked:
        mocked.get(URL, status=200, body=b"x" * 20_000, headers=headers)
        with pytest.raises(ProviderError, match="over the 1000 bytes accepted") as caught:
            await http.request_json(SPEC, auth, "GET", URL, operation="op")
    assert caught.value.retryable


async def test_wrong_shape_is_a_provider_error(http: ProviderHttp) -> None:
    """A JSON array where an object is expected is a ProviderError."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, payload=[1, 2])
        reply = await http.request(SPEC, auth, "GET", URL, operation="op")
    with pytest.raises(ProviderError):
        reply.json_object()


@pytest.mark.parametrize(
    "exc", [aiohttp.ClientConnectionError("refused"), TimeoutError(), aiohttp.ServerDisconnectedError()]
)
async def test_network_failures_are_network_errors(
    http: ProviderHttp, metrics: Metrics, exc: Exception
) -> None:
    """Connection errors and timeouts become retryable NetworkErrors, counted as 'error'."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, exception=exc)
        with pytest.raises(NetworkError) as caught:
            await http.request(SPEC, auth, "GET", URL, operation="op")
    assert caught.value.retryable
    assert 1.0 == metrics.registry.get_sample_value(
        "integration_provider_calls_total", {"provider": "square", "operation": "op", "status_class": "error"}
    )


async def test_401_refreshes_once_and_retries(http: ProviderHttp, gate: RecordingGate) -> None:
    """A 401 on a refreshable credential refreshes once and retries with the new token."""
    auth = RefreshingAuth(provider="square", secret="old-token", bearer=True)
    with aioresponses() as mocked:
        mocked.get(URL, status=401, payload={})
        mocked.get(URL, payload={"ok": 1})
        body = await http.request_json(SPEC, auth, "GET", URL, operation="op")
        calls = next(iter(mocked.requests.values()))
    assert {"ok": 1} == body
    assert ["Bearer old-token", "Bearer fresh-token"] == [c.kwargs["headers"]["Authorization"] for c in calls]
    assert 2 == len(gate.acquired)


async def test_401_after_refresh_is_authentication_error(http: ProviderHttp) -> None:
    """A second 401 after the refresh is an AuthenticationError, with no third attempt."""
    auth = RefreshingAuth(provider="square", secret="old", bearer=True)
    with aioresponses() as mocked:
        mocked.get(URL, status=401, payload={}, repeat=True)
        with pytest.raises(AuthenticationError):
            await http.request(SPEC, auth, "GET", URL, operation="op")
        calls = next(iter(mocked.requests.values()))
    assert 2 == len(calls)
    assert 1 == auth.unauthorized_calls


async def test_error_hook_chooses_category_and_message(
    session: aiohttp.ClientSession, gate: RecordingGate
) -> None:
    """A provider's error hook can turn a 400 into a DataError with its own message."""

    def hook(status: int, body: Any) -> tuple[type | None, str | None]:
        return DataError, body["error"]["message"]

    http = ProviderHttp(session, limiter=gate, settings=Settings(), limits_for=fake_limits_for)
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, status=400, payload={"error": {"message": "card declined"}})
        with pytest.raises(DataError) as caught:
            await http.request(spec_for("square", error_hook=hook), auth, "GET", URL, operation="op")
    assert "square op: HTTP 400: card declined" == str(caught.value)


async def test_metrics_count_calls_by_status_class(http: ProviderHttp, metrics: Metrics) -> None:
    """Each call is counted by provider, operation and status class, with a duration."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, payload={})
        await http.request(SPEC, auth, "GET", URL, operation="list")
    labels = {"provider": "square", "operation": "list", "status_class": "2xx"}
    assert 1.0 == metrics.registry.get_sample_value("integration_provider_calls_total", labels)
    assert 1.0 == metrics.registry.get_sample_value(
        "integration_provider_call_duration_seconds_count", {"provider": "square", "operation": "list"}
    )


async def test_503_retry_after_is_kept(http: ProviderHttp, gate: RecordingGate) -> None:
    """A 503 with Retry-After carries it on the retryable ProviderError, without a limiter penalty."""
    auth = StaticAuth(provider="square", secret="k")
    with aioresponses() as mocked:
        mocked.get(URL, status=503, headers={"Retry-After": "12"}, body="")
        with pytest.raises(ProviderError) as caught:
            await http.request(SPEC, auth, "GET", URL, operation="op")
    assert (12.0, True, []) == (caught.value.retry_after_s, caught.value.retryable, gate.penalties)


async def test_a_compressed_body_is_refused_while_it_inflates(
    http: ProviderHttp, monkeypatch: pytest.MonkeyPatch, unused_tcp_port: int
) -> None:
    """A small gzip body that inflates past MAX_BODY_BYTES (a bomb) is refused as it is read;
    its Content-Length is the compressed size, so that alone cannot tell."""
    import gzip

    from aiohttp import web

    import providers.http as provider_http

    monkeypatch.setattr(provider_http, "MAX_BODY_BYTES", 100_000)
    bomb = gzip.compress(b"0" * 5_000_000)

    async def handler(request: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip", "Content-Type": "application/json"})

    app = web.Application()
    app.router.add_get("/v1/things", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_tcp_port).start()
    try:
        auth = StaticAuth(provider="square", secret="k")
        with pytest.raises(ProviderError, match="over the 100000 bytes accepted"):
            await http.request(SPEC, auth, "GET", f"http://127.0.0.1:{unused_tcp_port}/v1/things", operation="op")
    finally:
        await runner.cleanup()
