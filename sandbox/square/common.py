"""Square building blocks: the error body, strict request schemas, ids, times, cursors.

Square answers every error as ``{"errors": [{"category", "code", "detail", "field"}]}``
with the HTTP status of the first error (providers.md 2.4). Request bodies are checked
against small schemas so that an unknown field is a 400 ``BAD_REQUEST`` naming it, a wrong
type is ``EXPECTED_<TYPE>``, and a missing required field is ``MISSING_REQUIRED_PARAMETER``.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import wraps
from typing import Any

from aiohttp import web

DEFAULT_VERSION = "2026-09-16"  # the app's pinned version when a call sends no Square-Version
VERSION = re.compile(r"^\d{4}-\d{2}-\d{2}$")
STR, INT, BOOL, ANY = "string", "integer", "boolean", "any"


class SquareError(Exception):
    """An error Square would answer; raised by handlers, rendered by :func:`handler`."""

    def __init__(
        self,
        status: int,
        code: str,
        detail: str,
        *,
        field: str | None = None,
        category: str = "INVALID_REQUEST_ERROR",
    ) -> None:
        super().__init__(detail)
        self.status, self.code, self.detail, self.field, self.category = status, code, detail, field, category

    def response(self) -> web.Response:
        return error_body(self.status, self.category, self.code, self.detail, self.field)


def error_body(
    status: int,
    category: str,
    code: str,
    detail: str | None = None,
    field: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """Square's error envelope."""
    error: dict[str, Any] = {"category": category, "code": code}
    if detail is not None:
        error["detail"] = detail
    if field is not None:
        error["field"] = field
    return json_response({"errors": [error]}, status=status, headers=headers)


def json_response(payload: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    """A compact JSON response (cheaper than aiohttp's default dumps)."""
    return web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
        headers=headers,
    )


Handler = Callable[[web.Request], Awaitable[web.Response]]


def handler(func: Handler) -> Handler:
    """Check ``Square-Version``, echo it, and render a :class:`SquareError` as Square's body."""

    @wraps(func)
    async def wrapped(request: web.Request) -> web.Response:
        version = request.headers.get("Square-Version")
        try:
            if version is not None and not VERSION.match(version):
                raise SquareError(
                    400,
                    "INVALID_SQUARE_VERSION_FORMAT",
                    f"Invalid Square-Version format `{version}`; expected YYYY-MM-DD.",
                )
            response = await func(request)
        except SquareError as exc:
            response = exc.response()
        response.headers["Square-Version"] = version or DEFAULT_VERSION
        return response

    return wrapped


def new_id(length: int) -> str:
    """An upper-case id in Square's style (customers 26, locations 13, merchants 13)."""
    return base64.b32encode(secrets.token_bytes(length)).decode()[:length]  # A-Z2-7, cheap


def order_id() -> str:
    """An order id in Square's mixed-case style."""
    return secrets.token_urlsafe(20).replace("-", "x").replace("_", "y")[:27]


def rfc3339(ts: float) -> str:
    """Square's timestamp format: UTC with milliseconds, e.g. 2016-03-23T20:21:54.859Z."""
    whole = int(ts)
    millis = int(round((ts - whole) * 1000))
    if millis == 1000:
        whole, millis = whole + 1, 0
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{millis:03d}Z"


