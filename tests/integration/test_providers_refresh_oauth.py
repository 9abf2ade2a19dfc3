"""OAuth refresh on real PostgreSQL: lock, double-check, store before use, refused -> invalid."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest
from aioresponses import aioresponses

from providers.auth import AuthFactory
from providers.oauth import TokenRefresher, refresh_credential
from service.config import Settings
from service.database.locks import PgCredentialLocks
from service.errors import AuthenticationError, ProviderError
from service.metrics import Metrics
from service.vault import Vault
from service.vault.keys import key_provider_from_settings

QB_TOKEN_URL = "https://oauth.example.test/oauth2/v1/tokens/bearer"
SQ_TOKEN_URL = "https://square.example.test/oauth2/token"


def iso(when: datetime) -> str:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z")


@pytest.fixture
def qb_settings(settings_factory: Any) -> Settings:
    return settings_factory(
        quickbooks_oauth_url=QB_TOKEN_URL,
        quickbooks_client_id="qb-id",
        quickbooks_client_secret="qb-secret",
        square_oauth_url=SQ_TOKEN_URL,
        square_client_id="sq-id",
        square_client_secret="sq-secret",
    )


@pytest.fixture
def vault(pool: Any, qb_settings: Settings) -> Vault:
    return Vault(pool, key_provider_from_settings(qb_settings))


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def metrics() -> Metrics:
    return Metrics()


@pytest.fixture
def refresher(
    qb_settings: Settings, vault: Vault, pool: Any, session: aiohttp.ClientSession, metrics: Metrics
) -> TokenRefresher:
    return TokenRefresher(qb_settings, vault, locks=PgCredentialLocks(pool), session=session, metrics=metrics)


async def store_qb(vault: Vault, venue_id: str, *, expires_in_s: float) -> None:
    secret = {
        "access_token": "old-access",
        "refresh_token": "old-refresh",
        "realm_id": "realm-1",
        "expires_at": iso(datetime.now(UTC) + timedelta(seconds=expires_in_s)),
    }
    await vault.set(venue_id, "quickbooks", "oauth", json.dumps(secret))


def refreshes(metrics: Metrics, outcome: str, provider: str = "quickbooks") -> float:
    value = metrics.registry.get_sample_value(
        "integration_credential_refreshes_total", {"provider": provider, "outcome": outcome}
    )
    return value or 0.0


async def test_expired_token_is_refreshed_and_stored_before_use(
    vault: Vault, refresher: TokenRefresher, venue_id: str, metrics: Metrics
) -> None:
    """An expiring token is refreshed once, stored (rotated refresh token) and then used."""
    await store_qb(vault, venue_id, expires_in_s=60)
    auth = await AuthFactory(vault, refresher=refresher).for_venue(venue_id, "quickbooks")
    with aioresponses() as mocked:
        mocked.post(
            QB_TOKEN_URL,
            payload={
                "access_token": "new-access",
                "refresh_token": "new-refresh",
                "expires_in": 3600,
                "token_type": "bearer",
            },
        )
        headers = await auth.headers()
        sent = next(iter(mocked.requests.values()))[0]
    stored = (await vault.get(venue_id, "quickbooks", "oauth")).oauth()
    assert {"Authorization": "Bearer new-access"} == headers
    assert ("new-access", "new-refresh", "realm-1") == (
        stored["access_token"],
        stored["refresh_token"],
        stored["realm_id"],
    )
    assert {"grant_type": "refresh_token", "refresh_token": "old-refresh"} == sent.kwargs["data"]
    assert sent.kwargs["headers"]["Authorization"].startswith("Basic ")
    assert 1.0 == refreshes(metrics, "succeeded")


async def test_fresh_token_is_not_refreshed(vault: Vault, refresher: TokenRefresher, venue_id: str) -> None:
    """A token valid for longer than five minutes is used as is: no token call."""
    await store_qb(vault, venue_id, expires_in_s=3600)
    auth = await AuthFactory(vault, refresher=refresher).for_venue(venue_id, "quickbooks")
    with aioresponses() as mocked:
        headers = await auth.headers()
        assert {} == dict(mocked.requests)
    assert {"Authorization": "Bearer old-access"} == headers


async def test_refused_refresh_marks_invalid(
    vault: Vault, refresher: TokenRefresher, venue_id: str, metrics: Metrics
) -> None:
    """A refused refresh raises AuthenticationError and marks the credential invalid."""
    await store_qb(vault, venue_id, expires_in_s=-10)
    auth = await AuthFactory(vault, refresher=refresher).for_venue(venue_id, "quickbooks")
    with aioresponses() as mocked:
        mocked.post(QB_TOKEN_URL, status=400, payload={"error": "invalid_grant"})
        with pytest.raises(AuthenticationError) as caught:
            await auth.headers()
    info = (await vault.show(venue_id, "quickbooks"))[0]
    assert "invalid" == info.status
    assert "invalid_grant" in str(caught.value)
    assert 1.0 == refreshes(metrics, "failed")


async def test_provider_outage_keeps_the_old_tokens(
    vault: Vault, refresher: TokenRefresher, venue_id: str
) -> None:
    """A 503 from the token endpoint is a retryable ProviderError and changes nothing stored."""
    await store_qb(vault, venue_id, expires_in_s=-10)
    auth = await AuthFactory(vault, refresher=refresher).for_venue(venue_id, "quickbooks")
    with aioresponses() as mocked:
        mocked.post(QB_TOKEN_URL, status=503, body="<html>down</html>")
        with pytest.raises(ProviderError) as caught:
            await auth.headers()
    stored = (await vault.get(venue_id, "quickbooks", "oauth")).oauth()
    assert caught.value.retryable
    assert ("old-access", "old-refresh") == (stored["access_token"], stored["refresh_token"])
    assert "invalid" != (await vault.show(venue_id, "quickbooks"))[0].status


async def test_refresh_without_new_refresh_token_keeps_the_old_one(
    vault: Vault, refresher: TokenRefresher, venue_id: str
) -> None:
    """A reply without a refresh token keeps the stored one (never lost)."""
    await store_qb(vault, venue_id, expires_in_s=-10)
    with aioresponses() as mocked:
        mocked.post(QB_TOKEN_URL, payload={"access_token": "new-access", "expires_in": 3600})
        await refresher.refresh(venue_id, "quickbooks")
    stored = (await vault.get(venue_id, "quickbooks", "oauth")).oauth()
    assert ("new-access", "old-refresh") == (stored["access_token"], stored["refresh_token"])


async def test_square_refresh_posts_json_with_client_credentials(
    vault: Vault, refresher: TokenRefresher, venue_id: str
) -> None:
    """Square's refresh is JSON with client_id/secret; its expires_at is stored."""
    secret = {
        "access_token": "EAAAold",
        "refresh_token": "sq-refresh",
        "merchant_id": "M1",
        "expires_at": iso(datetime.now(UTC) - timedelta(minutes=1)),
    }
    await vault.set(venue_id, "square", "oauth", json.dumps(secret))
    with aioresponses() as mocked:
        mocked.post(
            SQ_TOKEN_URL,
            payload={
                "access_token": "EAAAnew",
                "refresh_token": "sq-refresh",
                "expires_at": "2099-01-01T00:00:00Z",
                "merchant_id": "M1",
            },
        )
        credential = await refresher.refresh(venue_id, "square")
        sent = next(iter(mocked.requests.values()))[0]
    assert {
        "client_id": "sq-id",
        "client_secret": "sq-secret",
        "grant_type": "refresh_token",
        "refresh_token": "sq-refresh",
    } == sent.kwargs["json"]
    assert "EAAAnew" == credential.oauth()["access_token"]
    assert datetime(2099, 1, 1, tzinfo=UTC) == credential.info.expires_at


