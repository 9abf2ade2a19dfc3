"""`integration-service webhooks register`: point a venue's provider webhooks at the ingress.

- Stripe: a webhook endpoint at ``INGRESS_PUBLIC_URL/webhooks/stripe/{venue}``; the signing
  secret Stripe returns (only at creation) is stored as the venue's ``webhook_secret``.
  Idempotent: an endpoint with our URL whose secret we hold is left alone; one whose secret
  we do not hold is deleted and created again.
- Mailchimp: a URL-safe token (kept if the venue has one) stored as the venue's
  ``webhook_secret`` before the list webhook at ``…/webhooks/mailchimp/{venue}/{token}`` is
  created (Mailchimp checks the URL with a GET at creation). Idempotent.
- Square and QuickBooks webhooks are app-wide: print the URL and event types to set in the
  provider's developer console, and exit 0.
"""

from __future__ import annotations

import asyncio
import base64
import secrets
from typing import TYPE_CHECKING, Any

import click

from service.cli import CommandError, load, run_async
from service.config import PROVIDERS, Settings
from service.errors import (
    AuthenticationError,
    NetworkError,
    ProviderError,
    UnknownEntityError,
)

if TYPE_CHECKING:
    import aiohttp

# Imported inside the commands (stripe, aiohttp): every CLI command loads this module.
HTTP_TIMEOUT_S = 30.0
MAILCHIMP_EVENTS = {"subscribe": True, "unsubscribe": True, "profile": True, "upemail": True,
                    "cleaned": True, "campaign": False}
# Not "api": our own pushes would come straight back as webhooks.
MAILCHIMP_SOURCES = {"user": True, "admin": True, "api": False}
CONSOLE = {
    "square": ("Square Developer Console → your application → Webhooks → Subscriptions",
               "SQUARE_WEBHOOK_SIGNATURE_KEY", "the subscription's signature key"),
    "quickbooks": ("Intuit Developer portal → your app → Webhooks",
                   "QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN", "the app's verifier token"),
}


@click.group()
def webhooks() -> None:
    """Register provider webhooks that point at INGRESS_PUBLIC_URL."""


@webhooks.command("register")
@click.option("--venue", required=True, help="The venue id.")
@click.option("--provider", required=True, type=click.Choice(PROVIDERS))
@click.option("--list-id", help="The Mailchimp audience (list) id; required for mailchimp.")
def register(venue: str, provider: str, list_id: str | None) -> None:
    """Create the venue's webhook at the provider and store its secret; safe to repeat.

    Square and QuickBooks webhooks are app-wide: this prints what to set in their developer
    consoles instead.
    """
    from providers.webhooks import route_path

    settings = load()
    if provider in CONSOLE:
        _print_console_steps(settings, provider)
        return
    if provider == "mailchimp":
        if not list_id:
            raise CommandError("--list-id is required for mailchimp", 2)
        outcome = run_async(register_mailchimp(settings, venue, list_id))
        shown = settings.ingress_public_url + route_path("mailchimp", venue, "<token>")
        click.echo(f"mailchimp list {list_id} webhook {outcome} for {venue}: {shown}")
        return
    outcome = run_async(register_stripe(settings, venue))
    url = settings.ingress_public_url + route_path("stripe", venue)
    click.echo(f"stripe webhook endpoint {outcome} for {venue}: {url}")


def _print_console_steps(settings: Settings, provider: str) -> None:
    from providers.webhooks import EVENT_TYPES, route_path

    where, variable, what = CONSOLE[provider]
    url = settings.ingress_public_url + route_path(provider)
    click.echo(f"{provider} webhooks are app-wide: set them once in the {where}.")
    click.echo(f"  URL:    {url}")
    click.echo(f"  Events: {', '.join(EVENT_TYPES[provider])}")
    click.echo(f"  Then set {variable} to {what} and restart the ingress.")


# Stripe ------------------------------------------------------------------------------


async def register_stripe(settings: Settings, venue: str) -> str:
    """Ensure the venue's Stripe endpoint exists with a secret we hold: created/replaced/unchanged."""
    from providers.webhooks import route_path
    from service.lifecycle import open_vault

    async with open_vault(settings) as vault:
        try:
            api_key = (await vault.get(venue, "stripe", "api_key")).secret
        except UnknownEntityError:
            raise UnknownEntityError(f"unknown venue {venue!r} for stripe (no api_key stored)") from None
        held = await _held_secret(vault, venue, "stripe")
        url = settings.ingress_public_url + route_path("stripe", venue)
        # The SDK's client is blocking: keep it off the event loop.
        outcome, secret = await asyncio.to_thread(
            _ensure_stripe_endpoint, settings.stripe_api_base, api_key, url, venue,
            holds_secret=held is not None,
        )
        if secret is not None:
            await vault.set(venue, "stripe", "webhook_secret", secret)
    return outcome


async def _held_secret(vault: Any, venue: str, provider: str) -> str | None:
    try:
        secret: str = (await vault.get(venue, provider, "webhook_secret")).secret
    except UnknownEntityError:
        return None
    return secret


