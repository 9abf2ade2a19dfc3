"""MailchimpClient: the ProviderClient for Mailchimp Marketing (contacts and lists).

Raw HTTP through the shared helper: ``<MAILCHIMP_API_BASE with {dc}>/3.0``, where ``dc`` is
the credential's ``server_prefix`` (the ``-us6`` suffix of an API key, or the OAuth
metadata's ``dc``). Auth comes from the VenueAuth: HTTP Basic with the key, or an OAuth
Bearer token (Mailchimp tokens never expire).

Contacts are the members of ``options["list_id"]``: pulled with ``offset``/``count=1000``
(incremental: ``since_last_changed`` from the stored cursor, which names its list), pushed
in batches of 500 through ``POST /lists/{id}`` with ``update_existing`` (an upsert keyed by
the subscriber hash, so a retry writes the same state again: Mailchimp has no idempotency
header) and their tags. A contact's external id is its subscriber hash (MD5 of the
lower-cased email). Lists are pulled whole and created after looking the name up.
"""

from __future__ import annotations

import hashlib
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from providers.base import Page, ParsedWebhook, ProviderRecord, PushItem, PushResult, VenueAuth, WebhookChange
from providers.http import ProviderHttp, ProviderSpec, spec_for
from service.config import Settings
from service.errors import (
    AuthorizationError,
    DataError,
    IntegrationError,
    ProviderError,
    RateLimitError,
    UnknownEntityError,
    ValidationError,
)
from service.messages import VerifiedWebhook

PAGE_COUNT = 1000  # Mailchimp's maximum count per page
BATCH_MAX = 500  # POST /lists/{id} takes at most 500 members
CLOCK_SKEW_S = 60
LIST_DEFAULTS = {"permission_reminder": "You signed up for updates from us.", "email_type_option": False}
_DATA_TITLES = ("Resource Not Found", "Forgotten Email Not Subscribed", "Member In Compliance State")


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: MD5 hex of the lower-cased, trimmed email."""
    return hashlib.md5(email.strip().lower().encode(), usedforsecurity=False).hexdigest()


def error_hook(status: int, body: Any) -> tuple[type[IntegrationError] | None, str | None]:
    """Mailchimp's problem+json ``{type, title, status, detail, errors[]}`` -> category, message."""
    if not isinstance(body, dict) or not (body.get("title") or body.get("detail")):
        return None, None
    title, detail = str(body.get("title") or ""), " ".join(str(body.get("detail") or "").split())
    fields = body.get("errors")
    if isinstance(fields, list) and fields and isinstance(fields[0], dict):
        detail = f"{detail} ({fields[0].get('field', '')}: {fields[0].get('message', '')})"
    message = f"{title}: {detail}" if title and detail else title or detail
    if status == 429:
        return RateLimitError, message
    if status == 403:
        return AuthorizationError, message
    if status == 404 or title in _DATA_TITLES:
        return DataError, message
    if status in (400, 422):
        return ValidationError, message
    return None, message


SPEC: ProviderSpec = spec_for(
    "mailchimp", error_hook=error_hook, default_retry_after_s=1.0, headers={"Accept": "application/json"}
)


