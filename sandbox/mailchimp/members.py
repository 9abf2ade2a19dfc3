"""Mailchimp list members: by subscriber hash, tags, and batch subscribe (providers.md 4.2).

Members are keyed by subscriber hash (MD5 of the lower-cased address); the path also takes
the address itself. Batches take at most 500 members and report rejects inside a 200.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

from sandbox.mailchimp.audiences import Audience, Ctx, Handler, audience_of, body_object, paging
from sandbox.mailchimp.errors import (
    MailchimpError,
    check_fields,
    expect,
    invalid,
    iso,
    not_found,
    parse_iso,
    subscriber_hash,
)

STATUSES = frozenset({"subscribed", "unsubscribed", "cleaned", "pending", "transactional"})
BATCH_MAX = 500
_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
_MEMBER_FIELDS = frozenset(
    {
        "email_address",
        "status",
        "status_if_new",
        "email_type",
        "merge_fields",
        "interests",
        "language",
        "vip",
        "location",
        "marketing_permissions",
        "ip_signup",
        "timestamp_signup",
        "ip_opt",
        "timestamp_opt",
        "tags",
        "skip_merge_validation",
    }
)
# Members ----------------------------------------------------------------------------------


def _member_hash(ctx: Ctx) -> str:
    """The path's subscriber hash; an address is accepted too."""
    raw = ctx.ids["subscriber_hash"]
    return subscriber_hash(raw) if "@" in raw else raw.lower()


def _email(body: dict[str, Any], *, prefix: str = "") -> str:
    email = expect(body, "email_address", str, prefix=prefix)
    if email is None or not _EMAIL.match(email.strip()):
        raise invalid(prefix + "email_address", "Please provide a valid email address.")
    return str(email.strip())


def _status(body: dict[str, Any], name: str) -> str | None:
    value = expect(body, name, str)
    if value is not None and value not in STATUSES:
        raise invalid(name, f"Data did not match any of the schemas described in anyOf. ({value})")
    return None if value is None else str(value)


def _validate_member(body: dict[str, Any]) -> None:
    check_fields(body, _MEMBER_FIELDS)
    for name in ("merge_fields", "interests", "location"):
        expect(body, name, dict)
    expect(body, "tags", list)
    expect(body, "vip", bool)


def _new_member(audience: Audience, email: str, status: str, now: float) -> dict[str, Any]:
    member_hash = subscriber_hash(email)
    return {
        "id": member_hash,
        "email_address": email,
        "unique_email_id": secrets.token_hex(5),
        "contact_id": secrets.token_hex(16),
        "full_name": "",
        "web_id": secrets.randbelow(10**9),
        "email_type": "html",
        "status": status,
        "merge_fields": {"FNAME": "", "LNAME": "", "PHONE": "", "ADDRESS": "", "BIRTHDAY": ""},
        "interests": {},
        "stats": {"avg_open_rate": 0, "avg_click_rate": 0},
        "ip_signup": "",
        "timestamp_signup": "",
        "ip_opt": "",
        "timestamp_opt": iso(now),
        "member_rating": 2,
        "last_changed": iso(now),
        "language": "",
        "vip": False,
        "email_client": "",
        "location": {
            "latitude": 0,
            "longitude": 0,
            "gmtoff": 0,
            "dstoff": 0,
            "country_code": "",
            "timezone": "",
            "region": "",
        },
        "source": "API - Generic",
        "tags_count": 0,
        "tags": [],
        "list_id": audience.info["id"],
    }


def _apply(
    audience: Audience, member: dict[str, Any], body: dict[str, Any], now: float, *, sync_tags: bool = False
) -> None:
    """Write the given member fields, then stamp last_changed."""
    for name in ("email_type", "language", "vip", "ip_signup", "ip_opt"):
        if name in body:
            member[name] = body[name]
    if body.get("status"):
        member["status"] = body["status"]
    if "merge_fields" in body:
        member["merge_fields"] = {**member["merge_fields"], **body["merge_fields"]}
        names = (member["merge_fields"].get("FNAME", ""), member["merge_fields"].get("LNAME", ""))
        member["full_name"] = " ".join(n for n in names if n)
    if "interests" in body:
        member["interests"] = {**member["interests"], **body["interests"]}
    if "tags" in body:
        tags = [t if isinstance(t, str) else t.get("name", "") for t in body["tags"]]
        _set_tags(member, [{"name": n, "status": "active"} for n in tags], replace=sync_tags)
    member["last_changed"] = iso(now)
    audience.members[member["id"]] = member
    audience.changed_at[member["id"]] = int(now)  # Mailchimp times have whole seconds


