"""The credential vault: envelope encryption of per-venue secrets in PostgreSQL.

Each credential version gets a fresh 256-bit data key. The secret is sealed with
AES-256-GCM under that key, with the encryption context (venue, provider, kind) bound as
associated data; the data key is stored only wrapped: by AWS KMS ``GenerateDataKey`` with
the same encryption context, or (``KMS_ENABLED=false``) by AES-256-GCM under the local
master key. A wrong context, a wrong key or a flipped byte fails with CryptoError, never
garbage. boto3 is blocking, so every KMS call runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.config import PROVIDERS, Settings, decode_master_key
from service.database import credentials as db
from service.errors import (
    ConfigurationError,
    CryptoError,
    NetworkError,
    UnknownEntityError,
    ValidationError,
)

log = structlog.get_logger(__name__)

KINDS: tuple[str, ...] = ("api_key", "oauth", "webhook_secret")
KINDS_BY_PROVIDER: dict[str, tuple[str, ...]] = {
    "stripe": ("api_key", "webhook_secret"),
    "square": ("api_key", "oauth"),
    "quickbooks": ("oauth",),
    "mailchimp": ("api_key", "oauth", "webhook_secret"),
}
STALE_WINDOW = timedelta(minutes=5)
_LOCAL_PREFIX = b"L1"
_MAX_SECRET_BYTES = 64 * 1024


# Key providers -----------------------------------------------------------------------


class KeyProvider(Protocol):
    """Makes and unwraps data keys under an encryption context."""

    source: str
    key_id: str | None

    async def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        """Return (plaintext data key, wrapped data key)."""
        ...

    async def decrypt_data_key(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        """Unwrap a data key; raise CryptoError on a wrong key or context."""
        ...


def _aad(context: dict[str, str]) -> bytes:
    return json.dumps(context, sort_keys=True, separators=(",", ":")).encode()


class LocalKeyProvider:
    """Wraps data keys with a 32-byte master key held by this machine (development)."""

    source = "local"
    key_id = None

    def __init__(self, master_key: bytes) -> None:
        if len(master_key) != 32:
            raise ConfigurationError("the local master key must be 32 bytes")
        self._aead = AESGCM(master_key)

    async def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        data_key = AESGCM.generate_key(bit_length=256)
        nonce = os.urandom(12)
        return data_key, _LOCAL_PREFIX + nonce + self._aead.encrypt(nonce, data_key, _aad(context))

    async def decrypt_data_key(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        if not wrapped.startswith(_LOCAL_PREFIX) or len(wrapped) < 2 + 12 + 16:
            raise CryptoError("data key was not wrapped by the local master key (KMS_ENABLED mismatch?)")
        nonce, body = wrapped[2:14], wrapped[14:]
        try:
            return self._aead.decrypt(nonce, body, _aad(context))
        except InvalidTag:
            raise CryptoError(
                "data key failed to unwrap: wrong LOCAL_MASTER_KEY, encryption context or tampered data"
            ) from None


class KmsKeyProvider:
    """AWS KMS GenerateDataKey / Decrypt with an encryption context (boto3 in a thread)."""

    source = "kms"

    def __init__(self, *, key_id: str, region: str | None, endpoint: str | None) -> None:
        self.key_id = key_id
        self._region = region
        self._endpoint = endpoint
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _kms(self) -> Any:
        async with self._lock:
            if self._client is None:
                import boto3  # imported lazily: it takes ~0.3 s and only KMS mode needs it

                self._client = await asyncio.to_thread(
                    boto3.client, "kms", region_name=self._region, endpoint_url=self._endpoint
                )
        return self._client

    async def _call(self, operation: str, **kwargs: Any) -> dict[str, Any]:
        from botocore.exceptions import BotoCoreError, ClientError

        client = await self._kms()
        try:
            result: dict[str, Any] = await asyncio.wait_for(
                asyncio.to_thread(getattr(client, operation), **kwargs), timeout=30
            )
            return result
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "ClientError")
            if code in ("InvalidCiphertextException", "IncorrectKeyException"):
                raise CryptoError(
                    f"KMS refused to decrypt ({code}): wrong key, encryption context or tampered data"
                ) from None
            raise ConfigurationError(f"KMS {operation} failed: {code}") from exc
        except (BotoCoreError, TimeoutError) as exc:
            raise NetworkError(f"KMS {operation} failed: {exc.__class__.__name__}") from exc

    async def generate_data_key(self, context: dict[str, str]) -> tuple[bytes, bytes]:
        reply = await self._call(
            "generate_data_key", KeyId=self.key_id, KeySpec="AES_256", EncryptionContext=context
        )
        return reply["Plaintext"], reply["CiphertextBlob"]

    async def decrypt_data_key(self, wrapped: bytes, context: dict[str, str]) -> bytes:
        if wrapped.startswith(_LOCAL_PREFIX):
            raise CryptoError("data key was wrapped locally, not by KMS (KMS_ENABLED mismatch?)")
        reply = await self._call(
            "decrypt", CiphertextBlob=wrapped, EncryptionContext=context, KeyId=self.key_id
        )
        plaintext: bytes = reply["Plaintext"]
        return plaintext


def load_master_key(settings: Settings) -> bytes:
    """LOCAL_MASTER_KEY, else the key file, generated once (0600) with a warning."""
    if settings.local_master_key is not None:
        return decode_master_key(settings.local_master_key.get_secret_value())
    path = settings.master_key_path()
    try:
        return _read_key_file(path)
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(path)  # another command created it first
    with os.fdopen(fd, "w") as handle:
        handle.write(base64.b64encode(secrets.token_bytes(32)).decode() + "\n")
    log.warning("local_master_key_generated", path=str(path),
                hint="back this file up: credentials stored under it cannot be read without it")
    return _read_key_file(path)


def _read_key_file(path: Path) -> bytes:
    try:
        return decode_master_key(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ConfigurationError(f"LOCAL_MASTER_KEY_FILE {path}: {exc}") from None


def key_provider_from_settings(settings: Settings) -> KeyProvider:
    """KMS when KMS_ENABLED, else the local master key."""
    if settings.kms_enabled:
        assert settings.kms_key_id is not None  # enforced by Settings
        return KmsKeyProvider(
            key_id=settings.kms_key_id, region=settings.aws_region, endpoint=settings.kms_endpoint
        )
    return LocalKeyProvider(load_master_key(settings))


# Secrets and their metadata ----------------------------------------------------------


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
    if len(secret.encode()) > _MAX_SECRET_BYTES:
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


# The vault ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """A credential's metadata: everything but the secret."""

    id: int
    venue_id: str
    provider: str
    kind: str
    version: int
    status: str
    key_source: str
    account_id: str | None
    realm_id: str | None
    merchant_id: str | None
    server_prefix: str | None
    expires_at: datetime | None
    last_error: str | None
    use_count: int
    created_at: datetime
    rotated_at: datetime | None
    last_used_at: datetime | None

    @classmethod
    def from_row(cls, row: Any, *, now: datetime | None = None) -> CredentialInfo:
        status = row["status"]
        now = now or datetime.now(UTC)
        if (status != "invalid" and row["kind"] == "oauth" and row["expires_at"] is not None
                and row["expires_at"] <= now + STALE_WINDOW):
            status = "stale"
        return cls(
            id=row["id"], venue_id=row["venue_id"], provider=row["provider"], kind=row["kind"],
            version=row["version"], status=status, key_source=row["key_source"],
            account_id=row["account_id"], realm_id=row["realm_id"], merchant_id=row["merchant_id"],
            server_prefix=row["server_prefix"], expires_at=row["expires_at"],
            last_error=row["last_error"], use_count=row["use_count"], created_at=row["created_at"],
            rotated_at=row["rotated_at"], last_used_at=row["last_used_at"],
        )

    def as_json(self) -> dict[str, Any]:
        """The `credentials show --json` object (CONTRACT section 1)."""
        def iso(value: datetime | None) -> str | None:
            return None if value is None else value.astimezone(UTC).isoformat().replace("+00:00", "Z")

        out: dict[str, Any] = {
            "venue_id": self.venue_id, "provider": self.provider, "kind": self.kind,
            "version": self.version, "status": self.status, "created_at": iso(self.created_at),
            "rotated_at": iso(self.rotated_at), "last_used_at": iso(self.last_used_at),
            "expires_at": iso(self.expires_at), "use_count": self.use_count,
            "key_source": self.key_source,
        }
        for name in ("realm_id", "merchant_id", "server_prefix"):
            if getattr(self, name) is not None:
                out[name] = getattr(self, name)
        if self.last_error:
            out["last_error"] = self.last_error
        return out


