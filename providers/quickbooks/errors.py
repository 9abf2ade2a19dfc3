"""QuickBooks Online faults mapped onto the categories of CONTRACT section 5.

Intuit answers errors in three shapes (providers.md 3.3, 3.4):

- ``{"Fault": {"Error": [{"Message", "Detail", "code", "element"}], "type": "ValidationFault"}}``,
  sometimes with HTTP 200 (so a 2xx body, and every batch item, is checked for a Fault too);
- ``{"fault": {"error": [{"message", "detail", "code"}], "type": "AUTHENTICATION"}}``, lowercase,
  for an expired or bad token (code 3200);
- the throttle reply, XML even when JSON was asked for:
  ``<IntuitResponse><Fault type="SERVICE"><Error code="3001">...`` with HTTP 429.

The fault type decides (ValidationFault, AuthenticationFault, AuthorizationFault, SystemFault),
then the code (3001 throttle, 3200 token, 5010 stale SyncToken, 610 not found), then the
HTTP status. The shared helper (providers/http.py) hands :func:`error_hook` the parsed JSON or
None; a body that is not JSON (the XML throttle reply, an HTML page, truncated JSON) falls to
the helper's status mapping: 429 is rate_limit, 5xx provider, a 2xx garbage body provider.
"""

from __future__ import annotations

from typing import Any
from xml.etree import ElementTree

from service.errors import (
    AuthenticationError,
    AuthorizationError,
    IntegrationError,
    ProviderError,
    RateLimitError,
    ValidationError,
)

THROTTLE_CODE = "3001"
TOKEN_CODE = "3200"
STALE_SYNC_TOKEN_CODE = "5010"
DUPLICATE_NAME_CODE = "6240"
NOT_FOUND_CODE = "610"
THROTTLE_WAIT_S = 60.0  # Intuit: on a 429 wait 60 s (providers.md 3.4); Retry-After unconfirmed


class QuickBooksFaultError(ValidationError):
    """A fault that fails the record without retry (ValidationFault and other 4xx)."""


class StaleSyncTokenError(QuickBooksFaultError):
    """5010: the SyncToken sent is not the current one; re-read and retry once."""


class DuplicateNameError(QuickBooksFaultError):
    """6240: another customer, vendor or employee has this DisplayName."""


class ObjectNotFoundError(QuickBooksFaultError):
    """610: the object does not exist (or was made inactive / deleted)."""


_BY_CODE: dict[str, type[IntegrationError]] = {
    STALE_SYNC_TOKEN_CODE: StaleSyncTokenError,
    DUPLICATE_NAME_CODE: DuplicateNameError,
    NOT_FOUND_CODE: ObjectNotFoundError,
    THROTTLE_CODE: RateLimitError,
    TOKEN_CODE: AuthenticationError,
}
_BY_TYPE: dict[str, type[IntegrationError]] = {
    "validationfault": QuickBooksFaultError,
    "authenticationfault": AuthenticationError,
    "authentication": AuthenticationError,
    "authorizationfault": AuthorizationError,
    "authorization": AuthorizationError,
    "systemfault": ProviderError,
}


def find_fault(payload: Any) -> dict[str, Any] | None:
    """``Fault`` or lowercase ``fault`` as ``{"type", "errors": [{code, message, detail, element}]}``;
    also the XML ``<IntuitResponse><Fault>`` QuickBooks answers its throttle with, even to
    ``Accept: application/json`` (and once with 403 rather than 429: providers.md 3.6)."""
    if isinstance(payload, bytes):
        return _xml_fault(payload)
    if not isinstance(payload, dict):
        return None
    fault = payload.get("Fault", payload.get("fault"))
    if not isinstance(fault, dict):
        return None
    raw = fault.get("Error", fault.get("error")) or []
    errors = [
        {
            "code": str(e.get("code") or "").lstrip("0") or str(e.get("code") or ""),
            "message": str(e.get("Message") or e.get("message") or ""),
            "detail": str(e.get("Detail") or e.get("detail") or ""),
            "element": str(e.get("element") or ""),
        }
        for e in (raw if isinstance(raw, list) else [raw]) if isinstance(e, dict)
    ]
    return {"type": str(fault.get("type") or ""), "errors": errors}


def _xml_fault(body: bytes) -> dict[str, Any] | None:
    if not body.lstrip().startswith(b"<"):
        return None
    try:
        root = ElementTree.fromstring(body)
    except ElementTree.ParseError:
        return None
    fault = root if _local(root.tag) == "Fault" else next((e for e in root.iter() if _local(e.tag) == "Fault"), None)
    if fault is None:
        return None
    errors = []
    for error in (e for e in fault if _local(e.tag) == "Error"):
        texts = {_local(child.tag): (child.text or "").strip() for child in error}
        code = str(error.get("code") or "")
        errors.append({"code": code.lstrip("0") or code, "message": texts.get("Message", ""),
                       "detail": texts.get("Detail", ""), "element": str(error.get("element") or "")})
    return {"type": str(fault.get("type") or ""), "errors": errors}


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]  # without an XML namespace


def describe(fault: dict[str, Any]) -> str:
    """One line: fault type, code, detail (or message) and element."""
    first = fault["errors"][0] if fault["errors"] else {}
    text = first.get("detail") or first.get("message") or "no detail"
    element = f" (element {first['element']})" if first.get("element") else ""
    return f"{fault['type'] or 'Fault'} {first.get('code') or ''}: {text}{element}".replace(" :", ":")


def fault_code(fault: dict[str, Any]) -> str:
    """The first error's code ('' when none)."""
    return str(fault["errors"][0]["code"]) if fault["errors"] else ""


def classify(fault: dict[str, Any], status: int | None) -> type[IntegrationError]:
    """The error class for a normalised fault."""
    by_code = _BY_CODE.get(fault_code(fault))
    if by_code is not None:
        return by_code
    if status == 429:
        return RateLimitError
    by_type = _BY_TYPE.get(fault["type"].lower())
    if by_type is not None:
        return by_type
    if status == 401:
        return AuthenticationError
    if status == 403:
        return AuthorizationError
    if status is not None and status >= 500:
        return ProviderError
    return QuickBooksFaultError


def error_hook(status: int, body: Any) -> tuple[type[IntegrationError] | None, str | None]:
    """The shared helper's hook: the fault's class and message, or None for its default."""
    fault = find_fault(body)
    if fault is None:
        return None, None
    return classify(fault, status), describe(fault)


def error_from_fault(fault: dict[str, Any], *, status: int | None, operation: str) -> IntegrationError:
    """The error for a fault found in a 2xx body or a batch item."""
    cls = classify(fault, status)
    message = f"quickbooks {operation}: {describe(fault)}"
    if cls is RateLimitError:
        return RateLimitError(message, retry_after_s=THROTTLE_WAIT_S, status=status)
    if cls is ProviderError:
        return ProviderError(message, status=status, retryable=True)
    return cls(message, status=status)