def _set_tags(member: dict[str, Any], tags: list[dict[str, Any]], *, replace: bool) -> None:
    current = {} if replace else {t["name"]: t for t in member["tags"]}
    for tag in tags:
        if tag.get("status", "active") == "inactive":
            current.pop(tag["name"], None)
        else:
            current.setdefault(tag["name"], {"id": abs(hash(tag["name"])) % 10**6, "name": tag["name"]})
    member["tags"] = list(current.values())
    member["tags_count"] = len(current)


def list_members(ctx: Ctx) -> tuple[int, Any]:
    """Members in insertion order, filtered by status and since/before_last_changed."""
    audience = audience_of(ctx)
    count, offset = paging(ctx)
    status = ctx.query.get("status")
    since = ctx.query.get("since_last_changed")
    before = ctx.query.get("before_last_changed")
    since_s = None if since is None else parse_iso(since, "since_last_changed")
    before_s = None if before is None else parse_iso(before, "before_last_changed")
    found = [
        member
        for member_hash, member in audience.members.items()
        if (status is None or member["status"] == status)
        and (since_s is None or audience.changed_at[member_hash] > since_s)
        and (before_s is None or audience.changed_at[member_hash] < before_s)
    ]
    return 200, {
        "members": found[offset : offset + count],
        "list_id": audience.info["id"],
        "total_items": len(found),
    }


def get_member(ctx: Ctx) -> tuple[int, Any]:
    member = audience_of(ctx).members.get(_member_hash(ctx))
    if member is None:
        raise not_found()
    return 200, member


def add_member(ctx: Ctx) -> tuple[int, Any]:
    """POST: a new member; an existing address is 400 Member Exists."""
    audience, body = audience_of(ctx), body_object(ctx)
    _validate_member(body)
    email = _email(body)
    status = _status(body, "status")
    if status is None:
        raise invalid("", "Required fields were not provided: status")
    if subscriber_hash(email) in audience.members:
        raise member_exists(email)
    member = _new_member(audience, email, status, ctx.now)
    _apply(audience, member, body, ctx.now)
    return 200, member


def member_exists(email: str) -> MailchimpError:
    return MailchimpError(
        400, "Member Exists", f"{email} is already a list member. Use PUT to insert or update list members."
    )


def put_member(ctx: Ctx) -> tuple[int, Any]:
    """PUT: upsert by hash; the body's address must hash to the path's hash."""
    audience, body, member_hash = audience_of(ctx), body_object(ctx), _member_hash(ctx)
    _validate_member(body)
    email = _email(body)
    _status(body, "status")
    _status(body, "status_if_new")
    if subscriber_hash(email) != member_hash:
        if subscriber_hash(email) in audience.members:
            raise member_exists(email)
        raise invalid("email_address", "The subscriber hash in the URL does not match the email address.")
    member = audience.members.get(member_hash)
    if member is None:
        status = body.get("status_if_new") or body.get("status")
        if not status:
            raise invalid("", "Required fields were not provided: status_if_new")
        member = _new_member(audience, email, status, ctx.now)
    _apply(audience, member, body, ctx.now)
    return 200, member


def patch_member(ctx: Ctx) -> tuple[int, Any]:
    audience, body = audience_of(ctx), body_object(ctx)
    _validate_member(body)
    _status(body, "status")
    member = audience.members.get(_member_hash(ctx))
    if member is None:
        raise not_found()
    if "email_address" in body and subscriber_hash(_email(body)) != member["id"]:
        raise invalid("email_address", "Changing the address is not supported by the sandbox.")
    _apply(audience, member, body, ctx.now)
    return 200, member


def post_member_tags(ctx: Ctx) -> tuple[int, Any]:
    """Add (active) or remove (inactive) tags; 204 with no body."""
    audience, body = audience_of(ctx), body_object(ctx)
    check_fields(body, frozenset({"tags", "is_syncing"}))
    tags = expect(body, "tags", list)
    if tags is None:
        raise invalid("", "Required fields were not provided: tags")
    for tag in tags:
        if (
            not isinstance(tag, dict)
            or not isinstance(tag.get("name"), str)
            or tag.get("status") not in ("active", "inactive")
        ):
            raise invalid("tags", "Each tag needs a name and a status of active or inactive.")
    member = audience.members.get(_member_hash(ctx))
    if member is None:
        raise not_found()
    _set_tags(member, tags, replace=False)
    member["last_changed"] = iso(ctx.now)
    audience.changed_at[member["id"]] = int(ctx.now)
    return 204, None


