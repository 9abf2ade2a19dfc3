"""OAuth refresh against the sandbox's real token endpoints (QuickBooks form, Square JSON)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import aiohttp
import pytest

from providers.oauth import TokenRefresher
from service.config import Settings
from service.database.locks import PgCredentialLocks
from service.errors import AuthenticationError
from service.metrics import Metrics
from service.vault import Vault
from service.vault.keys import key_provider_from_settings


@pytest.fixture
def oauth_settings(sandbox_server: Any, settings_factory: Any) -> Settings:
    url = sandbox_server.url
    return settings_factory(
        quickbooks_oauth_url=f"{url}/quickbooks/oauth2/v1/tokens/bearer",
        quickbooks_client_id=sandbox_server.quickbooks_client_id,
        quickbooks_client_secret=sandbox_server.quickbooks_client_secret,
        square_oauth_url=f"{url}/square/oauth2/token",
        square_client_id=sandbox_server.square_client_id,
        square_client_secret=sandbox_server.square_client_secret,
    )


@pytest.fixture
async def refresher(
    oauth_settings: Settings, pool: Any
) -> AsyncIterator[tuple[TokenRefresher, Vault, Metrics]]:
    vault = Vault(pool, key_provider_from_settings(oauth_settings))
    metrics = Metrics()
    async with aiohttp.ClientSession() as session:
        yield (
            TokenRefresher(
                oauth_settings, vault, locks=PgCredentialLocks(pool), session=session, metrics=metrics
            ),
            vault,
            metrics,
        )


async def register(
    sandbox_server: Any, vault: Vault, provider: str, venue_id: str, ids: dict[str, str]
) -> dict:
    client_id = getattr(sandbox_server, f"{provider}_client_id")
    secret = getattr(sandbox_server, f"{provider}_client_secret")
    tokens = {
        "access_token": f"EAAAold-{venue_id}",
        "refresh_token": f"rt-{venue_id}",
        "expires_at": (datetime.now(UTC) - timedelta(minutes=1)).isoformat().replace("+00:00", "Z"),
        **ids,
    }
    sandbox_server.control(
        "POST",
        "/_sandbox/accounts",
        {
            "provider": provider,
            "account": venue_id,
            "oauth": {**tokens, "client_id": client_id, "client_secret": secret},
        },
    )
    await vault.set(venue_id, provider, "oauth", json.dumps(tokens))
    return tokens


@pytest.mark.parametrize(
    ("provider", "ids"),
    [("quickbooks", {"realm_id": "4620816365"}), ("square", {"merchant_id": "MLSANDBOX1"})],
)
async def test_refresh_against_the_sandbox(
    refresher: Any, sandbox_server: Any, venue_id: str, provider: str, ids: dict[str, str]
) -> None:
    """The sandbox accepts our refresh request and the new token set is stored, not expiring soon."""
    token_refresher, vault, _ = refresher
    old = await register(sandbox_server, vault, provider, venue_id, ids)
    credential = await token_refresher.refresh(venue_id, provider)
    stored = (await vault.get(venue_id, provider, "oauth")).oauth()
    assert stored == credential.oauth()
    assert stored["access_token"] != old["access_token"]
    assert credential.info.expires_at is not None
    assert credential.info.expires_at > datetime.now(UTC) + timedelta(minutes=10)


async def test_reused_refresh_token_is_refused_and_marks_invalid(
    refresher: Any, sandbox_server: Any, venue_id: str
) -> None:
    """QuickBooks revokes a rotated refresh token: a refresh with the old one is refused -> invalid."""
    token_refresher, vault, metrics = refresher
    old = await register(sandbox_server, vault, "quickbooks", venue_id, {"realm_id": "4620816366"})
    await token_refresher.refresh(venue_id, "quickbooks")
    await vault.set(venue_id, "quickbooks", "oauth", json.dumps(old))  # someone restores the stale set
    with pytest.raises(AuthenticationError) as caught:
        await token_refresher.refresh(venue_id, "quickbooks")
    assert "invalid_grant" in str(caught.value)
    assert "invalid" == (await vault.show(venue_id, "quickbooks"))[0].status
    assert 1.0 == metrics.registry.get_sample_value(
        "integration_credential_refreshes_total", {"provider": "quickbooks", "outcome": "failed"}
    )
