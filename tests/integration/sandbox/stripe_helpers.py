"""Shared helpers for the Stripe sandbox tests: accounts and official SDK clients."""

from __future__ import annotations

import uuid
from typing import Any

import stripe


def stripe_account(sandbox: Any, *, live: bool = True, webhook_secret: str | None = None) -> tuple[str, str]:
    """Register a fresh Stripe account (a live key: 100 calls/s); returns (name, API key)."""
    name = f"venue-{uuid.uuid4().hex[:8]}"
    key = f"sk_{'live' if live else 'test'}_{uuid.uuid4().hex}"
    payload: dict[str, Any] = {"provider": "stripe", "account": name, "api_key": key}
    if webhook_secret is not None:
        payload["webhook_secret"] = webhook_secret
    sandbox.control("POST", "/_sandbox/accounts", payload)
    return name, key


def stripe_client(sandbox: Any, key: str) -> stripe.StripeClient:
    """The official SDK pointed at the sandbox, with its own retries off."""
    return stripe.StripeClient(key, base_addresses={"api": f"{sandbox.url}/stripe"}, max_network_retries=0)
