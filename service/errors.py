"""The service's error tree: one class per category of CONTRACT section 5.

    IntegrationError (category, severity, retryable)
    ├── AuthenticationError    authentication  high      not retried
    ├── AuthorizationError     authorization   high      not retried
    ├── RateLimitError         rate_limit      low       retried (honours retry_after_s)
    ├── ValidationError        validation      medium    not retried
    │   └── UnknownEntityError     an unknown provider, entity, venue, job or dead letter
    ├── NetworkError           network         medium    retried
    ├── ProviderError          provider        medium    retried when status >= 500
    ├── DataError              data            medium    not retried
    ├── ConfigurationError     configuration   critical  not retried
    ├── CryptoError            configuration   critical  not retried (wrong key, context or tamper)
    └── UnknownError           unknown         high      not retried

Foreign exceptions (aiohttp, asyncpg, botocore, stripe) are translated where they enter
our code and chained with ``from``; everything past that boundary sees only these.
"""

from __future__ import annotations

from typing import ClassVar, Literal

Category = Literal[
    "authentication", "authorization", "rate_limit", "validation", "network",
    "provider", "data", "configuration", "unknown",
]
Severity = Literal["low", "medium", "high", "critical"]

CATEGORIES: tuple[Category, ...] = (
    "authentication", "authorization", "rate_limit", "validation", "network",
    "provider", "data", "configuration", "unknown",
)
SEVERITIES: tuple[Severity, ...] = ("low", "medium", "high", "critical")


class IntegrationError(Exception):
    """Base of every error the service raises on purpose; the message is one line."""

    category: ClassVar[Category] = "unknown"
    severity: ClassVar[Severity] = "high"
    default_retryable: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after_s: float | None = None,
        status: int | None = None,
    ) -> None:
        # One line, and text PostgreSQL can store (a provider's garbage may hold NUL, which
        # a job's errors, a record log row or a dead letter's reason could not take).
        one_line = " ".join(str(message).replace("\x00", "\ufffd").split())
        super().__init__(one_line)
        self.message = one_line
        self.retryable = self.default_retryable if retryable is None else retryable
        self.retry_after_s = retry_after_s
        self.status = status

    def __str__(self) -> str:
        return self.message


class AuthenticationError(IntegrationError):
    category = "authentication"
    severity = "high"


class AuthorizationError(IntegrationError):
    category = "authorization"
    severity = "high"


class RateLimitError(IntegrationError):
    category = "rate_limit"
    severity = "low"
    default_retryable = True


class ValidationError(IntegrationError):
    category = "validation"
    severity = "medium"


class UnknownEntityError(ValidationError):
    """An unknown provider, entity, venue, job or dead-letter id (CLI exit status 2)."""


class NetworkError(IntegrationError):
    category = "network"
    severity = "medium"
    default_retryable = True


class ProviderError(IntegrationError):
    category = "provider"
    severity = "medium"

    def __init__(self, message: str, *, status: int | None = None, **kwargs: object) -> None:
        retryable = kwargs.pop("retryable", None)
        if retryable is None:
            retryable = status is None or status >= 500
        super().__init__(message, status=status, retryable=bool(retryable), **kwargs)  # type: ignore[arg-type]


class DataError(IntegrationError):
    category = "data"
    severity = "medium"


class ConfigurationError(IntegrationError):
    category = "configuration"
    severity = "critical"


class CryptoError(ConfigurationError):
    """Decryption failed: a wrong key or encryption context, or a tampered ciphertext."""


class UnknownError(IntegrationError):
    category = "unknown"
    severity = "high"


BY_CATEGORY: dict[str, type[IntegrationError]] = {
    "authentication": AuthenticationError,
    "authorization": AuthorizationError,
    "rate_limit": RateLimitError,
    "validation": ValidationError,
    "network": NetworkError,
    "provider": ProviderError,
    "data": DataError,
    "configuration": ConfigurationError,
    "unknown": UnknownError,
}


def classify(exc: BaseException) -> IntegrationError:
    """Return ``exc`` if it is ours, else an UnknownError that names its type."""
    if isinstance(exc, IntegrationError):
        return exc
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    detail = f": {text}" if text else ""
    return UnknownError(f"{type(exc).__name__}{detail}")
