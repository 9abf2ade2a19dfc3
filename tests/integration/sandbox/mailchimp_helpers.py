"""Shared helpers for the Mailchimp sandbox tests: accounts, SDK clients, a ready list."""

from __future__ import annotations

import uuid
from typing import Any

import mailchimp_marketing


def mailchimp_account(sandbox: Any, *, oauth: dict[str, Any] | None = None) -> tuple[str, str]:
    """Register a fresh Mailchimp account; returns (account name, `<key>-us6` API key)."""
    name = f"venue-{uuid.uuid4().hex[:8]}"
    key = f"{uuid.uuid4().hex}-us6"
    payload: dict[str, Any] = {"provider": "mailchimp", "account": name, "api_key": key}
    if oauth is not None:
        payload["oauth"] = oauth
    sandbox.control("POST", "/_sandbox/accounts", payload)
    return name, key


def mailchimp_client(sandbox: Any, *, api_key: str = "", access_token: str = "") -> Any:
    """The official SDK pointed at the sandbox as providers.md section 6 says."""
    client = mailchimp_marketing.Client()
    config: dict[str, Any] = (
        {"api_key": api_key} if api_key else {"access_token": access_token, "server": "us6"}
    )
    client.set_config(config)
    client.api_client.host = f"{sandbox.url}/mailchimp/3.0"
    return client


def new_list(client: Any, name: str = "Newsletter") -> str:
    """Create an audience with every field Mailchimp requires; returns its id."""
    created = client.lists.create_list(
        {
            "name": name,
            "permission_reminder": "You bought a ticket.",
            "email_type_option": False,
            "contact": {
                "company": "Venue",
                "address1": "1 Main St",
                "city": "Paris",
                "state": "",
                "zip": "75001",
                "country": "FR",
            },
            "campaign_defaults": {
                "from_name": "Venue",
                "from_email": "news@example.com",
                "subject": "",
                "language": "en",
            },
        }
    )
    return str(created["id"])
