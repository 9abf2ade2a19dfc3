"""The webhook ingress (CONTRACT section 6): verify the raw bytes, publish, confirm, answer.

Every POST goes through the same steps, in the contract's order:

1. unknown venue → 404 (one cached, indexed query; no secret is opened);
2. body over 1 MiB → 413, enforced while reading;
3. missing, bad or stale signature or token → 401 (400 when it cannot be checked at all);
4. publish the verified webhook with confirms → 200 once confirmed, 503 when the broker is
   away or no confirm arrives within 2 s.

Nothing is published for an answer other than 200. Error bodies are ``{"error": "..."}``.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiohttp import web

from providers import webhooks as hooks
from service.config import Settings
from service.errors import NetworkError
from service.httpcommon import ReadinessCheck, add_health_routes
from service.ingress.body import BodyTimeout, BodyTooLarge, read_body
from service.ingress.directory import WebhookDirectory
from service.messages import ProviderName, VerifiedWebhook, utcnow
from service.metrics import Metrics
from service.ports import Publisher

log = structlog.get_logger(__name__)

Verify = Callable[[bytes], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class IngressConfig:
    """The ingress's settings: public URL, app-wide keys and limits."""

    public_url: str
    square_signature_key: str | None = None
    quickbooks_verifier_token: str | None = None
    max_body_bytes: int = hooks.MAX_BODY_BYTES
    confirm_timeout_s: float = 2.0
    body_timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings) -> IngressConfig:
        square = settings.square_webhook_signature_key
        quickbooks = settings.quickbooks_webhook_verifier_token
        return cls(
            public_url=settings.ingress_public_url,
            square_signature_key=square.get_secret_value() if square else None,
            quickbooks_verifier_token=quickbooks.get_secret_value() if quickbooks else None,
        )


@dataclass(frozen=True, slots=True)
class Ingress:
    """What the handlers use; kept on the app under INGRESS_KEY."""

    config: IngressConfig
    directory: WebhookDirectory
    publisher: Publisher
    metrics: Metrics
    _counters: dict[tuple[str, int], Any] = field(default_factory=dict)

    def count(self, provider: str, status: int) -> None:
        """webhooks_received{provider, status} += 1, with the labelled child looked up once."""
        counter = self._counters.get((provider, status))
        if counter is None:
            counter = self.metrics.webhooks_received.labels(provider=provider, status=str(status))
            self._counters[(provider, status)] = counter
        counter.inc()


INGRESS_KEY = web.AppKey("ingress", Ingress)


class Refused(Exception):
    """A request answered with an error status and a one-line reason."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status


def create_app(
    *, config: IngressConfig, directory: WebhookDirectory, publisher: Publisher, metrics: Metrics,
    readiness: Mapping[str, ReadinessCheck],
) -> web.Application:
    """The ingress aiohttp app: webhook routes plus /healthz, /readyz and /metrics."""
    app = web.Application(middlewares=[json_errors])
    app[INGRESS_KEY] = Ingress(config, directory, publisher, metrics)
    app.router.add_post("/webhooks/stripe/{venue_id}", stripe_webhook)
    app.router.add_post("/webhooks/mailchimp/{venue_id}/{token}", mailchimp_webhook)
    app.router.add_get("/webhooks/mailchimp/{venue_id}/{token}", mailchimp_url_check)
    app.router.add_post("/webhooks/square", square_webhook)
    app.router.add_post("/webhooks/quickbooks", quickbooks_webhook)
    add_health_routes(app, metrics=metrics, checks=readiness)
    return app


def error_response(status: int, reason: str) -> web.Response:
    return web.json_response({"error": reason}, status=status)


@web.middleware
async def json_errors(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    """The router's own 404 / 405 as JSON error bodies, like every other error."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, exc.reason)
        if "Allow" in exc.headers:  # a 405 says which methods the path takes
            response.headers["Allow"] = exc.headers["Allow"]
        return response


# The shared pipeline -----------------------------------------------------------------


async def _accept(
    request: web.Request, provider: ProviderName, venue_id: str | None, verify: Verify
) -> web.Response:
    """Steps 2-4 for one request; step 1 (404) is each route's own."""
    ingress = request.app[INGRESS_KEY]
    config = ingress.config
    try:
        body = await read_body(request, limit_bytes=config.max_body_bytes, timeout_s=config.body_timeout_s)
    except BodyTooLarge as exc:
        raise Refused(413, str(exc)) from None
    except BodyTimeout as exc:
        raise Refused(400, str(exc)) from None
    try:
        await verify(body)
    except (hooks.SignatureRejected, hooks.SignatureUncheckable) as exc:
        raise Refused(exc.status, str(exc)) from None
    # model_construct: every field is built right here, so pydantic's validation would only
    # re-check our own values on the hot path.
    message = VerifiedWebhook.model_construct(
        provider=provider,
        venue_id=venue_id,
        received_at=utcnow(),
        headers=hooks.forwarded_headers(provider, request.headers),
        body=base64.b64encode(body).decode("ascii"),
    )
    await _publish(ingress, message)
    return web.json_response({"status": "accepted"})


async def _publish(ingress: Ingress, message: VerifiedWebhook) -> None:
    """Publish with confirms within the timeout; raise Refused(503) otherwise."""
    timeout_s = ingress.config.confirm_timeout_s
    message_id = str(uuid.uuid4())
    try:
        # The Publisher bounds the confirm wait itself (ports.Publisher); no second timer here:
        # it cost 3% of a request (bench/ingress.py).
        await ingress.publisher.publish_webhook(message, message_id=message_id, timeout_s=timeout_s)
    except (NetworkError, TimeoutError) as exc:
        raise Refused(503, f"the message broker is away or did not confirm within {timeout_s:g} s") from exc
    except Exception as exc:  # whatever broke, the provider must retry: never 200 unconfirmed
        log.error("webhook_publish_failed", provider=message.provider, error=type(exc).__name__)
        raise Refused(503, "the message broker is unavailable") from exc
    # No log line per accepted webhook: at webhook rates one cost half the handler's time
    # (bench/ingress.py); integration_webhooks_received_total counts them. Refusals are logged.


