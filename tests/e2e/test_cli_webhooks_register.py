"""`integration-service webhooks register` as a real process against the sandbox, with the
registered webhook then delivered by the sandbox through our ingress."""

from __future__ import annotations

import asyncio
import base64
import sys
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from service.ingress import VaultDirectory
from service.vault import Vault, key_provider_from_settings
from tests.integration.ingress_support import FakePublisher, Running, serve_ingress

COMMAND = str(Path(sys.executable).parent / "integration-service")


@pytest.fixture
async def vault(pool: Any, settings: Any) -> Vault:
    return Vault(pool, key_provider_from_settings(settings))


@pytest.fixture
async def ingress(pool: Any, vault: Vault) -> AsyncIterator[tuple[Running, FakePublisher]]:
    """An ingress on the real vault; its publisher only records (the broker path is tested elsewhere)."""
    publisher = FakePublisher()
    async with serve_ingress(
        directory=VaultDirectory(pool, vault, ttl_s=0.0, negative_ttl_s=0.0), publisher=publisher
    ) as running:
        yield running, publisher


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the command without blocking this loop (the ingress answers on it)."""
    process = await asyncio.create_subprocess_exec(
        COMMAND, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def sandbox_call(
    sandbox: Any, method: str, path: str, *, json: Any = None, headers: dict[str, str] | None = None
) -> Any:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=20)) as session:
        async with session.request(method, sandbox.url + path, json=json, headers=headers) as response:
            return await response.json(content_type=None)


def register_args(venue: str, provider: str, *extra: str) -> list[str]:
    return ["webhooks", "register", "--venue", venue, "--provider", provider, *extra]


async def test_stripe_register_is_idempotent_and_delivers(
    ingress: tuple[Running, FakePublisher],
    sandbox_server: Any,
    service_env: dict[str, str],
    vault: Vault,
    venue_id: str,
) -> None:
    """Stripe: created, then unchanged, then replaced once our secret is lost; the sandbox's
    webhooks signed with the endpoint's secret pass our ingress."""
    running, publisher = ingress
    api_key = f"sk_live_{uuid.uuid4().hex}"
    await sandbox_call(
        sandbox_server,
        "POST",
        "/_sandbox/accounts",
        json={"provider": "stripe", "account": venue_id, "api_key": api_key},
    )
    await vault.set(venue_id, "stripe", "api_key", api_key)
    env = service_env | {"STRIPE_API_BASE": f"{sandbox_server.url}/stripe", "INGRESS_PUBLIC_URL": running.url}

    outcomes = []
    for _ in range(2):
        code, out, err = await cli(env, *register_args(venue_id, "stripe"))
        assert 0 == code, err
        outcomes.append(out.split()[3])
    first_secret = (await vault.get(venue_id, "stripe", "webhook_secret")).secret
    await vault.delete(venue_id, "stripe", "webhook_secret")
    code, out, err = await cli(env, *register_args(venue_id, "stripe"))
    assert 0 == code, err
    outcomes.append(out.split()[3])
    second_secret = (await vault.get(venue_id, "stripe", "webhook_secret")).secret

    assert ["created", "unchanged", "replaced"] == outcomes
    assert first_secret != second_secret and second_secret.startswith("whsec_")
    assert first_secret not in out + err and second_secret not in out + err
    auth = {"Authorization": f"Bearer {api_key}"}
    endpoints = await sandbox_call(sandbox_server, "GET", "/stripe/v1/webhook_endpoints", headers=auth)
    assert [f"{running.url}/webhooks/stripe/{venue_id}"] == [e["url"] for e in endpoints["data"]]

    event = {"id": f"evt_{uuid.uuid4().hex}", "object": "event", "type": "customer.created", "data": {}}
    answer = await sandbox_call(
        sandbox_server,
        "POST",
        "/_sandbox/webhooks/stripe",
        json={"account": venue_id, "event": event, "url": f"{running.url}/webhooks/stripe/{venue_id}"},
    )
    assert 200 == answer["status"], answer
    assert 1 == len(publisher.published)


