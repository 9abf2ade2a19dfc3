"""What a secret must look like, per provider and kind, and the clear metadata it carries.

Pure checks (no I/O): ``check_secret`` refuses a malformed secret with ValidationError
before anything is encrypted, and returns the non-secret facts (expiry, realm, merchant,
server prefix, rate-limit account) that are stored in clear beside the ciphertext.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from service.config import PROVIDERS
from service.errors import UnknownEntityError, ValidationError

KINDS: tuple[str, ...] = ("api_key", "oauth", "webhook_secret")
KINDS_BY_PROVIDER: dict[str, tuple[str, ...]] = {
    "stripe": ("api_key", "webhook_secret"),
    "square": ("api_key", "oauth"),
    "quickbooks": ("oauth",),
    "mailchimp": ("api_key", "oauth", "webhook_secret"),
}
MAX_SECRET_BYTES = 64 * 1024


@dataclass(frozen=True, slots=True)
class SecretMetadata:
    """The non-secret facts a secret carries, kept in clear beside it."""

    expires_at: datetime | None = None
    realm_id: str | None = None
    merchant_id: str | None = None
    server_prefix: str | None = None
    account_id: str | None = None


def _parse_time(value: Any, field: str) -> datetime | None:
    if value in (None, ""):
        return None
    if not isinstance(value, str):
        raise ValidationError(f"oauth secret: {field} must be an RFC 3339 string or null")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise ValidationError(f"oauth secret: {field} is not RFC 3339: {value!r}") from None
    if parsed.tzinfo is None:
        raise ValidationError(f"oauth secret: {field} needs a time zone")
    return parsed.astimezone(UTC)


def fingerprint(secret: str) -> str:
    """A stable, non-reversible account id for a key: 16 hex chars of its SHA-256."""
    return hashlib.sha256(secret.encode()).hexdigest()[:16]


def check_secret(provider: str, kind: str, secret: str) -> SecretMetadata:
    """Validate a secret's shape for its provider and kind; return its metadata."""
    if not secret:
        raise ValidationError("the secret is empty")
    if len(secret.encode()) > MAX_SECRET_BYTES:
        raise ValidationError("the secret is larger than 64 KiB")
    if kind == "oauth":
        return _check_oauth(provider, secret)
    if "\n" in secret or secret != secret.strip():
        raise ValidationError(f"{kind} must be one line without surrounding spaces")
    if provider == "mailchimp" and kind == "api_key":
        key, _, dc = secret.rpartition("-")
        if not key or not dc.isalnum():
            raise ValidationError("mailchimp api_key must look like <key>-<dc>, e.g. abc123-us6")
        return SecretMetadata(server_prefix=dc, account_id=fingerprint(secret))
    if provider == "stripe" and kind == "webhook_secret" and not secret.startswith("whsec_"):
        raise ValidationError("stripe webhook_secret must start with whsec_")
    return SecretMetadata(account_id=fingerprint(secret) if kind == "api_key" else None)


_OAUTH_IDS = {"quickbooks": "realm_id", "square": "merchant_id", "mailchimp": "server_prefix"}


def _check_oauth(provider: str, secret: str) -> SecretMetadata:
    try:
        data = json.loads(secret)
    except ValueError:
        raise ValidationError("oauth secret must be JSON") from None
    if not isinstance(data, dict):
        raise ValidationError("oauth secret must be a JSON object")
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        raise ValidationError("oauth secret: access_token is required")
    for field in ("refresh_token", "expires_at"):
        if field not in data:
            raise ValidationError(f"oauth secret: {field} is required (null where the provider has none)")
    if data["refresh_token"] is not None and not isinstance(data["refresh_token"], str):
        raise ValidationError("oauth secret: refresh_token must be a string or null")
    expires_at = _parse_time(data["expires_at"], "expires_at")
    id_field = _OAUTH_IDS[provider]
    account = data.get(id_field)
    if account is not None and (not isinstance(account, str) or not account):
        raise ValidationError(f"oauth secret: {id_field} must be a non-empty string")
    if provider in ("quickbooks", "mailchimp") and not account:
        raise ValidationError(f"oauth secret: {id_field} is required for {provider}")
    return SecretMetadata(
        expires_at=expires_at,
        realm_id=account if provider == "quickbooks" else None,
        merchant_id=account if provider == "square" else None,
        server_prefix=account if provider == "mailchimp" else None,
        account_id=account or fingerprint(token),
    )


def check_provider_kind(provider: str, kind: str | None = None) -> None:
    """Raise UnknownEntityError / ValidationError for an unknown provider or kind."""
    if provider not in PROVIDERS:
        raise UnknownEntityError(f"unknown provider {provider!r} (one of {', '.join(PROVIDERS)})")
    if kind is not None and kind not in KINDS_BY_PROVIDER[provider]:
        allowed = ", ".join(KINDS_BY_PROVIDER[provider])
        raise ValidationError(f"kind {kind!r} is not used with {provider} (one of {allowed})")

