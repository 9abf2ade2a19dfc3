"""QuickBooks client error mapping: Fault types, the XML throttle, 200 Faults, garbage."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from providers.auth import StaticAuth
from providers.http import ProviderHttp
from providers.quickbooks import MINOR_VERSION, QuickBooksClient
from service.config import Settings
from service.errors import (
    AuthenticationError,
    AuthorizationError,
    ConfigurationError,
    IntegrationError,
    NetworkError,
    ProviderError,
    RateLimitError,
    ValidationError,
)
from service.limiter import Limits, MemoryBucketStore, RateLimiter

BASE = "https://qbo.test"
QUERY = re.compile(r"^https://qbo\.test/v3/company/4620816365/query\?.*$")
THROTTLE_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<IntuitResponse time="2025-01-01T00:00:00.000-08:00">'
    '<Fault type="SERVICE"><Error code="3001"><Message>message=ThrottleExceeded; errorCode=003001; '
    "statusCode=429</Message><Detail>The request limit was reached.  Try again later</Detail></Error>"
    "</Fault></IntuitResponse>"
)
EXPIRED = {
    "fault": {
        "error": [
            {
                "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                "detail": "Token expired: AB11",
                "code": "3200",
            }
        ],
        "type": "AUTHENTICATION",
    },
    "time": "2025-01-01T00:00:00.000-08:00",
}


def fault(kind: str, code: str, detail: str = "nope") -> dict[str, Any]:
    return {
        "Fault": {"Error": [{"Message": detail, "Detail": detail, "code": code}], "type": kind},
        "time": "2025-01-01T00:00:00.000-08:00",
    }


def fast_limits(provider: str, **_: Any) -> Limits:
    return Limits(per_second=10_000.0)


@pytest.fixture
async def client() -> AsyncIterator[QuickBooksClient]:
    async with aiohttp.ClientSession() as session:
        http = ProviderHttp(
            session,
            limiter=RateLimiter(MemoryBucketStore()),
            settings=Settings(quickbooks_api_base=BASE, retry_max_delay_seconds=300),
            limits_for=fast_limits,
        )
        yield QuickBooksClient(http)


@pytest.fixture
def auth() -> StaticAuth:
    return StaticAuth(
        provider="quickbooks", secret="qb-token", account_id="4620816365", values={"realm_id": "4620816365"}
    )


async def pull_error(client: QuickBooksClient, auth: StaticAuth, **response: Any) -> IntegrationError:
    with aioresponses() as mocked:
        mocked.get(QUERY, **response)
        with pytest.raises(IntegrationError) as caught:
            await client.pull_page(auth, "customers", cursor=None, resume=None, options={})
    return caught.value


@pytest.mark.parametrize(
    ("status", "body", "expected"),
    [
        (400, fault("ValidationFault", "2020", "Required param missing"), ValidationError),
        (401, EXPIRED, AuthenticationError),
        (401, fault("AuthenticationFault", "100"), AuthenticationError),
        (403, fault("AuthorizationFault", "120"), AuthorizationError),
        (500, fault("SystemFault", "10000"), ProviderError),
        (200, fault("ValidationFault", "4000", "query parser error"), ValidationError),
        (200, fault("SystemFault", "10000"), ProviderError),
    ],
)
async def test_fault_maps_to_category(
    client: QuickBooksClient, auth: StaticAuth, status: int, body: dict[str, Any], expected: type
) -> None:
    """Each Fault type (also inside a 200, also the lowercase token fault) maps to its category."""
    error = await pull_error(client, auth, status=status, payload=body)
    assert expected.category == error.category
    assert "\n" not in str(error)


@pytest.mark.parametrize("status", [429, 403])
async def test_xml_throttle_reply_is_a_rate_limit(client: QuickBooksClient, auth: StaticAuth, status: int) -> None:
    """The throttle reply is XML even when JSON was asked for: still rate_limit, also with
    the older 403 (providers.md 3.6), which was read as a refused authorization, never retried."""
    error = await pull_error(client, auth, status=status, body=THROTTLE_XML, content_type="application/xml")
    assert RateLimitError is type(error)
    assert error.retryable
    assert "3001" in str(error)


async def test_throttle_in_json_waits_sixty_seconds_when_no_retry_after(
    client: QuickBooksClient, auth: StaticAuth
) -> None:
    """A 3001 fault in a 200 body is rate_limit with Intuit's 60 s wait."""
    error = await pull_error(client, auth, status=200, payload=fault("SERVICE", "3001"))
    assert (RateLimitError, 60.0) == (type(error), error.retry_after_s)


