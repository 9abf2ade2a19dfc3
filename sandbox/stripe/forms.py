"""Stripe request parameters: bracketed form decoding, errors, and parameter checks.

Stripe takes ``application/x-www-form-urlencoded`` bodies (and GET queries) with nested keys
in brackets: ``metadata[k]=v``, ``address[city]=Paris``, ``expand[0]=x`` or ``types[]=x``
(providers.md 1.2). An unknown parameter is a 400 ``parameter_unknown`` naming it.
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import parse_qsl

_KEY = re.compile(r"^([^\[\]]+)((?:\[[^\[\]]*\])*)$")
_PART = re.compile(r"\[([^\[\]]*)\]")
DOCS = "https://stripe.com/docs/error-codes"


class StripeError(Exception):
    """An error Stripe would answer; ``body`` is the ``error`` object."""

    def __init__(
        self,
        status: int,
        *,
        message: str,
        type_: str = "invalid_request_error",
        code: str | None = None,
        param: str | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.body: dict[str, Any] = {"message": message, "type": type_}
        if code is not None:
            self.body["code"] = code
            self.body["doc_url"] = f"{DOCS}/{code.replace('_', '-')}"
        if param is not None:
            self.body["param"] = param
        self.body.update(extra)


def unknown_parameter(name: str) -> StripeError:
    return StripeError(
        400, message=f"Received unknown parameter: {name}", code="parameter_unknown", param=name
    )


def missing_parameter(name: str) -> StripeError:
    return StripeError(400, message=f"Missing required param: {name}.", code="parameter_missing", param=name)


def no_such(kind: str, object_id: str, *, status: int = 404, param: str = "id") -> StripeError:
    return StripeError(status, message=f"No such {kind}: '{object_id}'", code="resource_missing", param=param)


def decode(raw: str) -> dict[str, Any]:
    """Nested parameters from a form body or query string (``a[b][0]=v`` -> {"a": {"b": ["v"]}})."""
    root: dict[str, Any] = {}
    for key, value in parse_qsl(raw, keep_blank_values=True):
        match = _KEY.match(key)
        if match is None:
            raise StripeError(400, message=f"Invalid parameter name: {key}", param=key)
        name, rest = match.groups()
        if not rest:
            root[name] = value
            continue
        parts = _PART.findall(rest)
        node = root.setdefault(name, {})
        if not isinstance(node, dict):
            node = root[name] = {}
        for part in parts[:-1]:
            child = node.get(part or str(len(node)))
            if not isinstance(child, dict):
                child = node[part or str(len(node))] = {}
            node = child
        node[parts[-1] or str(len(node))] = value
    return {k: _listify(v) for k, v in root.items()}


def _listify(value: Any) -> Any:
    """Dicts keyed 0..n-1 become lists, recursively."""
    if not isinstance(value, dict):
        return value
    value = {k: _listify(v) for k, v in value.items()}
    if value and all(k.isdigit() for k in value):
        return [value[k] for k in sorted(value, key=int)]
    return value


def check_known(params: dict[str, Any], allowed: frozenset[str], nested: dict[str, frozenset[str]]) -> None:
    """Raise parameter_unknown for a top-level or nested key Stripe does not take."""
    for key, value in params.items():
        if key not in allowed:
            raise unknown_parameter(key)
        sub = nested.get(key)
        if sub is not None and isinstance(value, dict):
            for subkey in value:
                if subkey not in sub:
                    raise unknown_parameter(f"{key}[{subkey}]")


def as_int(
    params: dict[str, Any], name: str, *, low: int | None = None, high: int | None = None
) -> int | None:
    """An integer parameter (None when absent), with Stripe's messages for bad values."""
    raw = params.get(name)
    if raw is None:
        return None
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise StripeError(
            400, message=f"Invalid integer: {raw}", code="parameter_invalid_integer", param=name
        ) from None
    if low is not None and value < low:
        raise StripeError(400, message=f"This value must be greater than or equal to {low}.", param=name)
    if high is not None and value > high:
        raise StripeError(400, message=f"This value must be less than or equal to {high}.", param=name)
    return value


def as_bool(params: dict[str, Any], name: str) -> bool | None:
    raw = params.get(name)
    if raw is None:
        return None
    if raw in ("true", "false"):
        return bool(raw == "true")
    raise StripeError(400, message=f"Invalid boolean: {raw}", param=name)


def text(params: dict[str, Any], name: str) -> str | None:
    """A string parameter; an empty string means "unset" (null)."""
    raw = params.get(name)
    if raw is None or raw == "":
        return None
    if not isinstance(raw, str):
        raise StripeError(400, message=f"Invalid string: {raw!r}", param=name)
    return raw


def created_filter(
    params: dict[str, Any], name: str = "created"
) -> tuple[int | None, int | None, int | None, int | None]:
    """``created`` as (gt, gte, lt, lte); ``created=N`` means exactly N."""
    raw = params.get(name)
    if raw is None:
        return (None, None, None, None)
    if isinstance(raw, str):
        exact = as_int({name: raw}, name)
        return (None, exact, None, exact)
    if not isinstance(raw, dict):
        raise StripeError(400, message=f"Invalid {name}", param=name)
    for key in raw:
        if key not in ("gt", "gte", "lt", "lte"):
            raise unknown_parameter(f"{name}[{key}]")
    return tuple(as_int(raw, k) for k in ("gt", "gte", "lt", "lte"))  # type: ignore[return-value]


def in_range(value: int, bounds: tuple[int | None, int | None, int | None, int | None]) -> bool:
    gt, gte, lt, lte = bounds
    return not (
        (gt is not None and value <= gt)
        or (gte is not None and value < gte)
        or (lt is not None and value >= lt)
        or (lte is not None and value > lte)
    )


def metadata_update(current: dict[str, str], raw: Any) -> dict[str, str]:
    """Stripe metadata semantics: keys merge, an empty value deletes, ``metadata=`` clears."""
    if raw is None:
        return current
    if raw == "":
        return {}
    if not isinstance(raw, dict):
        raise StripeError(400, message="Invalid metadata: must be an object", param="metadata")
    merged = dict(current)
    for key, value in raw.items():
        if len(key) > 40:
            raise StripeError(
                400, message="Metadata keys can have up to 40 characters.", param=f"metadata[{key}]"
            )
        if not isinstance(value, str):
            raise StripeError(400, message="Invalid metadata value", param=f"metadata[{key}]")
        if value == "":
            merged.pop(key, None)
        elif len(value) > 500:
            raise StripeError(
                400, message="Metadata values can have up to 500 characters.", param=f"metadata[{key}]"
            )
        else:
            merged[key] = value
    if len(merged) > 50:
        raise StripeError(400, message="Metadata can have up to 50 keys.", param="metadata")
    return merged
