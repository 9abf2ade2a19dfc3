"""Square client error mapping: every category, garbage bodies and network failures."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from providers.auth import StaticAuth
from providers.base import PushItem
from providers.http import ProviderHttp
from providers.square import SQUARE_VERSION, SquareClient, fetch_merchant_id
from service.config import Settings
from service.errors import (
    AuthenticationError,
    AuthorizationError,
    IntegrationError,
    NetworkError,
    ProviderError,
    RateLimitError,
    ValidationError,
)
from service.limiter import Limits, MemoryBucketStore, RateLimiter

BASE = "https://square.test"
CUSTOMERS = re.compile(r"^https://square\.test/v2/customers(\?.*)?$")
SETTINGS = Settings(square_api_base=BASE, retry_max_delay_seconds=300)


def fast_limits(provider: str, **_: Any) -> Limits:
    return Limits(per_second=10_000.0)


@pytest.fixture
async def client() -> AsyncIterator[SquareClient]:
    async with aiohttp.ClientSession() as session:
        http = ProviderHttp(
            session, limiter=RateLimiter(MemoryBucketStore()), settings=SETTINGS, limits_for=fast_limits
        )
        yield SquareClient(http)


@pytest.fixture
def auth() -> StaticAuth:
    return StaticAuth(provider="square", secret="sq-token", account_id="MERCHANT1")


def square_error(category: str, code: str, detail: str = "nope", field: str | None = None) -> dict[str, Any]:
    error = {"category": category, "code": code, "detail": detail}
    if field:
        error["field"] = field
    return {"errors": [error]}


async def pull_error(client: SquareClient, auth: StaticAuth, **response: Any) -> IntegrationError:
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, **response)
        with pytest.raises(IntegrationError) as caught:
            await client.pull_page(auth, "customers", cursor=None, resume=None, options={})
    return caught.value


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (401, square_error("AUTHENTICATION_ERROR", "ACCESS_TOKEN_EXPIRED"), AuthenticationError),
        (401, square_error("AUTHENTICATION_ERROR", "UNAUTHORIZED"), AuthenticationError),
        (403, square_error("AUTHENTICATION_ERROR", "INSUFFICIENT_SCOPES"), AuthorizationError),
        (429, square_error("RATE_LIMIT_ERROR", "RATE_LIMITED"), RateLimitError),
        (400, square_error("INVALID_REQUEST_ERROR", "INVALID_CURSOR"), ValidationError),
        (500, square_error("API_ERROR", "INTERNAL_SERVER_ERROR"), ProviderError),
        (503, square_error("API_ERROR", "SERVICE_UNAVAILABLE"), ProviderError),
    ],
)
async def test_error_body_maps_to_category(
    client: SquareClient, auth: StaticAuth, status: int, body: dict[str, Any], expected: type
) -> None:
    """Square's {"errors": [...]} maps to the contract category."""
    error = await pull_error(client, auth, status=status, payload=body)
    assert expected is type(error)
    assert body["errors"][0]["code"] in str(error)
    assert "\n" not in str(error)


async def test_rate_limit_reads_retry_after(client: SquareClient, auth: StaticAuth) -> None:
    """A 429 keeps Square's Retry-After so the engine waits that long."""
    error = await pull_error(
        client,
        auth,
        status=429,
        payload=square_error("RATE_LIMIT_ERROR", "RATE_LIMITED"),
        headers={"Retry-After": "7"},
    )
    assert isinstance(error, RateLimitError)
    assert 7.0 == error.retry_after_s


async def test_server_errors_are_retryable_and_validation_is_not(
    client: SquareClient, auth: StaticAuth
) -> None:
    """5xx is retried, a bad request is not."""
    server = await pull_error(
        client, auth, status=500, payload=square_error("API_ERROR", "INTERNAL_SERVER_ERROR")
    )
    bad = await pull_error(
        client, auth, status=400, payload=square_error("INVALID_REQUEST_ERROR", "BAD_REQUEST")
    )
    assert (True, False) == (server.retryable, bad.retryable)


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, "<html><body>Bad gateway</body></html>", "text/html"),
        (502, "<html><body>Bad gateway</body></html>", "text/html"),
        (200, '{"customers": [{"id": "A", "given_na', "application/json"),
        (200, '["not", "an", "object"]', "application/json"),
        (200, '{"customers": "not a list"}', "application/json"),
    ],
)
async def test_garbage_response_is_a_one_line_provider_error(
    client: SquareClient, auth: StaticAuth, status: int, body: str, content_type: str
) -> None:
    """HTML, truncated JSON and a wrong shape become a one-line ProviderError."""
    error = await pull_error(client, auth, status=status, body=body, content_type=content_type)
    assert ProviderError is type(error)
    assert "\n" not in str(error) and str(error).startswith("square")


