"""One QuickBooks company (realm) in memory: entities, tombstones, requestids, the company."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sandbox.quickbooks.common import QBError, not_found, qb_time

ENTITIES = ("Customer", "Invoice", "Payment")


@dataclass
class Realm:
    """A company's records; ``_c``/``_u`` hold exact create/update times (MetaData shows seconds)."""

    realm_id: str
    clock: Callable[[], float]
    company: dict[str, Any] = field(default_factory=dict)
    entities: dict[str, dict[str, dict[str, Any]]] = field(
        default_factory=lambda: {name: {} for name in ENTITIES}
    )
    deleted: dict[str, dict[str, float]] = field(default_factory=lambda: {name: {} for name in ENTITIES})
    next_ids: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ENTITIES, 1))
    requests: dict[str, tuple[int, bytes]] = field(default_factory=dict)  # requestid -> first answer
    names: dict[str, str] = field(default_factory=dict)  # folded DisplayName -> customer Id

    def new_id(self, entity: str) -> str:
        value = self.next_ids[entity]
        self.next_ids[entity] = value + 1
        return str(value)

    def get(self, entity: str, entity_id: Any) -> dict[str, Any]:
        record = self.entities[entity].get(str(entity_id))
        if record is None:
            raise not_found(entity, str(entity_id))
        return record

    def touch(self, record: dict[str, Any], *, created: bool = False) -> None:
        """Stamp MetaData (whole seconds, company zone) and bump SyncToken on changes."""
        now = self.clock()
        record["_u"] = now
        if created:
            record["_c"] = now
            record["SyncToken"] = "0"
            record["MetaData"] = {"CreateTime": qb_time(now), "LastUpdatedTime": qb_time(now)}
        else:
            record["SyncToken"] = str(int(record["SyncToken"]) + 1)
            record["MetaData"] = {**record["MetaData"], "LastUpdatedTime": qb_time(now)}


def fold(name: str) -> str:
    return " ".join(name.split()).casefold()


def new_realm(realm_id: str | None, clock: Callable[[], float], company_name: str) -> Realm:
    """A fresh sandbox company with its CompanyInfo."""
    realm = Realm(realm_id=realm_id or str(9130350000000000 + secrets.randbelow(10**9)), clock=clock)
    now = clock()
    address = {
        "Id": "1",
        "Line1": "2600 Marine Way",
        "City": "Mountain View",
        "CountrySubDivisionCode": "CA",
        "PostalCode": "94043",
        "Country": "US",
    }
    realm.company = {
        "CompanyName": company_name,
        "LegalName": company_name,
        "CompanyAddr": address,
        "CustomerCommunicationAddr": address,
        "LegalAddr": address,
        "PrimaryPhone": {},
        "CompanyStartDate": qb_time(now)[:10],
        "FiscalYearStartMonth": "January",
        "Country": "US",
        "Email": {"Address": "noreply@quickbooks.com"},
        "WebAddr": {},
        "SupportedLanguages": "en",
        "NameValue": [{"Name": "OfferingSku", "Value": "QuickBooks Online Plus"}],
        "domain": "QBO",
        "sparse": False,
        "Id": "1",
        "SyncToken": "0",
        "MetaData": {"CreateTime": qb_time(now), "LastUpdatedTime": qb_time(now)},
        "_c": now,
        "_u": now,
    }
    return realm


def public(record: dict[str, Any]) -> dict[str, Any]:
    """A record without the sandbox's private ``_`` fields."""
    return {k: v for k, v in record.items() if k[0] != "_"}


def stale(entity: str) -> QBError:
    return QBError(
        "5010",
        "Stale Object Error",
        "Stale Object Error : You and sandbox were working on this at the same time. sandbox finished "
        "before you did, so your work was not saved.",
        element="SyncToken",
    )
