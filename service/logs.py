"""structlog set-up: JSON or console output, context carried per message, secrets redacted.

The redaction processor is the last defence: code must not log secrets in the first place,
but if a token, key, password or ``Authorization`` value reaches a log call, it is masked
before anything is written.
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
    r"(secret|token|password|passwd|authorization|api[_-]?key|private[_-]?key|"
    r"master[_-]?key|credential|signature|cookie|^key$)",
    re.IGNORECASE,
)
# Values that look like secrets wherever they appear inside a string.
_SECRET_VALUE = re.compile(
    r"(sk|rk|pk)_(live|test)_[0-9A-Za-z]{4,}"   # Stripe keys
    r"|whsec_[0-9A-Za-z+/=_-]{4,}"              # Stripe webhook secrets
    r"|(?i:bearer|basic)\s+[0-9A-Za-z._~+/=-]{8,}"  # Authorization values
    r"|AKIA[0-9A-Z]{16}"                         # AWS access key ids
    r"|EAAA[0-9A-Za-z_-]{10,}"                   # Square access tokens
    r"|\b[0-9a-f]{32}-us\d{1,2}\b"               # Mailchimp API keys
)
_URL_PASSWORD = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):[^@/\s]+@")


def redact_text(text: str) -> str:
    """Mask secret-shaped substrings and URL passwords in one string."""
    text = _URL_PASSWORD.sub(lambda m: f"{m['scheme']}{m['user']}:***@", text)
    return _SECRET_VALUE.sub(REDACTED, text)


def _redact(value: Any, depth: int = 0) -> Any:
    if depth > 6:
        return value
    if isinstance(value, str):
        return redact_text(value)
    if isinstance(value, Mapping):
        return {
            k: (REDACTED if isinstance(k, str) and _SECRET_KEY.search(k) and v is not None
                else _redact(v, depth + 1))
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return [_redact(item, depth + 1) for item in value]
    return value


def redact_processor(
    _logger: Any, _method: str, event_dict: MutableMapping[str, Any]
) -> MutableMapping[str, Any]:
    """structlog processor: redact secret-named keys and secret-shaped values."""
    for key in list(event_dict):
        value = event_dict[key]
        if key != "event" and _SECRET_KEY.search(key) and value is not None:
            event_dict[key] = REDACTED
        else:
            event_dict[key] = _redact(value)
    return event_dict


def configure_logging(*, level: str = "INFO", fmt: str = "json") -> None:
    """Configure structlog (and the stdlib root logger) to write to stderr."""
    numeric = logging.getLevelNamesMapping()[level]
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())
        if fmt == "console" else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            redact_processor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric),
        logger_factory=structlog.PrintLoggerFactory(file=sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric, logging.WARNING), stream=sys.stderr, force=True)


def bind_message_context(**context: Any) -> None:
    """Clear the log context and bind the ids of the unit of work about to start."""
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        **{k: v for k, v in context.items() if v is not None}
    )