@pytest.mark.parametrize(
    ("status", "body", "content_type"),
    [
        (200, "<html><body>Service Unavailable</body></html>", "text/html"),
        (503, "<html><body>Service Unavailable</body></html>", "text/html"),
        (200, '{"QueryResponse": {"Customer": [{"Id": "1", "Displ', "application/json"),
        (200, '{"QueryResponse": {"Customer": {"Id": "1"}}}', "application/json"),
        (200, "[]", "application/json"),
    ],
)
async def test_garbage_response_is_a_one_line_provider_error(
    client: QuickBooksClient, auth: StaticAuth, status: int, body: str, content_type: str
) -> None:
    """HTML, truncated JSON and a wrong shape become a one-line ProviderError."""
    error = await pull_error(client, auth, status=status, body=body, content_type=content_type)
    assert ProviderError is type(error)
    assert "\n" not in str(error) and str(error).startswith("quickbooks")


async def test_network_timeout_is_a_network_error(client: QuickBooksClient, auth: StaticAuth) -> None:
    """A timeout becomes a retryable NetworkError."""
    error = await pull_error(client, auth, exception=TimeoutError())
    assert (NetworkError, True) == (type(error), error.retryable)


async def test_every_call_pins_minorversion_and_asks_for_json(
    client: QuickBooksClient, auth: StaticAuth
) -> None:
    """minorversion is the one pinned constant; Accept is application/json."""
    with aioresponses() as mocked:
        mocked.get(QUERY, payload={"QueryResponse": {}})
        await client.pull_page(auth, "customers", cursor=None, resume=None, options={})
        ((key, (call,)),) = mocked.requests.items()
    assert MINOR_VERSION == key[1].query["minorversion"]
    assert ("application/json", "Bearer qb-token") == (
        call.kwargs["headers"]["Accept"],
        call.kwargs["headers"]["Authorization"],
    )


async def test_missing_realm_is_a_configuration_error(client: QuickBooksClient) -> None:
    """A credential without realm_id cannot address a company."""
    with pytest.raises(ConfigurationError):
        await client.pull_page(
            StaticAuth(provider="quickbooks", secret="t"), "customers", cursor=None, resume=None, options={}
        )


async def test_fetch_record_answers_none_for_object_not_found(
    client: QuickBooksClient, auth: StaticAuth
) -> None:
    """Fault 610 (Object Not Found) on a read means the record is gone."""
    with aioresponses() as mocked:
        mocked.get(
            re.compile(r"^https://qbo\.test/v3/company/4620816365/invoice/99\?.*$"),
            status=400,
            payload=fault("ValidationFault", "610", "Object Not Found"),
        )
        assert None is await client.fetch_record(auth, "invoices", "99")


async def test_health_accepts_intuits_own_401(client: QuickBooksClient) -> None:
    """Intuit answering 401 is healthy; an HTML 502 is not."""
    url = re.compile(r"^https://qbo\.test/v3/company/0/companyinfo/0\?.*$")
    with aioresponses() as mocked:
        mocked.get(url, status=401, payload=EXPIRED)
        mocked.get(url, status=502, body="<html>bad gateway</html>", content_type="text/html")
        await client.check_health()
        with pytest.raises(ProviderError):
            await client.check_health()