async def test_mailchimp_register_is_idempotent_and_delivers(
    ingress: tuple[Running, FakePublisher],
    sandbox_server: Any,
    service_env: dict[str, str],
    vault: Vault,
    venue_id: str,
) -> None:
    """Mailchimp: the token is stored, the list webhook created once, and the sandbox's posts to it pass."""
    running, publisher = ingress
    api_key = f"{uuid.uuid4().hex}-us6"
    await sandbox_call(
        sandbox_server,
        "POST",
        "/_sandbox/accounts",
        json={"provider": "mailchimp", "account": venue_id, "api_key": api_key},
    )
    await vault.set(venue_id, "mailchimp", "api_key", api_key)
    auth = {"Authorization": "Basic " + base64.b64encode(f"any:{api_key}".encode()).decode()}
    audience = await sandbox_call(
        sandbox_server,
        "POST",
        "/mailchimp/3.0/lists",
        headers=auth,
        json={
            "name": "Register test",
            "permission_reminder": "you signed up",
            "email_type_option": False,
            "contact": {
                "company": "Venue",
                "address1": "1 Road",
                "city": "Town",
                "state": "",
                "zip": "00000",
                "country": "GB",
            },
            "campaign_defaults": {
                "from_name": "Venue",
                "from_email": "v@example.com",
                "subject": "",
                "language": "en",
            },
        },
    )
    list_id = audience["id"]
    env = service_env | {
        "MAILCHIMP_API_BASE": f"{sandbox_server.url}/mailchimp",
        "INGRESS_PUBLIC_URL": running.url,
    }

    outcomes = []
    for _ in range(2):
        code, out, err = await cli(env, *register_args(venue_id, "mailchimp", "--list-id", list_id))
        assert 0 == code, err
        outcomes.append(out.split()[4])
    token = (await vault.get(venue_id, "mailchimp", "webhook_secret")).secret
    hooks = await sandbox_call(
        sandbox_server, "GET", f"/mailchimp/3.0/lists/{list_id}/webhooks", headers=auth
    )
    url = f"{running.url}/webhooks/mailchimp/{venue_id}/{token}"

    assert ["created", "unchanged"] == outcomes
    assert [url] == [h["url"] for h in hooks["webhooks"]]
    assert token not in out
    answer = await sandbox_call(
        sandbox_server,
        "POST",
        "/_sandbox/webhooks/mailchimp",
        json={
            "account": venue_id,
            "event": {"type": "subscribe", "data": {"email": "a@example.com"}},
            "url": url,
        },
    )
    assert 200 == answer["status"], answer
    assert ["mailchimp"] == [m.provider for m, _ in publisher.published]


async def test_mailchimp_without_list_id_exits_2(service_env: dict[str, str], venue_id: str) -> None:
    """Mailchimp needs --list-id: exit 2 with one line."""
    code, out, err = await cli(service_env, *register_args(venue_id, "mailchimp"))
    assert (2, "", "error: --list-id is required for mailchimp\n") == (code, out, err)


async def test_unknown_venue_exits_2(service_env: dict[str, str], venue_id: str) -> None:
    """A venue with no Stripe key is bad input: exit 2, one line, no traceback."""
    code, _, err = await cli(service_env, *register_args(venue_id, "stripe"))
    assert (2, f"error: unknown venue '{venue_id}' for stripe (no api_key stored)\n") == (code, err)


@pytest.mark.parametrize(("provider", "event"), [("square", "customer.created"), ("quickbooks", "Invoice")])
async def test_app_wide_providers_print_console_steps(
    service_env: dict[str, str], provider: str, event: str
) -> None:
    """Square and QuickBooks print the URL and event types and exit 0."""
    env = service_env | {"INGRESS_PUBLIC_URL": "https://hooks.example.com/prefix"}
    code, out, _ = await cli(env, *register_args("venue-any", provider))
    assert 0 == code
    assert f"  URL:    https://hooks.example.com/prefix/webhooks/{provider}" in out.splitlines()
    assert event in out
