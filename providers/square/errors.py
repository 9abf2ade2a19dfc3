"""Square's error body mapped onto the categories of CONTRACT section 5.

Square answers ``{"errors": [{"category", "code", "detail", "field"}]}`` with the status of
the first error (providers.md 2.4). The code decides first (it is the most precise), then the
category, then the HTTP status. :func:`error_hook` plugs this into the shared helper
(providers/http.py), which also turns a body that is not JSON (an HTML page, truncated
JSON) into a one-line ProviderError; :func:`error_from_square` builds the error for an
``errors`` list found inside a 2xx body.
"""

from __future__ import annotations

from typing import Any

from service.errors import (
    AuthenticationError,
    AuthorizationError,
    IntegrationError,
    ProviderError,
    RateLimitError,
    ValidationError,
)

_AUTHENTICATION_CODES = frozenset({
    "UNAUTHORIZED", "ACCESS_TOKEN_EXPIRED", "ACCESS_TOKEN_REVOKED", "CLIENT_DISABLED",
})
_AUTHORIZATION_CODES = frozenset({
    "FORBIDDEN", "INSUFFICIENT_SCOPES", "APPLICATION_DISABLED", "MERCHANT_SUBSCRIPTION_NOT_FOUND",
})
_PROVIDER_CODES = frozenset({"INTERNAL_SERVER_ERROR", "SERVICE_UNAVAILABLE", "GATEWAY_TIMEOUT"})
_BY_CATEGORY: dict[str, type[IntegrationError]] = {
    "AUTHENTICATION_ERROR": AuthenticationError,
    "RATE_LIMIT_ERROR": RateLimitError,
    "INVALID_REQUEST_ERROR": ValidationError,
    "PAYMENT_METHOD_ERROR": ValidationError,
    "REFUND_ERROR": ValidationError,
    "MERCHANT_SUBSCRIPTION_ERROR": AuthorizationError,
    "API_ERROR": ProviderError,
    "EXTERNAL_VENDOR_ERROR": ProviderError,
}


class NotFoundError(ValidationError):
    """Square's NOT_FOUND / GONE: the object does not exist (fetch_record answers None)."""


class VersionConflictError(ValidationError):
    """A stale ``version`` on an update (CONFLICT / VERSION_MISMATCH): re-read, retry once."""


class IdempotencyKeyReusedError(ValidationError):
    """The same idempotency key with a different request: a bug, never retried."""


_SPECIAL_CODES: dict[str, type[IntegrationError]] = {
    "NOT_FOUND": NotFoundError,
    "GONE": NotFoundError,
    "IDEMPOTENCY_KEY_REUSED": IdempotencyKeyReusedError,
    "CONFLICT": VersionConflictError,
    "VERSION_MISMATCH": VersionConflictError,
}


def first_error(payload: Any) -> dict[str, Any] | None:
    """The first entry of Square's ``errors`` list, or None when the shape is different."""
    if isinstance(payload, dict) and isinstance(payload.get("errors"), list) and payload["errors"]:
        first = payload["errors"][0]
        return first if isinstance(first, dict) else None
    return None


def describe(error: dict[str, Any]) -> str:
    """One line: code, detail and field."""
    code = str(error.get("code") or error.get("category") or "ERROR")
    field = error.get("field")
    return f"{code}: {error.get('detail') or 'no detail'}" + (f" (field {field})" if field else "")


def classify(error: dict[str, Any], status: int | None) -> type[IntegrationError]:
    """The error class for one Square error object."""
    code, category = str(error.get("code") or ""), str(error.get("category") or "")
    detail = str(error.get("detail") or "").lower()
    if code in _SPECIAL_CODES:
        return _SPECIAL_CODES[code]
    if status in (400, 409) and "version" in detail and category == "INVALID_REQUEST_ERROR":
        return VersionConflictError
    if code == "RATE_LIMITED" or category == "RATE_LIMIT_ERROR" or status == 429:
        return RateLimitError
    if code in _AUTHENTICATION_CODES or status == 401:
        return AuthenticationError
    if code in _AUTHORIZATION_CODES or status == 403:
        return AuthorizationError
    if code in _PROVIDER_CODES or (status is not None and status >= 500):
        return ProviderError
    return _BY_CATEGORY.get(category, ValidationError)


def error_hook(status: int, body: Any) -> tuple[type[IntegrationError] | None, str | None]:
    """The shared helper's hook: Square's error class and message, or None for its default."""
    error = first_error(body)
    if error is None:
        return None, None
    return classify(error, status), describe(error)


def error_from_square(error: dict[str, Any], *, status: int | None, operation: str) -> IntegrationError:
    """The error for one Square error object found in a body (a 2xx, or a batch item)."""
    cls = classify(error, status)
    message = f"square {operation}: {describe(error)}"
    if cls is ProviderError:
        return ProviderError(message, status=status, retryable=True)
    return cls(message, status=status)
