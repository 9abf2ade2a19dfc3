"""QuickBooks Online building blocks: Fault bodies, times, JSON answers (providers.md 3.1-3.4).

Validation and business errors are ``{"Fault": {"Error": [{"Message", "Detail", "code",
"element"}], "type": "ValidationFault"}, "time": ...}`` with status 400; authentication
failures are the lowercase ``{"fault": {"error": [...], "type": "AUTHENTICATION"}}`` with
401; throttling is an XML ``IntuitResponse`` with 429 even when JSON was asked for.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from datetime import date, datetime, timedelta, timezone
from functools import wraps
from typing import Any
from xml.sax.saxutils import escape

from aiohttp import web

# Sandbox companies keep US Pacific time; shown as a fixed -08:00 offset (no DST), as QBO
# renders MetaData times in the company's zone with whole seconds.
COMPANY_TZ = timezone(timedelta(hours=-8))
THROTTLE_XML = (
    '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
    '<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{time}">'
    '<Fault type="SERVICE"><Error code="3001">'
    "<Message>message=ThrottleExceeded; errorCode=003001; statusCode=429</Message>"
    "<Detail>The request limit was reached.  Try again later</Detail>"
    "</Error></Fault></IntuitResponse>"
)


class QBError(Exception):
    """A Fault QuickBooks would answer; raised by handlers, rendered by :func:`handler`."""

    def __init__(
        self,
        code: str,
        message: str,
        detail: str,
        *,
        element: str = "",
        status: int = 400,
        fault_type: str = "ValidationFault",
    ) -> None:
        super().__init__(detail)
        self.code, self.message, self.detail, self.element = code, message, detail, element
        self.status, self.fault_type = status, fault_type

    def fault(self) -> dict[str, Any]:
        error = {"Message": self.message, "Detail": self.detail, "code": self.code}
        if self.element:
            error["element"] = self.element
        return {"Error": [error], "type": self.fault_type}


def qb_time(ts: float, *, millis: bool = False) -> str:
    """A company-zone timestamp: whole seconds for MetaData, milliseconds for ``time``."""
    moment = datetime.fromtimestamp(ts, COMPANY_TZ)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    if millis:
        text += f".{moment.microsecond // 1000:03d}"
    return text + "-08:00"


def qb_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, COMPANY_TZ).strftime("%Y-%m-%d")


def parse_time(value: str) -> float:
    """Unix seconds from a query or CDC time ('2025-01-01', '...T10:00:00-08:00', '...Z').

    A bare date is midnight in the company's zone; a time without offset is company time.
    Raises ValueError for anything else.
    """
    text = value.strip()
    if "T" not in text:
        day = date.fromisoformat(text)
        return datetime(day.year, day.month, day.day, tzinfo=COMPANY_TZ).timestamp()
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=COMPANY_TZ)
    return parsed.timestamp()


def answer(payload: dict[str, Any], now: float, *, status: int = 200) -> web.Response:
    """A JSON answer with QBO's trailing ``time``."""
    payload["time"] = qb_time(now, millis=True)
    return web.Response(
        body=json.dumps(payload, separators=(",", ":")).encode(),
        status=status,
        content_type="application/json",
    )


def fault_response(error: QBError, now: float) -> web.Response:
    return answer({"Fault": error.fault()}, now, status=error.status)


def auth_fault(detail: str, now: float) -> web.Response:
    """The lowercase 401 body QBO sends for an expired, revoked or unknown token."""
    body = {
        "fault": {
            "error": [
                {
                    "message": "message=AuthenticationFailed; errorCode=003200; statusCode=401",
                    "detail": detail,
                    "code": "3200",
                }
            ],
            "type": "AUTHENTICATION",
        },
        "time": qb_time(now, millis=True),
    }
    return web.Response(
        body=json.dumps(body).encode(),
        status=401,
        content_type="application/json",
        headers={"WWW-Authenticate": 'Bearer realm="Intuit", error="invalid_token"'},
    )


def throttle_response(now: float) -> web.Response:
    return web.Response(
        text=THROTTLE_XML.format(time=qb_time(now, millis=True)),
        status=429,
        content_type="application/xml",
    )


def not_found(entity: str, entity_id: str) -> QBError:
    return QBError(
        "610",
        "Object Not Found",
        "Object Not Found : Something you're trying to use has been made inactive. "
        "Check the fields with accounts, customers, items, vendors or employees.",
    )


def required(name: str) -> QBError:
    return QBError(
        "2020",
        "Required param missing, need to supply the required value for the API",
        f"Required parameter {name} is missing in the request",
        element=name,
    )


def unsupported(name: str, entity: str) -> QBError:
    return QBError(
        "2010",
        "Request has invalid or unsupported property",
        f'Property Name:Unrecognized field "{name}" (class com.intuit.schema.finance.v3.{entity}), '
        "not marked as ignorable specified value is not supported",
        element=name,
    )


def parse_body(body: bytes) -> dict[str, Any]:
    """The JSON object of a request, else QBO's deserialization fault."""
    try:
        payload = json.loads(body or b"{}")
    except ValueError:
        payload = None
    if not isinstance(payload, dict):
        raise QBError(
            "2500",
            "Invalid Request",
            "Request is malformed: the body is not a JSON object (check Content-Type: application/json)",
        )
    return payload


Handler = Callable[[web.Request], Awaitable[web.Response]]


def handler(clock: Callable[[], float]) -> Callable[[Handler], Handler]:
    """Render a :class:`QBError` as a Fault body, and answer XML unless JSON was asked for."""

    def decorate(func: Handler) -> Handler:
        @wraps(func)
        async def wrapped(request: web.Request) -> web.Response:
            try:
                response = await func(request)
            except QBError as exc:
                response = fault_response(exc, clock())
            if "json" not in request.headers.get("Accept", "") and isinstance(response.body, bytes):
                return web.Response(  # QBO's default representation is XML
                    text=to_xml(json.loads(response.body)),
                    status=response.status,
                    content_type="application/xml",
                )
            return response

        return wrapped

    return decorate


XML_ATTRIBUTES = frozenset(
    {
        "domain",
        "sparse",
        "startPosition",
        "maxResults",
        "totalCount",
        "type",
        "code",
        "element",
        "name",
        "status",
    }
)


def _xml(name: str, value: Any) -> str:
    if isinstance(value, list):
        return "".join(_xml(name, item) for item in value)
    if not isinstance(value, dict):
        return f"<{name}>{_xml_text(value)}</{name}>"
    attrs = "".join(
        f' {k}="{_xml_text(v).replace(chr(34), "&quot;")}"'
        for k, v in value.items()
        if k in XML_ATTRIBUTES and not isinstance(v, dict | list)
    )
    if "value" in value and not isinstance(
        value["value"], dict | list
    ):  # references: <CustomerRef name="">1<
        return f"<{name}{attrs}>{_xml_text(value['value'])}</{name}>"
    inner = "".join(
        _xml(k, v) for k, v in value.items() if k not in XML_ATTRIBUTES or isinstance(v, dict | list)
    )
    return f"<{name}{attrs}>{inner}</{name}>"


def _xml_text(value: Any) -> str:
    return str(value).lower() if isinstance(value, bool) else escape(str(value))


def to_xml(payload: dict[str, Any]) -> str:
    """An ``IntuitResponse`` document for a JSON answer (close to QBO's XML, not byte-exact)."""
    inner = "".join(_xml(k, v) for k, v in payload.items() if k != "time")
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>'
        f'<IntuitResponse xmlns="http://schema.intuit.com/finance/v3" time="{payload.get("time", "")}">'
        f"{inner}</IntuitResponse>"
    )
