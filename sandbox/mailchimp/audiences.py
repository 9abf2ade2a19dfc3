"""Mailchimp audiences (lists) and list webhooks, and what member handlers share (providers.md 4.2).

Offset/count paging: count defaults to 10 and may not exceed 1000.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.mailchimp.errors import MailchimpError, check_fields, expect, invalid, iso, not_found, require

_LIST_FIELDS = frozenset(
    {
        "name",
        "contact",
        "permission_reminder",
        "use_archive_bar",
        "campaign_defaults",
        "notify_on_subscribe",
        "notify_on_unsubscribe",
        "email_type_option",
        "double_optin",
        "marketing_permissions",
    }
)
_WEBHOOK_FIELDS = frozenset({"url", "events", "sources", "secret"})


@dataclass
class Audience:
    """One list: its record, members by hash (insertion order) and list webhooks."""

    info: dict[str, Any]
    members: dict[str, dict[str, Any]] = field(default_factory=dict)
    changed_at: dict[str, float] = field(default_factory=dict)
    webhooks: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class Ctx:
    """What a Mailchimp handler sees."""

    lists: dict[str, Audience]
    body: Any
    query: Any
    ids: dict[str, str]
    now: float
    account_name: str


Handler = Callable[[Ctx], tuple[int, Any]]


def audience_of(ctx: Ctx) -> Audience:
    audience = ctx.lists.get(ctx.ids["list_id"])
    if audience is None:
        raise not_found()
    return audience


def paging(ctx: Ctx) -> tuple[int, int]:
    try:
        count = int(ctx.query.get("count", 10))
        offset = int(ctx.query.get("offset", 0))
    except ValueError:
        raise MailchimpError(400, "Invalid Resource", "count and offset must be integers.") from None
    if count > 1000 or count < 0 or offset < 0:
        raise MailchimpError(400, "Invalid Resource", "count must be between 0 and 1000 and offset >= 0.")
    return count, offset


def body_object(ctx: Ctx) -> dict[str, Any]:
    if not isinstance(ctx.body, dict):
        raise invalid("", "Schema describes object, NULL found instead")
    return ctx.body


# Lists ------------------------------------------------------------------------------------


def _list_view(audience: Audience) -> dict[str, Any]:
    members = audience.members.values()
    stats = {
        "member_count": sum(1 for m in members if m["status"] == "subscribed"),
        "unsubscribe_count": sum(1 for m in members if m["status"] == "unsubscribed"),
        "cleaned_count": sum(1 for m in members if m["status"] == "cleaned"),
    }
    return {**audience.info, "stats": stats}


def create_list(ctx: Ctx) -> tuple[int, Any]:
    body = body_object(ctx)
    check_fields(body, _LIST_FIELDS)
    require(body, "name", "contact", "permission_reminder", "campaign_defaults", "email_type_option")
    expect(body, "contact", dict)
    expect(body, "campaign_defaults", dict)
    list_id = secrets.token_hex(5)
    info = {
        "id": list_id,
        "web_id": secrets.randbelow(10**6),
        "name": expect(body, "name", str),
        "contact": body["contact"],
        "permission_reminder": body["permission_reminder"],
        "use_archive_bar": bool(body.get("use_archive_bar", False)),
        "campaign_defaults": body["campaign_defaults"],
        "notify_on_subscribe": body.get("notify_on_subscribe", ""),
        "notify_on_unsubscribe": body.get("notify_on_unsubscribe", ""),
        "date_created": iso(ctx.now),
        "list_rating": 0,
        "email_type_option": bool(expect(body, "email_type_option", bool)),
        "double_optin": bool(body.get("double_optin", False)),
        "visibility": "pub",
    }
    ctx.lists[list_id] = Audience(info)
    return 200, _list_view(ctx.lists[list_id])


def get_lists(ctx: Ctx) -> tuple[int, Any]:
    count, offset = paging(ctx)
    audiences = list(ctx.lists.values())
    return 200, {
        "lists": [_list_view(a) for a in audiences[offset : offset + count]],
        "total_items": len(audiences),
        "constraints": {"may_create": True},
    }


def get_list(ctx: Ctx) -> tuple[int, Any]:
    return 200, _list_view(audience_of(ctx))


# List webhooks ------------------------------------------------------------------------------


def create_webhook(ctx: Ctx) -> tuple[int, Any]:
    audience, body = audience_of(ctx), body_object(ctx)
    check_fields(body, _WEBHOOK_FIELDS)
    url = expect(body, "url", str)
    if not url or not url.startswith(("http://", "https://")):
        raise invalid("url", "The URL you provided is not valid.")
    if any(hook["url"] == url for hook in audience.webhooks.values()):
        raise MailchimpError(
            400, "Invalid Resource", "Sorry, you can't use the same url for more than one webhook."
        )
    events = {k: True for k in ("subscribe", "unsubscribe", "profile", "cleaned", "upemail", "campaign")}
    sources = {"user": True, "admin": True, "api": False}
    hook = {
        "id": secrets.token_hex(5),
        "url": url,
        "events": {**events, **(expect(body, "events", dict) or {})},
        "sources": {**sources, **(expect(body, "sources", dict) or {})},
        "list_id": audience.info["id"],
    }
    audience.webhooks[hook["id"]] = hook
    return 200, hook


def get_webhooks(ctx: Ctx) -> tuple[int, Any]:
    audience = audience_of(ctx)
    hooks = list(audience.webhooks.values())
    return 200, {"webhooks": hooks, "list_id": audience.info["id"], "total_items": len(hooks)}


def delete_webhook(ctx: Ctx) -> tuple[int, Any]:
    audience = audience_of(ctx)
    if audience.webhooks.pop(ctx.ids["webhook_id"], None) is None:
        raise not_found()
    return 204, None


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("GET", "/3.0/lists", get_lists),
    ("POST", "/3.0/lists", create_list),
    ("GET", "/3.0/lists/{list_id}", get_list),
    ("GET", "/3.0/lists/{list_id}/webhooks", get_webhooks),
    ("POST", "/3.0/lists/{list_id}/webhooks", create_webhook),
    ("DELETE", "/3.0/lists/{list_id}/webhooks/{webhook_id}", delete_webhook),
)