async def test_network_failure_is_a_network_error(client: SquareClient, auth: StaticAuth) -> None:
    """A refused connection becomes NetworkError (retried)."""
    error = await pull_error(client, auth, exception=aiohttp.ClientConnectionError("refused"))
    assert NetworkError is type(error)
    assert error.retryable


async def test_every_call_pins_the_version_and_sends_the_token(
    client: SquareClient, auth: StaticAuth
) -> None:
    """Square-Version is the one pinned constant; the token goes in Authorization."""
    with aioresponses() as mocked:
        mocked.get(CUSTOMERS, payload={"customers": []})
        await client.pull_page(auth, "customers", cursor=None, resume=None, options={})
        (call,) = [c for calls in mocked.requests.values() for c in calls]
    headers = call.kwargs["headers"]
    assert (SQUARE_VERSION, "Bearer sq-token") == (headers["Square-Version"], headers["Authorization"])


def push_item(**payload: Any) -> PushItem:
    return PushItem(
        record_id="rec-1",
        payload=payload or {"given_name": "Ada"},
        idempotency_key="5f0c6a66-37a7-5a4e-9d6e-0a1b2c3d4e5f",
    )


@pytest.mark.parametrize(
    ("code", "category"),
    [("INVALID_VALUE", "INVALID_REQUEST_ERROR"), ("IDEMPOTENCY_KEY_REUSED", "INVALID_REQUEST_ERROR")],
)
async def test_refused_write_fails_the_record_not_the_call(
    client: SquareClient, auth: StaticAuth, code: str, category: str
) -> None:
    """A validation error or a reused key comes back as a failed result."""
    with aioresponses() as mocked:
        mocked.post(CUSTOMERS, status=400, payload=square_error(category, code, field="email_address"))
        (result,) = await client.push_batch(auth, "customers", [push_item()], options={})
    assert ("failed", "validation") == (result.outcome, result.error.category if result.error else None)
    assert code in str(result.error)


async def test_rate_limited_write_raises_for_the_whole_call(client: SquareClient, auth: StaticAuth) -> None:
    """A 429 on a write is the call's failure: the engine retries the batch with the same keys."""
    with aioresponses() as mocked:
        mocked.post(CUSTOMERS, status=429, payload=square_error("RATE_LIMIT_ERROR", "RATE_LIMITED"))
        with pytest.raises(RateLimitError):
            await client.push_batch(auth, "customers", [push_item()], options={})


async def test_fetch_record_answers_none_for_not_found(client: SquareClient, auth: StaticAuth) -> None:
    """NOT_FOUND on a read means the record is gone."""
    with aioresponses() as mocked:
        mocked.get(
            f"{BASE}/v2/customers/GONE",
            status=404,
            payload=square_error("INVALID_REQUEST_ERROR", "NOT_FOUND"),
        )
        assert None is await client.fetch_record(auth, "customers", "GONE")


async def test_health_accepts_squares_own_401(client: SquareClient) -> None:
    """Square answering 401 in its own format is healthy; a 503 page is not."""
    with aioresponses() as mocked:
        mocked.get(
            f"{BASE}/v2/locations", status=401, payload=square_error("AUTHENTICATION_ERROR", "UNAUTHORIZED")
        )
        mocked.get(f"{BASE}/v2/locations", status=503, body="<html>down</html>", content_type="text/html")
        await client.check_health()
        with pytest.raises(ProviderError):
            await client.check_health()


async def test_fetch_merchant_id_through_the_helper() -> None:
    """`credentials set` learns the merchant id from GET /v2/merchants/me."""
    with aioresponses() as mocked:
        mocked.get(f"{BASE}/v2/merchants/me", payload={"merchant": {"id": "MLEFBHHSJGVHD", "country": "US"}})
        mocked.get(
            f"{BASE}/v2/merchants/me",
            status=401,
            payload=square_error("AUTHENTICATION_ERROR", "UNAUTHORIZED"),
        )
        assert "MLEFBHHSJGVHD" == await fetch_merchant_id(SETTINGS, "sq-key")
        with pytest.raises(AuthenticationError):
            await fetch_merchant_id(SETTINGS, "bad-key")


async def test_an_id_that_is_not_a_square_id_never_reaches_a_url(
    client: SquareClient, auth: StaticAuth
) -> None:
    """A webhook id with '/' or '..' is a DataError before any request."""
    from service.errors import DataError

    with aioresponses():
        with pytest.raises(DataError):
            await client.fetch_record(auth, "customers", "../locations")
        (result,) = await client.push_batch(
            auth, "customers", [PushItem("r", {"nickname": "x"}, "k", external_id="A/B")], options={}
        )
    assert ("failed", "data") == (result.outcome, result.error.category if result.error else None)
