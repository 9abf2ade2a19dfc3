"""Stripe in the sandbox (skeleton: the routes land in the next commits)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from sandbox.core import Account


class Plugin:
    """The Stripe plug-in (routes to come)."""

    name = "stripe"

    def __init__(self, state: Any) -> None:
        self.state = state

    def add_routes(self, app: web.Application, prefix: str) -> None:
        """Register nothing yet."""

    def identify(self, request: web.Request) -> Account | None:
        """No credentials are known yet."""
        return None

    def is_public(self, request: web.Request) -> bool:
        """Nothing is public yet."""
        return False

    def unauthorized(self, request: web.Request) -> web.Response:
        """A bare 401 until the real body lands."""
        return web.json_response({}, status=401)

    def rate_limited(self, request: web.Request) -> web.Response:
        """A bare 429 until the real body lands."""
        return web.json_response({}, status=429)

    def error_response(self, request: web.Request, status: int) -> web.Response:
        """A bare error until the real body lands."""
        return web.json_response({}, status=status)

    def limits(self, account: Account) -> Any:
        """No limits yet."""
        from sandbox.core import Limits

        return Limits(per_second=None, per_minute=None, concurrency=None)

    def idempotency_key(self, request: web.Request, body: bytes) -> str | None:
        """No idempotency keys yet."""
        return None

    def register(self, account: Account) -> None:
        """Nothing to set up yet."""

    def reset(self) -> None:
        """Nothing to clear yet."""

    async def build_webhook(self, account: Account, spec: dict[str, Any]) -> tuple[dict[str, str], bytes]:
        """Not built yet."""
        raise NotImplementedError
