"""The sandbox's aiohttp application: four provider plug-ins plus the control endpoints.

``create_app`` builds it; ``serve`` runs it (``integration-service sandbox`` calls it).
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from sandbox import mailchimp, quickbooks, square, stripe
from sandbox.control import STATE_KEY, add_control_routes
from sandbox.core import TIMEOUT_HOLD_S, SandboxState, make_middleware, release_holds

PLUGIN_CLASSES: tuple[Any, ...] = (stripe.Plugin, square.Plugin, quickbooks.Plugin, mailchimp.Plugin)
CLIENT_MAX_SIZE = 16 * 1024 * 1024  # Mailchimp batches of 500 members can be large


def create_app(
    *,
    token_ttl_seconds: float | None = None,
    square_webhook_signature_key: str | None = None,
    quickbooks_webhook_verifier_token: str | None = None,
    clients: dict[str, tuple[str | None, str | None]] | None = None,
    timeout_hold_s: float = TIMEOUT_HOLD_S,
) -> web.Application:
    """The sandbox app; ``clients`` maps provider -> (client_id, client_secret) for OAuth."""
    state = SandboxState(
        token_ttl_seconds=token_ttl_seconds,
        clients=clients,
        app_keys={
            "square_webhook_signature_key": square_webhook_signature_key,
            "quickbooks_webhook_verifier_token": quickbooks_webhook_verifier_token,
        },
        timeout_hold_s=timeout_hold_s,
    )
    app = web.Application(middlewares=[make_middleware(state)], client_max_size=CLIENT_MAX_SIZE)
    app[STATE_KEY] = state
    for plugin_class in PLUGIN_CLASSES:
        plugin = plugin_class(state)
        state.plugins[plugin.name] = plugin
        plugin.add_routes(app, f"/{plugin.name}")
    add_control_routes(app)

    async def _release(_: web.Application) -> None:
        release_holds(state)

    app.on_shutdown.append(_release)
    return app


def serve(*, host: str, port: int, **options: Any) -> None:
    """Run the sandbox until interrupted (blocking); ``options`` go to :func:`create_app`."""
    web.run_app(
        create_app(**options),
        host=host,
        port=port,
        access_log=None,
        print=None,
        shutdown_timeout=2.0,
    )