Step = Callable[[], Awaitable[web.Response]]


async def _answer(request: web.Request, provider: str, step: Step) -> web.Response:
    """Run a route's steps; turn a refusal into its JSON error; count the status."""
    try:
        response = await step()
    except Refused as exc:
        response = error_response(exc.status, str(exc))
        log.info("webhook_refused", provider=provider, status=exc.status, reason=str(exc),
                 venue_id=request.match_info.get("venue_id"))
    request.app[INGRESS_KEY].count(provider, response.status)
    return response


async def _require_venue(request: web.Request, provider: str) -> str:
    """The route's venue id; raise Refused(404) when the venue has no credential for provider."""
    venue_id = request.match_info["venue_id"]
    if not await _lookup(request.app[INGRESS_KEY].directory.venue_known(venue_id, provider)):
        raise Refused(404, f"unknown venue for {provider}")
    return venue_id


async def _lookup(pending: Awaitable[bool] | Awaitable[str | None]) -> object:
    try:
        return await pending
    except NetworkError as exc:
        raise Refused(503, "venue lookup is unavailable, retry later") from exc


# Routes ------------------------------------------------------------------------------


async def _secret(request: web.Request, venue_id: str, provider: str, *, refresh: bool = False) -> str | None:
    directory = request.app[INGRESS_KEY].directory
    found = await _lookup(directory.webhook_secret(venue_id, provider, refresh=refresh))
    return found if isinstance(found, str) else None


async def _with_fresh_secret(
    request: web.Request, venue_id: str, provider: str, check: Callable[[str | None], None]
) -> None:
    """Check with the cached secret; after a mismatch, once more with a re-read one (it may
    have just been rotated by `webhooks register`)."""
    secret = await _secret(request, venue_id, provider)
    try:
        check(secret)
    except hooks.SignatureRejected:
        fresh = await _secret(request, venue_id, provider, refresh=True)
        if fresh == secret:
            raise
        check(fresh)


async def stripe_webhook(request: web.Request) -> web.Response:
    async def step() -> web.Response:
        venue_id = await _require_venue(request, "stripe")

        async def verify(body: bytes) -> None:
            header = request.headers.get(hooks.STRIPE_SIGNATURE)
            if not header:  # no need to open the secret to know this one fails
                raise hooks.SignatureRejected("missing Stripe-Signature header")

            def check(secret: str | None) -> None:
                if secret is None:
                    raise hooks.SignatureRejected("this venue has no Stripe webhook secret")
                hooks.verify_stripe(body, header, secret)

            await _with_fresh_secret(request, venue_id, "stripe", check)

        return await _accept(request, "stripe", venue_id, verify)

    return await _answer(request, "stripe", step)


async def _mailchimp_token_ok(request: web.Request, venue_id: str) -> None:
    token = request.match_info["token"]
    await _with_fresh_secret(
        request, venue_id, "mailchimp", lambda expected: hooks.verify_mailchimp_token(token, expected)
    )


async def mailchimp_webhook(request: web.Request) -> web.Response:
    async def step() -> web.Response:
        venue_id = await _require_venue(request, "mailchimp")

        async def verify(body: bytes) -> None:
            await _mailchimp_token_ok(request, venue_id)

        return await _accept(request, "mailchimp", venue_id, verify)

    return await _answer(request, "mailchimp", step)


async def mailchimp_url_check(request: web.Request) -> web.Response:
    """Mailchimp GETs the URL when the webhook is created; answer 200 for a valid URL."""
    try:
        venue_id = await _require_venue(request, "mailchimp")
        try:
            await _mailchimp_token_ok(request, venue_id)
        except hooks.SignatureRejected as exc:
            raise Refused(401, str(exc)) from None
    except Refused as exc:
        return error_response(exc.status, str(exc))
    return web.json_response({"status": "ok"})


def _app_wide_key(value: str | None, name: str) -> str:
    if not value:
        # Without the key nothing can be verified; 503 makes the provider retry until an
        # operator sets it, instead of losing the events.
        raise Refused(503, f"{name} is not configured on this ingress")
    return value


async def square_webhook(request: web.Request) -> web.Response:
    config = request.app[INGRESS_KEY].config

    async def step() -> web.Response:
        key = _app_wide_key(config.square_signature_key, "SQUARE_WEBHOOK_SIGNATURE_KEY")
        url = config.public_url + hooks.route_path("square")

        async def verify(body: bytes) -> None:
            header = request.headers.get(hooks.SQUARE_SIGNATURE)
            hooks.verify_square(body, header, signature_key=key, notification_url=url)

        return await _accept(request, "square", None, verify)

    return await _answer(request, "square", step)


async def quickbooks_webhook(request: web.Request) -> web.Response:
    config = request.app[INGRESS_KEY].config

    async def step() -> web.Response:
        token = _app_wide_key(config.quickbooks_verifier_token, "QUICKBOOKS_WEBHOOK_VERIFIER_TOKEN")

        async def verify(body: bytes) -> None:
            header = request.headers.get(hooks.QUICKBOOKS_SIGNATURE)
            hooks.verify_quickbooks(body, header, verifier_token=token)

        return await _accept(request, "quickbooks", None, verify)

    return await _answer(request, "quickbooks", step)
