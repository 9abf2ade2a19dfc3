"""The provider registry: one client per provider name, a clear error for an unknown one."""

from __future__ import annotations

from collections.abc import AsyncIterator

import aiohttp
import pytest

from providers import REGISTRY, build_clients, client_class
from providers.fake import RecordingGate, fake_limits_for
from providers.http import ProviderHttp
from service.config import PROVIDERS, Settings
from service.errors import UnknownEntityError


@pytest.fixture
async def http() -> AsyncIterator[ProviderHttp]:
    async with aiohttp.ClientSession() as session:
        yield ProviderHttp(session, limiter=RecordingGate(), settings=Settings(), limits_for=fake_limits_for)


def test_every_contract_provider_is_registered() -> None:
    """The registry names exactly the four providers of the contract."""
    assert set(PROVIDERS) == set(REGISTRY)


def test_unknown_provider_is_refused() -> None:
    """An unknown name raises UnknownEntityError naming the known ones."""
    with pytest.raises(UnknownEntityError) as caught:
        client_class("paypal")
    assert "unknown provider 'paypal'" in str(caught.value)


async def test_build_clients_builds_one_per_provider(http: ProviderHttp) -> None:
    """build_clients returns a client per provider whose name matches its key."""
    clients = build_clients(settings=http.settings, http=http)
    assert {name: name for name in PROVIDERS} == {name: client.name for name, client in clients.items()}
