"""Wiring: build the service's components in order and close them in reverse.

The only module that knows every other one; nothing imports it but the CLI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import structlog

from service.config import Settings
from service.database import open_pool
from service.errors import NetworkError
from service.vault import CredentialInfo, Vault, key_provider_from_settings

log = structlog.get_logger(__name__)


def describe_amqp(url: str) -> str:
    """host:port/vhost of an AMQP URL, without the password."""
    parts = urlsplit(url)
    return f"{parts.hostname or 'localhost'}:{parts.port or 5672}{parts.path or '/'}"


@asynccontextmanager
async def amqp_errors(settings: Settings) -> AsyncIterator[None]:
    """Translate broker connection failures into one-line NetworkErrors."""
    where = describe_amqp(settings.amqp_url.get_secret_value())
    try:
        yield
    except (OSError, TimeoutError, ConnectionError) as exc:
        raise NetworkError(f"cannot reach RabbitMQ at {where}: {exc.__class__.__name__}") from exc
    except Exception as exc:
        import aiormq.exceptions

        if isinstance(exc, aiormq.exceptions.AMQPError):
            raise NetworkError(f"RabbitMQ at {where} failed: {exc.__class__.__name__}: {exc}") from exc
        raise


@asynccontextmanager
async def open_vault(settings: Settings) -> AsyncIterator[Vault]:
    """A vault on a small pool, for CLI commands."""
    keys = key_provider_from_settings(settings)
    async with open_pool(settings.database_url.get_secret_value(), min_size=1, max_size=2) as pool:
        yield Vault(pool, keys)


async def learn_square_merchant(
    settings: Settings, vault: Vault, info: CredentialInfo, secret: str
) -> CredentialInfo:
    """Ask Square for the merchant id of a new api_key; keep going if Square is away."""
    try:
        from providers.square import fetch_merchant_id
    except ImportError:
        return info
    try:
        merchant_id = await fetch_merchant_id(settings, secret)
    except Exception as exc:  # learned on first use instead (CONTRACT section 1)
        log.warning("square_merchant_lookup_failed", venue_id=info.venue_id, error=str(exc))
        return info
    await vault.set_merchant_id(info, merchant_id)
    return (await vault.show(info.venue_id, "square"))[0] if merchant_id else info


async def refresh_now(settings: Settings, vault: Vault, info: CredentialInfo) -> CredentialInfo:
    """Refresh an OAuth credential now (credentials rotate)."""
    try:
        from providers.oauth import refresh_credential
    except ImportError:
        log.warning("oauth_refresh_unavailable", provider=info.provider)
        return info
    return await refresh_credential(settings, vault, info.venue_id, info.provider, force=True)