def _ensure_stripe_endpoint(
    api_base: str, api_key: str, url: str, venue: str, *, holds_secret: bool
) -> tuple[str, str | None]:
    """(outcome, new signing secret or None), talking to Stripe through its SDK."""
    import stripe

    from providers.webhooks import EVENT_TYPES

    client = stripe.StripeClient(api_key, base_addresses={"api": api_base}, max_network_retries=0)
    try:
        endpoints = client.v1.webhook_endpoints.list({"limit": 100}).auto_paging_iter()
        ours = [endpoint for endpoint in endpoints if endpoint.url == url]
        if len(ours) == 1 and holds_secret:
            return "unchanged", None
        for endpoint in ours:  # secrets Stripe shows only once: start again with one we keep
            client.v1.webhook_endpoints.delete(endpoint.id)
        params: Any = {
            "url": url, "enabled_events": list(EVENT_TYPES["stripe"]),
            "description": f"integration-service webhooks for {venue}", "metadata": {"venue_id": venue},
        }
        created = client.v1.webhook_endpoints.create(params)
    except stripe.StripeError as exc:
        raise _stripe_error(exc) from exc
    if not created.secret:
        raise ProviderError("stripe created the webhook endpoint but returned no secret", status=200)
    return ("replaced" if ours else "created"), created.secret


def _stripe_error(exc: Any) -> Exception:
    import stripe

    message = f"stripe: {exc.user_message or exc.__class__.__name__}".splitlines()[0]
    if isinstance(exc, stripe.AuthenticationError | stripe.PermissionError):
        return AuthenticationError(message)
    if isinstance(exc, stripe.APIConnectionError):
        return NetworkError(message)
    return ProviderError(message, status=getattr(exc, "http_status", None) or 0)


# Mailchimp ---------------------------------------------------------------------------


async def register_mailchimp(settings: Settings, venue: str, list_id: str) -> str:
    """Ensure the list webhook carries the venue's token: created/replaced/unchanged."""
    import aiohttp

    from providers.webhooks import route_path
    from service.lifecycle import open_vault

    async with open_vault(settings) as vault:
        try:
            credential = await vault.find_auth(venue, "mailchimp")
        except UnknownEntityError:
            raise UnknownEntityError(f"unknown venue {venue!r} for mailchimp (no credential)") from None
        base, headers = _mailchimp_target(settings, credential)
        held = await _held_secret(vault, venue, "mailchimp")
        token = held or secrets.token_urlsafe(32)
        url = settings.ingress_public_url + route_path("mailchimp", venue, token)
        prefix = settings.ingress_public_url + route_path("mailchimp", venue, "")
        hooks_url = f"{base}/3.0/lists/{list_id}/webhooks"
        timeout = aiohttp.ClientTimeout(total=HTTP_TIMEOUT_S)
        async with aiohttp.ClientSession(timeout=timeout, headers=headers) as http:
            existing = (await _mailchimp_call(http, "GET", hooks_url, list_id))["webhooks"]
            ours = [h for h in existing if h.get("url") == url]
            stale = [h for h in existing if str(h.get("url", "")).startswith(prefix) and h.get("url") != url]
            if ours and not stale:
                return "unchanged"
            if held is None:  # stored first: Mailchimp GETs the URL when the webhook is created
                await vault.set(venue, "mailchimp", "webhook_secret", token)
            for hook in stale:
                await _mailchimp_call(http, "DELETE", f"{hooks_url}/{hook['id']}", list_id)
            if not ours:
                body = {"url": url, "events": MAILCHIMP_EVENTS, "sources": MAILCHIMP_SOURCES}
                await _mailchimp_call(http, "POST", hooks_url, list_id, json=body)
    return "replaced" if stale else "created"


def _mailchimp_target(settings: Settings, credential: Any) -> tuple[str, dict[str, str]]:
    """(API base for the account's data centre, auth headers) for an api_key or oauth credential."""
    if credential.info.kind == "oauth":
        tokens = credential.oauth()
        dc = credential.info.server_prefix or tokens.get("server_prefix")
        headers = {"Authorization": f"Bearer {tokens['access_token']}"}
    else:
        dc = credential.secret.rpartition("-")[2]
        basic = base64.b64encode(f"integration-service:{credential.secret}".encode()).decode()
        headers = {"Authorization": f"Basic {basic}"}
    if not dc:
        raise UnknownEntityError("the mailchimp credential names no data centre (server_prefix)")
    return settings.mailchimp_base_for(dc), headers


async def _mailchimp_call(
    http: aiohttp.ClientSession, method: str, url: str, list_id: str, *, json: Any = None
) -> Any:
    import aiohttp

    try:
        async with http.request(method, url, json=json) as response:
            text = await response.text()
            status = response.status
            data = await response.json(content_type=None) if text else None
    except (aiohttp.ClientError, TimeoutError) as exc:
        raise NetworkError(f"mailchimp: {exc.__class__.__name__}") from exc
    except ValueError:
        data = None
    if status < 300:
        return data
    detail = data.get("detail") if isinstance(data, dict) else None
    if status == 404:
        raise UnknownEntityError(f"mailchimp list {list_id!r} not found")
    if status in (401, 403):
        raise AuthenticationError(f"mailchimp refused the credential ({status}): {detail or 'unauthorized'}")
    raise ProviderError(f"mailchimp {method} webhooks failed ({status}): {detail or 'error'}", status=status)


COMMANDS = [webhooks]
