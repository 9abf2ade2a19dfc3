"""Mailchimp's problem+json errors (providers.md 4.3) and small shared helpers."""

from __future__ import annotations

import hashlib
import json
import uuid
from datetime import UTC, datetime
from typing import Any

from aiohttp import web

ERROR_TYPE = "https://mailchimp.com/developer/marketing/docs/errors/"
_LINK = '<https://us1.api.mailchimp.com/schema/3.0/ProblemDetailDocument.json>; rel="describedBy"'
INVALID_RESOURCE = (
    "The resource submitted could not be validated. For field-specific details, see the 'errors' array."
)


class MailchimpError(Exception):
    """An error Mailchimp would answer as application/problem+json."""

    def __init__(
        self, status: int, title: str, detail: str, errors: list[dict[str, str]] | None = None
    ) -> None:
        super().__init__(detail)
        self.status, self.title, self.detail, self.errors = status, title, detail, errors


def problem(exc: MailchimpError) -> web.Response:
    """The problem+json answer for ``exc``, with Mailchimp's Link and X-Request-Id headers."""
    instance = str(uuid.uuid4())
    body: dict[str, Any] = {
        "type": ERROR_TYPE,
        "title": exc.title,
        "status": exc.status,
        "detail": exc.detail,
        "instance": instance,
    }
    if exc.errors is not None:
        body["errors"] = exc.errors
    return web.Response(
        status=exc.status,
        body=json.dumps(body).encode(),
        content_type="application/problem+json",
        headers={"Link": _LINK, "X-Request-Id": instance},
    )


def invalid(field: str, message: str) -> MailchimpError:
    return MailchimpError(400, "Invalid Resource", INVALID_RESOURCE, [{"field": field, "message": message}])


def not_found() -> MailchimpError:
    return MailchimpError(404, "Resource Not Found", "The requested resource could not be found.")


def subscriber_hash(email: str) -> str:
    """MD5 hex of the lower-cased address (providers.md 4.2)."""
    return hashlib.md5(email.strip().lower().encode()).hexdigest()


def iso(at: float) -> str:
    """Mailchimp's timestamp format, e.g. 2024-01-01T12:00:00+00:00."""
    return datetime.fromtimestamp(int(at), UTC).isoformat()


def parse_iso(value: str, field: str) -> float:
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace(" ", "T"))
    except ValueError:
        raise invalid(field, f"Invalid date-time: {value}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def check_fields(body: dict[str, Any], allowed: frozenset[str], *, prefix: str = "") -> None:
    """Refuse properties the resource does not have (sandbox choice, see the module README)."""
    for key in body:
        if key not in allowed:
            raise invalid(prefix + key, f"Unknown property: {prefix}{key}")


def require(body: dict[str, Any], *names: str) -> None:
    missing = [n for n in names if body.get(n) in (None, "")]
    if missing:
        raise invalid("", f"Required fields were not provided: {', '.join(missing)}")


_JSON_NAMES = {dict: "object", list: "array", str: "string", int: "integer", float: "number", bool: "boolean"}


def expect(body: dict[str, Any], name: str, kind: type, *, prefix: str = "") -> Any:
    """``body[name]`` if absent or of JSON type ``kind``; else Mailchimp's schema message."""
    value = body.get(name)
    if value is not None and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
        found = _JSON_NAMES.get(type(value), "NULL")
        raise invalid(prefix + name, f"Schema describes {_JSON_NAMES[kind]}, {found} found instead")
    return value