def _iso(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat()


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def member_payload(payload: dict[str, Any]) -> dict[str, Any]:
    """A provider-shaped contact as POST /lists/{id} takes it: status words, tag names."""
    member = {k: v for k, v in payload.items() if v is not None}
    status = member.get("status")
    if isinstance(status, bool):
        member["status"] = "subscribed" if status else "unsubscribed"
    member.setdefault("status_if_new", member.get("status", "subscribed"))
    tags = member.get("tags")
    if isinstance(tags, list):
        member["tags"] = [
            t.get("name") if isinstance(t, dict) else t
            for t in tags
            if (t.get("name") if isinstance(t, dict) else t)
        ]
    return member


class MailchimpClient:
    """Mailchimp through the shared helper; provider-shaped dicts in and out."""

    name = "mailchimp"

    def __init__(
        self, http: ProviderHttp, *, settings: Settings | None = None, clock: Any = time.time
    ) -> None:
        self.http = http
        self.settings = settings or http.settings
        self._clock = clock

    def base_url(self, auth: VenueAuth) -> str:
        """The venue's data-centre API root (``.../3.0``)."""
        dc = auth.value("server_prefix")
        if not dc:
            raise ValidationError(f"mailchimp credential of venue {auth.venue_id} has no server_prefix")
        return f"{self.settings.mailchimp_base_for(dc).rstrip('/')}/3.0"

    async def call(
        self,
        auth: VenueAuth,
        method: str,
        path: str,
        *,
        operation: str,
        params: dict[str, Any] | None = None,
        body: Any = None,
    ) -> dict[str, Any]:
        """One call; the reply's JSON object ({} for 204)."""
        reply = await self.http.request(
            SPEC, auth, method, self.base_url(auth) + path, operation=operation, params=params, json_body=body
        )
        return {} if not reply.body.strip() else reply.json_object()

    def batch_size(self, entity: str) -> int:
        """Contacts 500 a batch (POST /lists/{id}); lists one lookup-then-create at a time."""
        if entity == "contacts":
            return BATCH_MAX
        if entity == "lists":
            return 10
        raise UnknownEntityError(f"mailchimp cannot push {entity!r}")

    # Pull ------------------------------------------------------------------------------

    async def pull_page(
        self,
        auth: VenueAuth,
        entity: str,
        *,
        cursor: dict[str, Any] | None,
        resume: dict[str, Any] | None,
        options: dict[str, Any],
    ) -> Page:
        """One page of a list's members (contacts) or of the account's lists."""
        if entity == "lists":
            return await self._lists_page(auth, cursor or {"offset": 0})
        if entity != "contacts":
            raise UnknownEntityError(f"mailchimp cannot pull {entity!r}")
        list_id = _list_id(options)
        state = dict(cursor) if cursor else {"offset": 0, "t0": self._clock(), "list_id": list_id}
        if not cursor and resume and resume.get("list_id") == list_id and resume.get("since_last_changed"):
            state["since"] = resume["since_last_changed"]  # a cursor of another list means full
        params: dict[str, Any] = {"count": PAGE_COUNT, "offset": state["offset"]}
        if state.get("since"):
            params["since_last_changed"] = state["since"]
        payload = await self.call(
            auth, "GET", f"/lists/{list_id}/members", operation="list_members", params=params
        )
        members = _items(payload, "members")
        records = [_member_record(m) for m in members]
        next_offset = state["offset"] + len(members)
        if members and next_offset < _total_items(payload):
            return Page(records, {**state, "offset": next_offset})
        resume_cursor = {"list_id": list_id, "since_last_changed": _iso(state["t0"] - CLOCK_SKEW_S)}
        return Page(records, None, resume_cursor=resume_cursor)

    async def _lists_page(self, auth: VenueAuth, state: dict[str, Any]) -> Page:
        payload = await self.call(
            auth,
            "GET",
            "/lists",
            operation="list_lists",
            params={"count": PAGE_COUNT, "offset": state["offset"]},
        )
        lists = _items(payload, "lists")
        records = [
            ProviderRecord(str(x["id"]), x, version=None, updated_at=_parse_time(x.get("date_created")))
            for x in lists
        ]
        next_offset = state["offset"] + len(lists)
        if lists and next_offset < _total_items(payload):
            return Page(records, {"offset": next_offset})
        return Page(records, None)

    # Push ------------------------------------------------------------------------------

    async def push_batch(
        self, auth: VenueAuth, entity: str, items: list[PushItem], *, options: dict[str, Any]
    ) -> list[PushResult]:
        """Upsert contacts (one batch request per 500) or create lists missing by name."""
        if entity == "contacts":
            results: list[PushResult] = []
            for start in range(0, len(items), BATCH_MAX):
                results += await self._push_contacts(
                    auth, _list_id(options), items[start : start + BATCH_MAX]
                )
            return results
        if entity == "lists":
            return await self._push_lists(auth, items)
        raise UnknownEntityError(f"mailchimp cannot push {entity!r}")

    async def _push_contacts(self, auth: VenueAuth, list_id: str, items: list[PushItem]) -> list[PushResult]:
        members, results = [], {}
        for item in items:
            email = item.payload.get("email_address")
            if not isinstance(email, str) or "@" not in email:
                results[item.record_id] = PushResult(
                    item.record_id,
                    "failed",
                    error=ValidationError(
                        f"record {item.record_id}: email_address is missing or not an email"
                    ),
                )
                continue
            members.append(member_payload(item.payload))
        by_email: dict[str, tuple[str, Any]] = {}
        if members:
            reply = await self.call(
                auth,
                "POST",
                f"/lists/{list_id}",
                operation="batch_members",
                body={"members": members, "update_existing": True},
            )
            by_email = _batch_outcomes(reply)
        for item in items:
            if item.record_id not in results:
                results[item.record_id] = _contact_result(item, by_email)
        return [results[item.record_id] for item in items]

    async def _push_lists(self, auth: VenueAuth, items: list[PushItem]) -> list[PushResult]:
        existing = await self._lists_by_name(auth)
        results = []
        for item in items:
            name = item.payload.get("name")
            if not isinstance(name, str) or not name.strip():
                results.append(
                    PushResult(
                        item.record_id,
                        "failed",
                        error=ValidationError(f"record {item.record_id}: list name is required"),
                    )
                )
            elif name.strip().lower() in existing:
                found = existing[name.strip().lower()]
                results.append(PushResult(item.record_id, "skipped", str(found["id"]), found))
            else:
                results.append(await self._create_list(auth, item, existing))
        return results

    async def _create_list(
        self, auth: VenueAuth, item: PushItem, existing: dict[str, dict[str, Any]]
    ) -> PushResult:
        body = {**LIST_DEFAULTS, **{k: v for k, v in item.payload.items() if v is not None}}
        try:
            created = await self.call(auth, "POST", "/lists", operation="create_list", body=body)
        except IntegrationError as exc:
            return PushResult(item.record_id, "failed", error=exc)
        if not isinstance(created.get("id"), str):
            error = ProviderError("mailchimp create_list: response has no list id", retryable=True)
            return PushResult(item.record_id, "failed", error=error)
        existing[str(created.get("name", "")).strip().lower()] = created
        return PushResult(item.record_id, "created", created["id"], created)

    async def _lists_by_name(self, auth: VenueAuth) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        cursor: dict[str, Any] = {"offset": 0}
        while True:
            page = await self._lists_page(auth, cursor)
            for record in page.records:
                found.setdefault(str(record.data.get("name", "")).strip().lower(), record.data)
            if page.next_cursor is None:
                return found
            cursor = page.next_cursor

    # Records, webhooks, health ----------------------------------------------------------

    async def fetch_record(self, auth: VenueAuth, entity: str, external_id: str) -> ProviderRecord | None:
        """A list by id, or a contact by ``<list_id>/<subscriber hash>``; None when gone."""
        if entity == "lists":
            path = f"/lists/{external_id}"
        elif entity == "contacts" and "/" in external_id:
            list_id, _, member = external_id.partition("/")
            path = f"/lists/{list_id}/members/{member}"
        else:
            raise ValidationError(
                f"mailchimp {entity} {external_id!r}: expected <list_id>/<hash> or a list id"
            )
        try:
            data = await self.call(auth, "GET", path, operation=f"get_{entity}")
        except DataError as exc:
            if exc.status == 404:
                return None
            raise
        if not isinstance(data.get("id"), str) or not data["id"]:  # an empty 200 or another shape
            raise ProviderError(f"mailchimp get_{entity}: the reply is not a {entity[:-1]} (no id)", retryable=True)
        return _member_record(data) if entity == "contacts" else ProviderRecord(str(data["id"]), data)

    def parse_webhook(self, webhook: VerifiedWebhook, body: bytes) -> ParsedWebhook:
        """A Mailchimp form post; the dedupe key is the SHA-256 of the raw body."""
        event_id = hashlib.sha256(body).hexdigest()
        try:
            form = dict(parse_qsl(body.decode("utf-8"), keep_blank_values=True))
        except UnicodeDecodeError:
            raise DataError("mailchimp webhook body is not UTF-8") from None
        kind = form.get("type")
        email = form.get("data[new_email]") or form.get("data[email]")
        if not kind:
            raise DataError("mailchimp webhook has no type")
        if kind == "campaign" or not email:
            return ParsedWebhook(event_id=event_id)
        record = _webhook_record(form, email)
        change = WebhookChange(
            entity="contacts",
            external_id=record.external_id,
            op="upserted",
            event_id=event_id,
            record=record,
            occurred_at=record.updated_at,
        )
        return ParsedWebhook(event_id=event_id, changes=[change])

    async def check_health(self) -> None:
        """Mailchimp answers an unauthenticated /ping with its own 401 problem+json when it is up."""
        base = f"{self.settings.mailchimp_base_for('us1').rstrip('/')}/3.0/ping"
        reply = await self.http.send(SPEC, "GET", base, operation="health")
        if reply.status in (200, 401) and isinstance(reply.json_object(), dict):
            return
        raise ProviderError(f"mailchimp health: HTTP {reply.status}", status=reply.status)


def _list_id(options: dict[str, Any]) -> str:
    list_id = options.get("list_id")
    if not isinstance(list_id, str) or not list_id:
        raise ValidationError("mailchimp contacts need options.list_id (the audience)")
    return list_id


def _items(payload: dict[str, Any], key: str) -> list[dict[str, Any]]:
    value = payload.get(key)
    if not isinstance(value, list) or not all(isinstance(v, dict) and v.get("id") for v in value):
        raise ProviderError(f"mailchimp: response has no {key!r} list of objects", retryable=True)
    return value


def _member_record(member: dict[str, Any]) -> ProviderRecord:
    changed = member.get("last_changed")
    return ProviderRecord(
        external_id=str(member["id"]),
        data=member,
        version=str(changed) if changed else None,
        updated_at=_parse_time(changed),
        deleted=member.get("status") == "archived",
    )


def _total_items(payload: dict[str, Any]) -> int:
    value = payload.get("total_items", 0)
    if not isinstance(value, int) or isinstance(value, bool):
        raise ProviderError(f"mailchimp: total_items is not a number ({type(value).__name__})", retryable=True)
    return value


def _batch_list(reply: dict[str, Any], key: str) -> list[Any]:
    value = reply.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise ProviderError(f"mailchimp batch reply: {key} is not a list", retryable=True)
    return value


def _batch_outcomes(reply: dict[str, Any]) -> dict[str, tuple[str, Any]]:
    """email (lower-case) -> ("created"|"updated", member) or ("failed", error text). A
    reply holding none of the three lists (an empty 200, say) is not Mailchimp's answer:
    read as "nothing changed" it would have reported every contact skipped, unwritten."""
    if not any(key in reply for key in ("new_members", "updated_members", "errors")):
        raise ProviderError("mailchimp batch reply has no new_members, updated_members or errors", retryable=True)
    outcomes: dict[str, tuple[str, Any]] = {}
    for key, outcome in (("new_members", "created"), ("updated_members", "updated")):
        for member in _batch_list(reply, key):
            if isinstance(member, dict) and member.get("email_address"):
                outcomes[str(member["email_address"]).lower()] = (outcome, member)
    for error in _batch_list(reply, "errors"):
        if isinstance(error, dict) and error.get("email_address"):
            outcomes[str(error["email_address"]).lower()] = ("failed", error.get("error") or "rejected")
    return outcomes


def _contact_result(item: PushItem, by_email: dict[str, tuple[str, Any]]) -> PushResult:
    email = str(item.payload["email_address"]).strip().lower()
    outcome, value = by_email.get(email, ("skipped", None))
    if outcome == "failed":
        return PushResult(
            item.record_id,
            "failed",
            subscriber_hash(email),
            error=ValidationError(f"mailchimp rejected {item.record_id}: {value}"),
        )
    if outcome == "skipped":
        return PushResult(item.record_id, "skipped", subscriber_hash(email))
    member: dict[str, Any] = value
    return PushResult(
        item.record_id,
        "created" if outcome == "created" else "updated",
        str(member.get("id") or subscriber_hash(email)),
        member,
    )


def _webhook_record(form: dict[str, str], email: str) -> ProviderRecord:
    merges = {k[len("data[merges][") : -1]: v for k, v in form.items() if k.startswith("data[merges][")}
    status = {"subscribe": "subscribed", "unsubscribe": "unsubscribed", "cleaned": "cleaned"}.get(
        form["type"]
    )
    data: dict[str, Any] = {
        "id": subscriber_hash(email),
        "email_address": email,
        "merge_fields": merges,
        "list_id": form.get("data[list_id]"),
    }
    if status:
        data["status"] = status
    when = None
    if form.get("fired_at"):
        try:
            when = datetime.strptime(form["fired_at"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
        except ValueError:
            when = None
    return ProviderRecord(external_id=data["id"], data=data, version=form.get("fired_at"), updated_at=when)