async def test_rotate_forces_a_refresh(qb_settings: Settings, vault: Vault, venue_id: str, pool: Any) -> None:
    """refresh_credential(force=True) refreshes a token that is not yet due (credentials rotate)."""
    await store_qb(vault, venue_id, expires_in_s=3600)
    with aioresponses() as mocked:
        mocked.post(
            QB_TOKEN_URL, payload={"access_token": "forced", "refresh_token": "r2", "expires_in": 3600}
        )
        info = await refresh_credential(
            qb_settings, vault, venue_id, "quickbooks", force=True, locks=PgCredentialLocks(pool)
        )
    assert "valid" == info.status
    assert "forced" == (await vault.get(venue_id, "quickbooks", "oauth")).oauth()["access_token"]


async def test_401_with_a_token_already_replaced_only_reloads(
    vault: Vault, refresher: TokenRefresher, venue_id: str, metrics: Metrics
) -> None:
    """A 401 on a token another holder already replaced reloads the stored one: no token call."""
    await store_qb(vault, venue_id, expires_in_s=3600)
    stale_auth = await AuthFactory(vault, refresher=refresher).for_venue(venue_id, "quickbooks")
    with aioresponses() as mocked:
        mocked.post(
            QB_TOKEN_URL, payload={"access_token": "newer", "refresh_token": "r2", "expires_in": 3600}
        )
        await refresher.refresh(venue_id, "quickbooks", force=True)
        assert await stale_auth.on_unauthorized()
        calls = sum(len(v) for v in mocked.requests.values())
    assert 1 == calls
    assert {"Authorization": "Bearer newer"} == await stale_auth.headers()
    assert 1.0 == refreshes(metrics, "skipped")


