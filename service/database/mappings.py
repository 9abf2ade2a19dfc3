"""SQL for the field_mappings table: one venue's override document per (provider, entity)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from service.errors import NetworkError

Conn = Any  # an asyncpg Connection or Pool (asyncpg ships no type information)
_FAILURES = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)


@dataclass(frozen=True, slots=True)
class StoredMapping:
    """A stored override document and its bookkeeping."""

    venue_id: str
    provider: str
    entity: str
    document: list[dict[str, Any]]
    version: int
    updated_at: datetime


def _stored(row: Any) -> StoredMapping:
    return StoredMapping(row["venue_id"], row["provider"], row["entity"], row["document"],
                         row["version"], row["updated_at"])


async def get_override(conn: Conn, venue_id: str, provider: str, entity: str) -> StoredMapping | None:
    """The venue's override of (provider, entity), or None; raises NetworkError."""
    try:
        row = await conn.fetchrow(
            "SELECT venue_id, provider, entity, document, version, updated_at FROM field_mappings "
            "WHERE venue_id = $1 AND provider = $2 AND entity = $3",
            venue_id, provider, entity,
        )
    except _FAILURES as exc:
        raise NetworkError(f"reading the field mapping failed: {type(exc).__name__}") from exc
    return _stored(row) if row is not None else None


async def put_override(
    conn: Conn, venue_id: str, provider: str, entity: str, document: list[dict[str, Any]]
) -> StoredMapping:
    """Store (or replace, bumping the version) a validated override; raises NetworkError."""
    try:
        row = await conn.fetchrow(
            """
            INSERT INTO field_mappings (venue_id, provider, entity, document)
            VALUES ($1, $2, $3, $4)
            ON CONFLICT (venue_id, provider, entity) DO UPDATE SET
                document = EXCLUDED.document, version = field_mappings.version + 1,
                updated_at = now()
            RETURNING venue_id, provider, entity, document, version, updated_at
            """,
            venue_id, provider, entity, document,
        )
    except _FAILURES as exc:
        raise NetworkError(f"storing the field mapping failed: {type(exc).__name__}") from exc
    return _stored(row)


async def delete_override(conn: Conn, venue_id: str, provider: str, entity: str) -> bool:
    """Remove the override (back to the built-in mapping); True when one existed."""
    try:
        status = await conn.execute(
            "DELETE FROM field_mappings WHERE venue_id = $1 AND provider = $2 AND entity = $3",
            venue_id, provider, entity,
        )
    except _FAILURES as exc:
        raise NetworkError(f"deleting the field mapping failed: {type(exc).__name__}") from exc
    return bool(status.endswith(" 1"))
