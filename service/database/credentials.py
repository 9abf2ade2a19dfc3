"""SQL for the credentials table. Rows hold ciphertext only; see service/vault/."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

COLUMNS = (
    "id, venue_id, provider, kind, version, status, key_source, kms_key_id, wrapped_data_key, "
    "nonce, ciphertext, account_id, realm_id, merchant_id, server_prefix, expires_at, last_error, "
    "use_count, created_at, rotated_at, last_used_at, refreshed_at"
)


@dataclass(frozen=True, slots=True)
class SealedRow:
    """What is written for one credential version: ciphertext and clear metadata."""

    key_source: str
    kms_key_id: str | None
    wrapped_data_key: bytes
    nonce: bytes
    ciphertext: bytes
    account_id: str | None
    realm_id: str | None
    merchant_id: str | None
    server_prefix: str | None
    expires_at: datetime | None


async def upsert(
    conn: asyncpg.Connection | asyncpg.Pool, venue_id: str, provider: str, kind: str, row: SealedRow
) -> asyncpg.Record:
    """Insert a credential, or replace its secret and bump the version."""
    return await conn.fetchrow(
        f"""
        INSERT INTO credentials (venue_id, provider, kind, key_source, kms_key_id,
            wrapped_data_key, nonce, ciphertext, account_id, realm_id, merchant_id,
            server_prefix, expires_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        ON CONFLICT (venue_id, provider, kind) DO UPDATE SET
            version = credentials.version + 1, status = 'unverified', last_error = NULL,
            key_source = EXCLUDED.key_source, kms_key_id = EXCLUDED.kms_key_id,
            wrapped_data_key = EXCLUDED.wrapped_data_key, nonce = EXCLUDED.nonce,
            ciphertext = EXCLUDED.ciphertext, account_id = EXCLUDED.account_id,
            realm_id = EXCLUDED.realm_id,
            merchant_id = COALESCE(EXCLUDED.merchant_id, credentials.merchant_id),
            server_prefix = EXCLUDED.server_prefix, expires_at = EXCLUDED.expires_at,
            rotated_at = now()
        RETURNING {COLUMNS}
        """,
        venue_id, provider, kind, row.key_source, row.kms_key_id, row.wrapped_data_key,
        row.nonce, row.ciphertext, row.account_id, row.realm_id, row.merchant_id,
        row.server_prefix, row.expires_at,
    )


async def reseal(
    conn: asyncpg.Connection, credential_id: int, row: SealedRow, *, refreshed: bool
) -> asyncpg.Record:
    """Replace the sealed secret of an existing row in place and bump the version."""
    return await conn.fetchrow(
        f"""
        UPDATE credentials SET version = version + 1, key_source = $2, kms_key_id = $3,
            wrapped_data_key = $4, nonce = $5, ciphertext = $6, account_id = $7,
            realm_id = $8, merchant_id = COALESCE($9, merchant_id), server_prefix = $10,
            expires_at = $11, rotated_at = now(),
            refreshed_at = CASE WHEN $12 THEN now() ELSE refreshed_at END,
            status = CASE WHEN $12 THEN 'valid' ELSE status END,
            last_error = CASE WHEN $12 THEN NULL ELSE last_error END
        WHERE id = $1
        RETURNING {COLUMNS}
        """,
        credential_id, row.key_source, row.kms_key_id, row.wrapped_data_key, row.nonce,
        row.ciphertext, row.account_id, row.realm_id, row.merchant_id, row.server_prefix,
        row.expires_at, refreshed,
    )


async def fetch_one(
    conn: asyncpg.Connection | asyncpg.Pool, venue_id: str, provider: str, kind: str,
    *, for_update: bool = False,
) -> asyncpg.Record | None:
    lock = " FOR UPDATE" if for_update else ""
    return await conn.fetchrow(
        f"SELECT {COLUMNS} FROM credentials WHERE venue_id = $1 AND provider = $2 AND kind = $3{lock}",
        venue_id, provider, kind,
    )


async def fetch_many(
    conn: asyncpg.Connection | asyncpg.Pool, venue_id: str | None, provider: str | None
) -> list[asyncpg.Record]:
    """Rows matching the optional venue and provider filters, in a stable order."""
    rows: list[asyncpg.Record] = await conn.fetch(
        f"""SELECT {COLUMNS} FROM credentials
            WHERE ($1::text IS NULL OR venue_id = $1) AND ($2::text IS NULL OR provider = $2)
            ORDER BY venue_id, provider, kind""",
        venue_id, provider,
    )
    return rows


async def delete(
    conn: asyncpg.Connection | asyncpg.Pool, venue_id: str, provider: str, kind: str | None
) -> int:
    result: str = await conn.execute(
        "DELETE FROM credentials WHERE venue_id = $1 AND provider = $2 AND ($3::text IS NULL OR kind = $3)",
        venue_id, provider, kind,
    )
    return int(result.split()[-1])


async def record_use(
    conn: asyncpg.Connection | asyncpg.Pool, credential_id: int, *, ok: bool, error: str | None = None
) -> None:
    """Count a use; a success marks the credential valid, an auth failure invalid."""
    await conn.execute(
        """UPDATE credentials SET use_count = use_count + 1, last_used_at = now(),
               status = CASE WHEN $2 THEN 'valid' WHEN $3::text IS NOT NULL THEN 'invalid' ELSE status END,
               last_error = CASE WHEN $2 THEN NULL ELSE COALESCE($3, last_error) END
           WHERE id = $1""",
        credential_id, ok, error,
    )


async def set_merchant_id(
    conn: asyncpg.Connection | asyncpg.Pool, credential_id: int, merchant_id: str
) -> None:
    """Record the Square merchant id of an api_key; it is also the rate-limit account."""
    await conn.execute(
        "UPDATE credentials SET merchant_id = $2, account_id = $2 WHERE id = $1", credential_id, merchant_id
    )


async def venue_for_account(
    conn: asyncpg.Connection | asyncpg.Pool, provider: str, *, realm_id: str | None = None,
    merchant_id: str | None = None,
) -> str | None:
    """The venue owning a QuickBooks realm or Square merchant, or None.

    One statement per column, not one with ``$2 IS NOT NULL OR ...``: the daemon's pools keep
    generic plans, and only a plain equality lets a generic plan use the column's index."""
    if realm_id is not None:
        column, account = "realm_id", realm_id
    elif merchant_id is not None:
        column, account = "merchant_id", merchant_id
    else:
        return None
    row: Any = await conn.fetchrow(
        f"""SELECT venue_id FROM credentials WHERE provider = $1 AND {column} = $2
            ORDER BY kind = 'oauth' DESC, id LIMIT 1""",
        provider, account,
    )
    return None if row is None else str(row["venue_id"])


async def venue_known(conn: asyncpg.Connection | asyncpg.Pool, venue_id: str, provider: str) -> bool:
    """A venue is known to a provider when it has a credential for it."""
    found = await conn.fetchval(
        "SELECT 1 FROM credentials WHERE venue_id = $1 AND provider = $2 LIMIT 1", venue_id, provider
    )
    return found is not None