def parse_rfc3339(value: Any, field: str) -> float:
    """Unix seconds from an RFC 3339 value, else Square's INVALID_TIME."""
    if not isinstance(value, str):
        raise SquareError(400, "EXPECTED_STRING", f"Expected a string value for `{field}`.", field=field)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SquareError(
            400, "INVALID_TIME", f"Invalid RFC 3339 timestamp `{value}`.", field=field
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def parse_json(body: bytes) -> dict[str, Any]:
    """The request's JSON object, else Square's 400."""
    if not body.strip():
        return {}
    try:
        payload = json.loads(body)
    except ValueError:
        raise SquareError(400, "BAD_REQUEST", "The request body is not valid JSON.") from None
    if not isinstance(payload, dict):
        raise SquareError(400, "EXPECTED_JSON_BODY", "Expected a JSON object as the request body.")
    return payload


_TYPE_CODES = {STR: "EXPECTED_STRING", INT: "EXPECTED_INTEGER", BOOL: "EXPECTED_BOOLEAN"}


def validate(value: Any, schema: Any, path: str = "") -> None:
    """Check ``value`` against ``schema`` (a type name, a dict of fields, [item], or ("map", item))."""
    if value is None or schema == ANY:
        return  # null is allowed anywhere: on updates it clears the field
    if isinstance(schema, str):
        _check_scalar(value, schema, path)
    elif isinstance(schema, dict):
        _check_object(value, schema, path)
    elif isinstance(schema, list):
        if not isinstance(value, list):
            raise SquareError(400, "EXPECTED_ARRAY", f"Expected an array for `{path}`.", field=path)
        for index, item in enumerate(value):
            validate(item, schema[0], f"{path}[{index}]")
    else:  # ("map", item schema)
        if not isinstance(value, dict):
            raise SquareError(400, "EXPECTED_MAP", f"Expected a map for `{path}`.", field=path)
        for key, item in value.items():
            validate(item, schema[1], f"{path}.{key}")


def _check_scalar(value: Any, kind: str, path: str) -> None:
    ok = (
        isinstance(value, str)
        if kind == STR
        else isinstance(value, bool)
        if kind == BOOL
        else isinstance(value, int) and not isinstance(value, bool)
    )
    if not ok:
        raise SquareError(400, _TYPE_CODES[kind], f"Expected {kind} value for `{path}`.", field=path)


def _check_object(value: Any, schema: dict[str, Any], path: str) -> None:
    if not isinstance(value, dict):
        raise SquareError(400, "EXPECTED_OBJECT", f"Expected an object for `{path}`.", field=path)
    for key, item in value.items():
        sub = f"{path}.{key}" if path else key
        if key not in schema:
            raise SquareError(400, "BAD_REQUEST", f"The field named '{key}' is unrecognized.", field=sub)
        validate(item, schema[key], sub)


def require(payload: dict[str, Any], name: str, path: str = "") -> Any:
    """The field's value, else MISSING_REQUIRED_PARAMETER."""
    value = payload.get(name)
    if value is None or value == "":
        field = f"{path}.{name}" if path else name
        raise SquareError(
            400, "MISSING_REQUIRED_PARAMETER", f"Missing required parameter `{field}`.", field=field
        )
    return value


def check_limit(value: Any, *, low: int, high: int, default: int, field: str = "limit") -> int:
    """A page size within [low, high], else VALUE_TOO_LOW / VALUE_TOO_HIGH."""
    if value is None:
        return default
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise SquareError(
                400, "EXPECTED_INTEGER", f"Expected integer value for `{field}`.", field=field
            ) from None
    if value < low:
        raise SquareError(400, "VALUE_TOO_LOW", f"`{field}` must be at least {low}.", field=field)
    if value > high:
        raise SquareError(400, "VALUE_TOO_HIGH", f"`{field}` must be at most {high}.", field=field)
    return int(value)


def encode_cursor(kind: str, position: int) -> str:
    """An opaque cursor that remembers the next position of a listing."""
    return base64.urlsafe_b64encode(f"{kind}:{position}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, kind: str) -> int:
    """The position a cursor carries (0 without one), else INVALID_CURSOR."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        tag, position = text.split(":", 1)
        if tag == kind:
            return int(position)
    except (ValueError, UnicodeDecodeError):
        pass
    raise SquareError(400, "INVALID_CURSOR", "The pagination cursor is invalid.", field="cursor")


def check_query(request: web.Request, allowed: frozenset[str]) -> None:
    """Reject query parameters the endpoint does not have (names the first one)."""
    for name in request.query:
        if name not in allowed:
            raise SquareError(
                400, "BAD_REQUEST", f"The query parameter '{name}' is unrecognized.", field=name
            )


def time_range(spec: Any, field: str) -> tuple[float | None, float | None]:
    """A Square TimeRange ``{start_at, end_at}`` as Unix seconds (inclusive bounds)."""
    validate(spec, {"start_at": STR, "end_at": STR}, field)
    spec = spec or {}
    start = parse_rfc3339(spec["start_at"], f"{field}.start_at") if spec.get("start_at") else None
    end = parse_rfc3339(spec["end_at"], f"{field}.end_at") if spec.get("end_at") else None
    return start, end


def in_range(ts: float, bounds: tuple[float | None, float | None]) -> bool:
    start, end = bounds
    return (start is None or ts >= start) and (end is None or ts <= end)
