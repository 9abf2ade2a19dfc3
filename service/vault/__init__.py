"""The credential vault: envelope encryption of per-venue secrets in PostgreSQL.

Each credential version gets a fresh 256-bit data key. The secret is sealed with
AES-256-GCM under that key, with the encryption context (venue, provider, kind) bound as
associated data; the data key is stored only wrapped: by AWS KMS ``GenerateDataKey`` with
the same encryption context, or (``KMS_ENABLED=false``) by AES-256-GCM under the local
master key. A wrong context, a wrong key or a flipped byte fails with CryptoError, never
garbage. boto3 is blocking, so every KMS call runs in a worker thread.

    service/vault/__init__.py    Vault, Credential, CredentialInfo (this module)
    service/vault/keys.py        KeyProvider: KmsKeyProvider, LocalKeyProvider, master key file
    service/vault/validation.py  check_secret: what a secret must look like, per provider/kind
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from service.database import credentials as db
from service.errors import ConfigurationError, CryptoError, NetworkError, UnknownEntityError, ValidationError
from service.vault.keys import (
    KeyProvider,
    KmsKeyProvider,
    LocalKeyProvider,
    aad,
    key_provider_from_settings,
    load_master_key,
)
from service.vault.validation import (
    KINDS,
    KINDS_BY_PROVIDER,
    SecretMetadata,
    check_provider_kind,
    check_secret,
    fingerprint,
)

__all__ = [
    "KINDS", "KINDS_BY_PROVIDER", "STALE_WINDOW", "Credential", "CredentialInfo", "KeyProvider",
    "KmsKeyProvider", "LocalKeyProvider", "SecretMetadata", "Vault", "check_provider_kind",
    "check_secret", "fingerprint", "key_provider_from_settings", "load_master_key",
]

log = structlog.get_logger(__name__)

STALE_WINDOW = timedelta(minutes=5)


@asynccontextmanager
async def _db_errors() -> AsyncIterator[None]:
    """Translate asyncpg / socket failures into our error tree (one line, no DSN)."""
    try:
        yield
    except asyncpg.UndefinedTableError as exc:
        raise ConfigurationError(
            "the database has no credentials table; run `integration-service migrate`"
        ) from exc
    except (asyncpg.PostgresConnectionError, asyncpg.InterfaceError, OSError) as exc:
        raise NetworkError(f"PostgreSQL failed: {exc.__class__.__name__}") from exc


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

    @property
    def pool(self) -> asyncpg.Pool:
        """The pool the vault reads and writes through (for callers that lock rows with it)."""
        return self._pool

    async def _seal(self, venue_id: str, provider: str, kind: str, secret: str,
                    meta: SecretMetadata) -> db.SealedRow:
        context = _context(venue_id, provider, kind)
        data_key, wrapped = await self._keys.generate_data_key(context)
        nonce = os.urandom(12)
        ciphertext = AESGCM(data_key).encrypt(nonce, secret.encode(), aad(context))
        return db.SealedRow(
            key_source=self._keys.source, kms_key_id=self._keys.key_id, wrapped_data_key=wrapped,
            nonce=nonce, ciphertext=ciphertext, account_id=meta.account_id, realm_id=meta.realm_id,
            merchant_id=meta.merchant_id, server_prefix=meta.server_prefix,
            expires_at=meta.expires_at,
        )

    async def _open(self, row: Any) -> str:
        context = _context(row["venue_id"], row["provider"], row["kind"])
        data_key = await self._keys.decrypt_data_key(
            bytes(row["wrapped_data_key"]), context, key_id=row["kms_key_id"]
        )
        try:
            plain = AESGCM(data_key).decrypt(bytes(row["nonce"]), bytes(row["ciphertext"]), aad(context))
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
        async with _db_errors():
            stored = await db.upsert(self._pool, venue_id, provider, kind, row)
        return CredentialInfo.from_row(stored)

    async def get(self, venue_id: str, provider: str, kind: str) -> Credential:
        """Decrypt one credential; raise UnknownEntityError when there is none, CryptoError."""
        check_provider_kind(provider, kind)
        async with _db_errors():
            row = await db.fetch_one(self._pool, venue_id, provider, kind)
        if row is None:
            raise UnknownEntityError(f"no {kind} credential for venue {venue_id!r} at {provider}")
        return Credential(CredentialInfo.from_row(row), await self._open(row))

    async def find_auth(self, venue_id: str, provider: str) -> Credential:
        """The credential to call a provider with: oauth wins over api_key."""
        check_provider_kind(provider)
        for kind in ("oauth", "api_key"):
            if kind in KINDS_BY_PROVIDER[provider]:
                async with _db_errors():
                    row = await db.fetch_one(self._pool, venue_id, provider, kind)
                if row is not None:
                    return Credential(CredentialInfo.from_row(row), await self._open(row))
        raise UnknownEntityError(f"venue {venue_id!r} has no {provider} credential")

    async def show(self, venue_id: str | None = None, provider: str | None = None) -> list[CredentialInfo]:
        """Metadata of the matching credentials, ordered by venue, provider and kind."""
        if provider is not None:
            check_provider_kind(provider)
        async with _db_errors():
            rows = await db.fetch_many(self._pool, venue_id, provider)
        return [CredentialInfo.from_row(r) for r in rows]

    async def delete(self, venue_id: str, provider: str, kind: str | None = None) -> int:
        """Delete the rows for good; raise UnknownEntityError when nothing matched."""
        check_provider_kind(provider, kind)
        async with _db_errors():
            count = await db.delete(self._pool, venue_id, provider, kind)
        if count == 0:
            what = f"{kind} credential" if kind else "credential"
            raise UnknownEntityError(f"no {what} for venue {venue_id!r} at {provider}")
        return count

    async def rotate(self, venue_id: str, provider: str, kind: str) -> CredentialInfo:
        """Re-encrypt under a fresh data key, in place, and bump the version."""
        check_provider_kind(provider, kind)
        async with _db_errors(), self._pool.acquire() as conn, conn.transaction():
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
        """Count a use: ok marks it valid; an error (auth failure) marks it invalid."""
        async with _db_errors():
            await db.record_use(self._pool, info.id, ok=ok, error=error)

    async def set_merchant_id(self, info: CredentialInfo, merchant_id: str) -> None:
        """Store the Square merchant id learned for an api_key."""
        async with _db_errors():
            await db.set_merchant_id(self._pool, info.id, merchant_id)


def _meta_of(row: Any) -> SecretMetadata:
    return SecretMetadata(
        expires_at=row["expires_at"], realm_id=row["realm_id"], merchant_id=row["merchant_id"],
        server_prefix=row["server_prefix"], account_id=row["account_id"],
    )