@dataclass(frozen=True, slots=True)
class Credential:
    """A decrypted credential: metadata plus the secret. Never log or print it."""

    info: CredentialInfo
    secret: str

    def __repr__(self) -> str:  # keep the secret out of tracebacks and debug output
        return f"Credential({self.info.venue_id}/{self.info.provider}/{self.info.kind} v{self.info.version})"

    def oauth(self) -> dict[str, Any]:
        """The parsed OAuth token set (kind oauth only)."""
        parsed: dict[str, Any] = json.loads(self.secret)
        return parsed


def _context(venue_id: str, provider: str, kind: str) -> dict[str, str]:
    return {"venue_id": venue_id, "provider": provider, "kind": kind}


class Vault:
    """Stores, reads, rotates and deletes encrypted credentials."""

    def __init__(self, pool: asyncpg.Pool, keys: KeyProvider) -> None:
        self._pool = pool
        self._keys = keys

    async def _seal(self, venue_id: str, provider: str, kind: str, secret: str,
                    meta: SecretMetadata) -> db.SealedRow:
        context = _context(venue_id, provider, kind)
        data_key, wrapped = await self._keys.generate_data_key(context)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, secret.encode(), _aad(context))
        return db.SealedRow(
            key_source=self._keys.source, kms_key_id=self._keys.key_id, wrapped_data_key=wrapped,
            nonce=nonce, ciphertext=ciphertext, account_id=meta.account_id, realm_id=meta.realm_id,
            merchant_id=meta.merchant_id, server_prefix=meta.server_prefix,
            expires_at=meta.expires_at,
        )

    async def _open(self, row: Any) -> str:
        context = _context(row["venue_id"], row["provider"], row["kind"])
        data_key = await self._keys.decrypt_data_key(bytes(row["wrapped_data_key"]), context)
        try:
            plain = AESGCM(data_key).decrypt(bytes(row["nonce"]), bytes(row["ciphertext"]), _aad(context))
        except InvalidTag:
            raise CryptoError(
                f"credential {row['venue_id']}/{row['provider']}/{row['kind']} failed to decrypt: "
                "wrong encryption context or tampered ciphertext"
            ) from None
        return plain.decode()

    async def set(self, venue_id: str, provider: str, kind: str, secret: str) -> CredentialInfo:
        """Store a secret (or replace it, bumping the version); raise ValidationError."""
        check_provider_kind(provider, kind)
        if not venue_id or len(venue_id) > 200 or venue_id != venue_id.strip():
            raise ValidationError("venue id must be 1-200 characters without surrounding spaces")
        meta = check_secret(provider, kind, secret)
        row = await self._seal(venue_id, provider, kind, secret, meta)
        async with self._pool.acquire() as conn:
            stored = await db.upsert(conn, venue_id, provider, kind, row)
        return CredentialInfo.from_row(stored)

    async def get(self, venue_id: str, provider: str, kind: str) -> Credential:
        """Decrypt one credential; raise UnknownEntityError when there is none."""
        row = await db.fetch_one(self._pool, venue_id, provider, kind)
        if row is None:
            raise UnknownEntityError(f"no {kind} credential for venue {venue_id!r} at {provider}")
        return Credential(CredentialInfo.from_row(row), await self._open(row))

    async def find_auth(self, venue_id: str, provider: str) -> Credential:
        """The credential to call a provider with: oauth wins over api_key."""
        for kind in ("oauth", "api_key"):
            if kind in KINDS_BY_PROVIDER[provider]:
                row = await db.fetch_one(self._pool, venue_id, provider, kind)
                if row is not None:
                    return Credential(CredentialInfo.from_row(row), await self._open(row))
        raise UnknownEntityError(f"venue {venue_id!r} has no {provider} credential")

    async def show(self, venue_id: str | None = None, provider: str | None = None) -> list[CredentialInfo]:
        if provider is not None:
            check_provider_kind(provider)
        return [CredentialInfo.from_row(r) for r in await db.fetch_many(self._pool, venue_id, provider)]

    async def delete(self, venue_id: str, provider: str, kind: str | None = None) -> int:
        """Delete the rows for good; raise UnknownEntityError when nothing matched."""
        check_provider_kind(provider, kind)
        count = await db.delete(self._pool, venue_id, provider, kind)
        if count == 0:
            what = f"{kind} credential" if kind else "credential"
            raise UnknownEntityError(f"no {what} for venue {venue_id!r} at {provider}")
        return count

    async def rotate(self, venue_id: str, provider: str, kind: str) -> CredentialInfo:
        """Re-encrypt under a fresh data key, in place, and bump the version."""
        check_provider_kind(provider, kind)
        async with self._pool.acquire() as conn, conn.transaction():
            row = await db.fetch_one(conn, venue_id, provider, kind, for_update=True)
            if row is None:
                raise UnknownEntityError(f"no {kind} credential for venue {venue_id!r} at {provider}")
            secret = await self._open(row)
            sealed = await self._seal(venue_id, provider, kind, secret, _meta_of(row))
            stored = await db.reseal(conn, row["id"], sealed, refreshed=False)
        return CredentialInfo.from_row(stored)

    async def replace_secret(self, conn: asyncpg.Connection, row: Any, secret: str, *,
                             refreshed: bool) -> CredentialInfo:
        """Seal a new secret for an existing row inside the caller's transaction (refresh)."""
        meta = check_secret(row["provider"], row["kind"], secret)
        sealed = await self._seal(row["venue_id"], row["provider"], row["kind"], secret, meta)
        return CredentialInfo.from_row(await db.reseal(conn, row["id"], sealed, refreshed=refreshed))

    async def open_row(self, row: Any) -> Credential:
        """Decrypt a row the caller already holds (e.g. under a lock)."""
        return Credential(CredentialInfo.from_row(row), await self._open(row))

    async def record_use(self, info: CredentialInfo, *, ok: bool, error: str | None = None) -> None:
        await db.record_use(self._pool, info.id, ok=ok, error=error)

    async def set_merchant_id(self, info: CredentialInfo, merchant_id: str) -> None:
        await db.set_merchant_id(self._pool, info.id, merchant_id)


def _meta_of(row: Any) -> SecretMetadata:
    return SecretMetadata(
        expires_at=row["expires_at"], realm_id=row["realm_id"], merchant_id=row["merchant_id"],
        server_prefix=row["server_prefix"], account_id=row["account_id"],
    )