async def test_ten_concurrent_users_cause_one_refresh(
    vault: Vault, refresher: TokenRefresher, venue_id: str
) -> None:
    """Ten concurrent users of one expired credential in one process: exactly one token call."""
    await store_qb(vault, venue_id, expires_in_s=-10)
    factory = AuthFactory(vault, refresher=refresher)
    auths = [await factory.for_venue(venue_id, "quickbooks") for _ in range(10)]
    with aioresponses() as mocked:
        mocked.post(
            QB_TOKEN_URL,
            payload={"access_token": "once", "refresh_token": "r2", "expires_in": 3600},
            repeat=True,
        )
        headers = await asyncio.gather(*(a.headers() for a in auths))
        calls = sum(len(v) for v in mocked.requests.values())
    assert 1 == calls
    assert [{"Authorization": "Bearer once"}] * 10 == headers


async def test_call_outcomes_mark_the_credential(
    vault: Vault, venue_id: str, session: aiohttp.ClientSession, qb_settings: Settings
) -> None:
    """A success marks a key valid; a 401 on a key (nothing to refresh) marks it invalid."""
    from providers.fake import RecordingGate, fake_limits_for
    from providers.http import ProviderHttp, spec_for

    http = ProviderHttp(session, limiter=RecordingGate(), settings=qb_settings, limits_for=fake_limits_for)
    await vault.set(venue_id, "square", "api_key", "EAAAsquarekey")
    factory = AuthFactory(vault, refresher=None)
    url = "https://square.example.test/v2/locations"
    with aioresponses() as mocked:
        mocked.get(url, payload={"locations": []})
        mocked.get(url, status=401, payload={"errors": [{"code": "UNAUTHORIZED"}]})
        await http.request(
            spec_for("square"), await factory.for_venue(venue_id, "square"), "GET", url, operation="op"
        )
        after_success = (await vault.show(venue_id, "square"))[0].status
        with pytest.raises(AuthenticationError):
            await http.request(
                spec_for("square"), await factory.for_venue(venue_id, "square"), "GET", url, operation="op"
            )
    assert ("valid", "invalid") == (after_success, (await vault.show(venue_id, "square"))[0].status)
    with pytest.raises(AuthenticationError):
        await factory.for_venue(venue_id, "square")


async def test_token_endpoint_outage_before_expiry_keeps_using_the_token(
    vault: Vault, refresher: TokenRefresher, venue_id: str
) -> None:
    """Within the five-minute window, a token endpoint outage defers the refresh: the token is used."""
    await store_qb(vault, venue_id, expires_in_s=120)
    auth = await AuthFactory(vault, refresher=refresher).for_venue(venue_id, "quickbooks")
    with aioresponses() as mocked:
        mocked.post(QB_TOKEN_URL, status=503, body="")
        headers = await auth.headers()
    assert {"Authorization": "Bearer old-access"} == headers
