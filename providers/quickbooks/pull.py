"""QuickBooks pulls: customers, invoices and payments by query, company_info by read.

``SELECT * FROM <Entity> [WHERE MetaData.LastUpdatedTime >= '<since>'] ORDERBY
MetaData.LastUpdatedTime STARTPOSITION <n> MAXRESULTS 1000``: incremental with the WHERE,
full without. A page shorter than 1000 rows is the last one.

Customers add ``Active IN (true, false)``: a Customer query that does not name ``Active``
returns active customers only, and a customer made inactive is QuickBooks' delete, which
an incremental pull must see.

Why ``>=`` and not ``>``: MetaData times are whole seconds, so with ``>`` a record updated
later within the same second as the stored cursor would never be pulled. With ``>=`` the
records of that boundary second are read again, and the engine skips them as unchanged.

Cursors: ``next_cursor`` = ``{"since": <time or None>, "start": <next STARTPOSITION>,
"max": <latest LastUpdatedTime so far>}``; ``resume_cursor`` = ``{"last_updated_time": ...}``
on the last page only (a pull that stops mid-way resumes from the page cursor, and the
stored incremental cursor never runs ahead of rows not yet read).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from providers.base import Page, VenueAuth
from providers.quickbooks.api import (
    ENTITY_NAMES,
    QuickBooksApi,
    last_updated,
    object_of,
    realm_of,
    rows_of,
    to_record,
)
from providers.quickbooks.webhooks import parse_time
from service.errors import DataError

PAGE_SIZE = 1000


def since_literal(value: Any) -> str:
    """A stored cursor time, checked to be a timestamp before it goes into a query string."""
    if not isinstance(value, str) or parse_time(value) is None or "'" in value:
        raise DataError(f"quickbooks cursor time {value!r} is not an ISO 8601 timestamp")
    return value


def build_query(name: str, *, since: str | None, start: int, size: int = PAGE_SIZE) -> str:
    """The paged query for one entity (``since`` None: a full pull)."""
    conditions = ["Active IN (true, false)"] if name == "Customer" else []
    if since is not None:
        conditions.append(f"MetaData.LastUpdatedTime >= '{since_literal(since)}'")
    where = f" WHERE {' AND '.join(conditions)}" if conditions else ""
    return (f"SELECT * FROM {name}{where} ORDERBY MetaData.LastUpdatedTime "
            f"STARTPOSITION {start} MAXRESULTS {size}")


def _later(a: str | None, b: str | None) -> str | None:
    ta: datetime | None = parse_time(a) if a else None
    tb: datetime | None = parse_time(b) if b else None
    if ta is None or tb is None:
        return a if tb is None else b
    return a if ta >= tb else b


async def pull_entity(
    api: QuickBooksApi, auth: VenueAuth, entity: str, cursor: dict[str, Any] | None,
    resume: dict[str, Any] | None,
) -> Page:
    """One page of customers, invoices or payments."""
    name = ENTITY_NAMES[entity]
    state: dict[str, Any] = dict(cursor) if cursor is not None else {
        "since": (resume or {}).get("last_updated_time"), "start": 1, "max": None,
    }
    statement = build_query(name, since=state["since"], start=int(state["start"]))
    response = await api.query(auth, statement, operation=f"query_{entity}")
    raw = rows_of(response, name, operation=f"query_{entity}")
    rows = [r for r in raw if r.get("Id") not in (None, "")]
    latest = state.get("max") or state.get("since")
    for row in rows:
        latest = _later(latest, last_updated(row))
    records = [to_record(row, entity=entity) for row in rows]
    if len(raw) >= PAGE_SIZE:
        more = {**state, "start": int(state["start"]) + PAGE_SIZE, "max": latest}
        return Page(records=records, next_cursor=more, resume_cursor=None)
    return Page(records=records, next_cursor=None,
                resume_cursor={"last_updated_time": latest} if latest else None)


async def pull_company_info(api: QuickBooksApi, auth: VenueAuth) -> Page:
    """GET /companyinfo/{realmId}: one page of one record."""
    realm = realm_of(auth)
    payload = await api.call(auth, "GET", f"/companyinfo/{realm}", operation="get_company_info")
    info = object_of(payload, "CompanyInfo", operation="get_company_info")
    return Page(records=[to_record(info, entity="company_info")], next_cursor=None, resume_cursor=None)
