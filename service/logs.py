"""structlog set-up: JSON or console output, context carried per message, secrets redacted.

The redaction processor is the last defence: code must not log secrets in the first place,
but if a token, key, password or ``Authorization`` value reaches a log call, it is masked
before anything is written. The standard library's loggers (asyncpg, aio-pika, botocore)
are routed through the same processors, so their lines are redacted too.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

import structlog

REDACTED = "[REDACTED]"

_SECRET_KEY = re.compile(
    r"(secret|token|password|passwd|pwd|authorization|api[_-]?key|private[_-]?key|"
    r"master[_-]?key|data[_-]?key|credential|signature|cookie|^key$|^dsn$)",
    re.IGNORECASE,
)
# Secret-sounding names that only ever hold ids, times, counts or paths.
_HARMLESS_KEY = re.compile(r"(_id|_ids|_at|_count|_kind|_source|_version|_status|_file|_path)$")
# Values that look like secrets wherever they appear inside a string.
_SECRET_VALUE = re.compile(
    r"\b(sk|rk|pk)_(live|test)_[0-9A-Za-z]{4,}"        # Stripe keys
    r"|\bwhsec_[0-9A-Za-z+/=_-]{4,}"                    # Stripe webhook secrets
    r"|(?i:bearer|basic)\s+[0-9A-Za-z._~+/=-]{6,}"      # Authorization values
    r"|\bAKIA[0-9A-Z]{16}\b"                            # AWS access key ids
    r"|\bE[AQ]AA[0-9A-Za-z_-]{10,}"                     # Square access / refresh tokens
    r"|\beyJ[0-9A-Za-z_-]{8,}\.[0-9A-Za-z._-]{8,}"      # JWTs / JWEs (QuickBooks tokens)
    r"|\b[0-9a-f]{32}-[a-z]{2,4}\d{1,3}\b"              # Mailchimp API keys (<key>-<dc>)
)
# `name: value` / `name=value` / `"name": "value"` pairs inside free text.
_SECRET_PAIR = re.compile(
    r"(?P<name>[\w-]*(?:secret|token|password|passwd|api[_-]?key)[\w-]*"
    r"[\"']?\s*[:=]\s*[\"']?)(?P<value>(?:(?i:bearer|basic)\s+)?[^\s\"'&,;}]+)",
    re.IGNORECASE,
)
# An Authorization header written as text: the whole value, whatever its scheme.
_AUTH_HEADER = re.compile(
    r"(?P<name>\bauthorization[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\"'\r\n,;}]+)", re.IGNORECASE
)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]*):[^@/\s]+@")


_CHATTY_LIBRARIES = ("asyncio", "aio_pika", "aiormq", "asyncpg", "botocore", "boto3", "urllib3", "s3transfer")


def redact_text(text: str) -> str:
    """Mask secret-shaped substrings, `name=value` secrets and URL passwords in one string."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    text = _AUTH_HEADER.sub(lambda m: m["name"] + REDACTED, text)
    text = _SECRET_VALUE.sub(REDACTED, text)
    return _SECRET_PAIR.sub(lambda m: m["name"] + REDACTED, text)


def _secret_key(key: object) -> bool:
    return isinstance(key, str) and bool(_SECRET_KEY.search(key)) and not _HARMLESS_KEY.search(key)


def _redact_item(key: object, value: Any, depth: int) -> Any:
    # Numbers and flags under a secret-sounding name (`token_expired=True`) are not secrets.
    if _secret_key(key) and value is not None and not isinstance(value, bool | int | float):
        return REDACTED
    return _redact(value, depth + 1)


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 8:
        return REDACTED  # deeper than any log payload of ours: not worth the risk
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return f"<{len(bytes(value))} bytes>"
    if isinstance(value, Mapping):
        return {k: _redact_item(k, v, depth) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redact(item, depth + 1) for item in value]
    if isinstance(value, int | float | bool) or value is None:
        return value
    return redact_text(str(value))  # anything else is rendered as text: redact that text


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact secret-named keys and secret-shaped values."""
    for key in list(event_dict):
        value = event_dict[key]
        event_dict[key] = _redact(value) if key == "event" else _redact_item(key, value, -1)
    return event_dict


def shared_processors() -> list[Any]:
    """Every processor before the renderer, redaction last (tests capture through these)."""
    return [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        structlog.processors.UnicodeDecoder(),
        redact_processor,
    ]


def renderer(fmt: str) -> Any:
    """The final processor: JSON lines, or the console renderer for people at a terminal."""
    if fmt == "console":
        return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
    return structlog.processors.JSONRenderer(sort_keys=False, default=str)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stderr`` is at the time of each line, not at configure time
    (test runners swap it; a handler holding a closed stream would lose lines)."""

    def __init__(self) -> None:
        logging.Handler.__init__(self)

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


def configure_logging(*, level: str = "INFO", fmt: str = "json", final: bool = False) -> None:
    """Configure structlog and the stdlib root logger: one redacting pipeline to stderr.

    ``final=True`` (a long-running process configured once) lets each module's logger be
    built on its first use and kept, instead of being rebuilt on every call."""
    numeric = logging.getLevelNamesMapping()[level.upper()]
    structlog.configure(
        processors=[*shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.stdlib.LoggerFactory(),
        cache_logger_on_first_use=final,
    )
    handler = _StderrHandler()
    handler.setFormatter(structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer(fmt)],
    ))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for name in _CHATTY_LIBRARIES:  # their INFO/DEBUG lines are noise to an operator
        logging.getLogger(name).setLevel(max(numeric, logging.WARNING))


def bind_message_context(**context: Any) -> None:
    """Clear the log context and bind the ids of the unit of work about to start."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        **{k: v for k, v in context.items() if v is not None}
    )