def get_member_tags(ctx: Ctx) -> tuple[int, Any]:
    _, member = get_member(ctx)
    return 200, {"tags": member["tags"], "total_items": len(member["tags"])}


def archive_member(ctx: Ctx) -> tuple[int, Any]:
    """DELETE archives the member (it stays, with status archived); 204."""
    audience = audience_of(ctx)
    member = audience.members.get(_member_hash(ctx))
    if member is None:
        raise not_found()
    _apply(audience, member, {"status": "archived"}, ctx.now)
    return 204, None


def delete_member_permanently(ctx: Ctx) -> tuple[int, Any]:
    audience, member_hash = audience_of(ctx), _member_hash(ctx)
    if audience.members.pop(member_hash, None) is None:
        raise not_found()
    audience.changed_at.pop(member_hash, None)
    return 204, None


def batch_members(ctx: Ctx) -> tuple[int, Any]:
    """POST /lists/{id}: up to 500 members; rejects go to errors[] inside a 200."""
    audience, body = audience_of(ctx), body_object(ctx)
    check_fields(body, frozenset({"members", "update_existing", "sync_tags"}))
    members = expect(body, "members", list)
    if members is None:
        raise invalid("", "Required fields were not provided: members")
    if len(members) > BATCH_MAX:
        raise invalid("members", f"You may only submit up to {BATCH_MAX} members at a time.")
    update = bool(body.get("update_existing", False))
    created: list[dict[str, Any]] = []
    updated: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    for item in members:
        _batch_one(
            ctx,
            audience,
            item,
            update=update,
            sync_tags=bool(body.get("sync_tags")),
            created=created,
            updated=updated,
            errors=errors,
        )
    return 200, {
        "new_members": created,
        "updated_members": updated,
        "errors": errors,
        "total_created": len(created),
        "total_updated": len(updated),
        "error_count": len(errors),
    }


def _batch_one(
    ctx: Ctx,
    audience: Audience,
    item: Any,
    *,
    update: bool,
    sync_tags: bool,
    created: list[dict[str, Any]],
    updated: list[dict[str, Any]],
    errors: list[dict[str, Any]],
) -> None:
    email = item.get("email_address", "") if isinstance(item, dict) else ""
    try:
        if not isinstance(item, dict):
            raise invalid("", "Schema describes object")
        _validate_member(item)
        email = _email(item)
        _status(item, "status")
        _status(item, "status_if_new")
        existing = audience.members.get(subscriber_hash(email))
        if existing is not None and not update:
            errors.append(
                {
                    "email_address": email,
                    "error": f"{email} is already a list member, do you want to "
                    "update? please provide update_existing:true in the request body",
                    "error_code": "ERROR_CONTACT_EXISTS",
                    "field": "",
                    "field_message": "",
                }
            )
            return
        status = item.get("status") or item.get("status_if_new")
        if existing is None and not status:
            raise invalid("", "Required fields were not provided: status")
        member = existing or _new_member(audience, email, str(status), ctx.now)
        _apply(audience, member, item, ctx.now, sync_tags=sync_tags)
        (updated if existing is not None else created).append(member)
    except MailchimpError as exc:
        message = exc.errors[0]["message"] if exc.errors else exc.detail
        errors.append(
            {
                "email_address": email,
                "error": message,
                "error_code": "ERROR_GENERIC",
                "field": exc.errors[0]["field"] if exc.errors else "",
                "field_message": message,
            }
        )


ROUTES: tuple[tuple[str, str, Handler], ...] = (
    ("POST", "/3.0/lists/{list_id}", batch_members),
    ("GET", "/3.0/lists/{list_id}/members", list_members),
    ("POST", "/3.0/lists/{list_id}/members", add_member),
    ("GET", "/3.0/lists/{list_id}/members/{subscriber_hash}", get_member),
    ("PUT", "/3.0/lists/{list_id}/members/{subscriber_hash}", put_member),
    ("PATCH", "/3.0/lists/{list_id}/members/{subscriber_hash}", patch_member),
    ("DELETE", "/3.0/lists/{list_id}/members/{subscriber_hash}", archive_member),
    (
        "POST",
        "/3.0/lists/{list_id}/members/{subscriber_hash}/actions/delete-permanent",
        delete_member_permanently,
    ),
    ("GET", "/3.0/lists/{list_id}/members/{subscriber_hash}/tags", get_member_tags),
    ("POST", "/3.0/lists/{list_id}/members/{subscriber_hash}/tags", post_member_tags),
)
