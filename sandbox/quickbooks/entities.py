"""Customer, Invoice and Payment writes: create, full or sparse update (SyncToken), delete, void.

Business rules kept from QBO: DisplayName is unique (6240) and derived from the name
parts when absent (6080 when there are none); an inactive customer's DisplayName gains
" (deleted)"; invoice lines must satisfy Amount = Qty x UnitPrice (6070) and get a
SubTotalLine; TotalAmt and Balance are computed; payments apply to invoices and lower
their Balance; a stale SyncToken is 5010; references must exist (2500).
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from sandbox.quickbooks.common import QBError, qb_date, required
from sandbox.quickbooks.schemas import SCHEMAS, check
from sandbox.quickbooks.store import Realm, fold, stale

USD = {"value": "USD", "name": "United States Dollar"}
NAME_PARTS = ("Title", "GivenName", "MiddleName", "FamilyName", "Suffix")
READ_ONLY = frozenset({"Id", "SyncToken", "MetaData", "domain", "sparse", "status"})
CENT = Decimal("0.01")


def money(value: Any, element: str) -> Decimal:
    try:
        return Decimal(str(value)).quantize(CENT, rounding=ROUND_HALF_UP)
    except ArithmeticError:
        raise QBError(
            "2030", "Invalid Number", f"Invalid number for {element}: {value!r}", element=element
        ) from None


def _num(value: Decimal) -> float:
    return float(value)


def _ref_id(data: dict[str, Any], name: str) -> str:
    ref = data.get(name)
    if not isinstance(ref, dict) or not ref.get("value"):
        raise required(f"{name}.value" if isinstance(ref, dict) else name)
    return str(ref["value"])


def _invalid_ref(kind: str, ref_id: str) -> QBError:
    return QBError(
        "2500",
        "Invalid Reference Id",
        f"Invalid Reference Id : {kind} assigned to this transaction has been deleted or does not "
        f"exist (Id {ref_id}).",
        element=f"{kind}Ref",
    )


# Customer ---------------------------------------------------------------------------


def _customer_fields(realm: Realm, data: dict[str, Any], own_id: str | None, active: bool) -> None:
    name = (data.get("DisplayName") or "").strip() or " ".join(
        str(data[p]).strip() for p in NAME_PARTS if data.get(p)
    )
    if not name:
        raise QBError(
            "6080",
            "No Name Provided",
            "Title, GivenName, MiddleName, FamilyName, DisplayName, Suffix - one of these must be non-empty",
            element="DisplayName",
        )
    if not active and not name.endswith(" (deleted)"):
        name += " (deleted)"  # QBO renames customers it makes inactive
    owner = realm.names.get(fold(name))
    if owner is not None and owner != own_id:
        raise QBError(
            "6240",
            "Duplicate Name Exists Error",
            "The name supplied already exists. : Another customer, vendor or employee is already "
            "using this name. Please use a different name.",
            element="DisplayName",
        )
    data["DisplayName"] = name
    data["FullyQualifiedName"] = name
    data.setdefault("PrintOnCheckName", name)
    data["Active"] = active


def _rename(realm: Realm, old: str | None, new: str, customer_id: str) -> None:
    if old is not None:
        realm.names.pop(fold(old), None)
    realm.names[fold(new)] = customer_id


def _active(value: Any) -> bool:
    return value not in (False, "false", "False")


def create_customer(realm: Realm, data: dict[str, Any]) -> dict[str, Any]:
    fields = {k: v for k, v in data.items() if k not in READ_ONLY and v is not None}
    _customer_fields(realm, fields, None, _active(fields.get("Active", True)))
    record = {
        "Taxable": False,
        "Job": False,
        "BillWithParent": False,
        "Balance": 0,
        "BalanceWithJobs": 0,
        "CurrencyRef": USD,
        "PreferredDeliveryMethod": "Print",
        "IsProject": False,
        **fields,
        "domain": "QBO",
        "sparse": False,
        "Id": realm.new_id("Customer"),
    }
    realm.touch(record, created=True)
    realm.entities["Customer"][record["Id"]] = record
    _rename(realm, None, record["DisplayName"], record["Id"])
    return record


def update_customer(
    realm: Realm, current: dict[str, Any], data: dict[str, Any], sparse: bool
) -> dict[str, Any]:
    base = current if sparse else {k: current[k] for k in ("Balance", "BalanceWithJobs", "CurrencyRef")}
    fields = {
        **{k: v for k, v in base.items() if k not in READ_ONLY},
        **{k: v for k, v in data.items() if k not in READ_ONLY},
    }
    if sparse and "DisplayName" not in data and _active(fields.get("Active", True)):
        fields["DisplayName"] = current["DisplayName"].removesuffix(" (deleted)")
    if "PrintOnCheckName" not in data and ("DisplayName" in data or not sparse):
        fields.pop("PrintOnCheckName", None)  # follows the new name unless sent
    fields = {k: v for k, v in fields.items() if v is not None}
    _customer_fields(realm, fields, current["Id"], _active(fields.get("Active", True)))
    old_name = current["DisplayName"]
    keep = {k: current[k] for k in ("Id", "SyncToken", "MetaData", "domain", "sparse", "_c", "_u")}
    current.clear()
    current.update(fields, **keep)
    realm.touch(current)
    _rename(realm, old_name, current["DisplayName"], current["Id"])
    return current


# Invoice ----------------------------------------------------------------------------


def _sales_line(line: dict[str, Any], index: int) -> Decimal:
    if line.get("Amount") is None:
        raise required("Line.Amount")
    amount = money(line["Amount"], "Line.Amount")
    detail = line.get("SalesItemLineDetail") or {}
    if detail.get("Qty") is not None and detail.get("UnitPrice") is not None:
        expected = (Decimal(str(detail["Qty"])) * Decimal(str(detail["UnitPrice"]))).quantize(
            CENT, rounding=ROUND_HALF_UP
        )
        if expected != amount:
            raise QBError(
                "6070",
                "Amount calculation incorrect in the request",
                f"Amount is not equal to UnitPrice * Qty. Supplied value:{line['Amount']}",
                element="Line.Amount",
            )
    line["SalesItemLineDetail"] = {"ItemRef": {"value": "1", "name": "Services"}, **detail}
    line["Amount"] = _num(amount)
    return amount


def _lines(data: dict[str, Any]) -> tuple[list[dict[str, Any]], Decimal]:
    raw = data.get("Line")
    if not raw:
        raise required("Line")
    lines: list[dict[str, Any]] = []
    total = Decimal(0)
    for index, source in enumerate(raw):
        line = dict(source)
        kind = line.get("DetailType")
        if kind == "SubTotalLineDetail":
            continue  # recomputed below, as QBO does
        if kind == "SalesItemLineDetail":
            total += _sales_line(line, index)
        elif kind == "DiscountLineDetail":
            total -= money(line.get("Amount") or 0, "Line.Amount")
        elif kind not in ("DescriptionOnly", "GroupLineDetail"):
            raise required("Line.DetailType")
        line["Id"] = str(len(lines) + 1)
        line.setdefault("LineNum", len(lines) + 1)
        lines.append(line)
    lines.append({"Amount": _num(total), "DetailType": "SubTotalLineDetail", "SubTotalLineDetail": {}})
    return lines, total


def _invoice_fields(realm: Realm, data: dict[str, Any], paid: Decimal) -> dict[str, Any]:
    customer_id = _ref_id(data, "CustomerRef")
    customer = realm.entities["Customer"].get(customer_id)
    if customer is None:
        raise _invalid_ref("Customer", customer_id)
    lines, total = _lines(data)
    fields = {k: v for k, v in data.items() if k not in READ_ONLY and v is not None}
    today = qb_date(realm.clock())
    fields.update(
        CustomerRef={"value": customer_id, "name": customer["DisplayName"]},
        Line=lines,
        TotalAmt=_num(total),
        Balance=_num(max(total - paid, Decimal(0))),
    )
    fields.setdefault("TxnDate", today)
    fields.setdefault("DueDate", fields["TxnDate"])
    fields.setdefault("CurrencyRef", USD)
    fields.setdefault("EmailStatus", "NotSet")
    fields.setdefault("PrintStatus", "NotSet")
    return fields


def create_invoice(realm: Realm, data: dict[str, Any]) -> dict[str, Any]:
    fields = _invoice_fields(realm, data, Decimal(0))
    record_id = realm.new_id("Invoice")
    fields.setdefault("DocNumber", str(1000 + int(record_id)))
    record = {**fields, "domain": "QBO", "sparse": False, "Id": record_id, "_paid": Decimal(0), "_links": {}}
    realm.touch(record, created=True)
    realm.entities["Invoice"][record_id] = record
    return record


def update_invoice(
    realm: Realm, current: dict[str, Any], data: dict[str, Any], sparse: bool
) -> dict[str, Any]:
    merged = {**{k: v for k, v in current.items() if k[0] != "_"}, **data} if sparse else dict(data)
    if not sparse:
        merged.setdefault("DocNumber", current.get("DocNumber"))
    fields = _invoice_fields(realm, merged, current["_paid"])
    keep = {
        k: current[k]
        for k in ("Id", "SyncToken", "MetaData", "domain", "sparse", "_c", "_u", "_paid", "_links")
    }
    current.clear()
    current.update(fields, **keep)
    _link_payments(current)
    realm.touch(current)
    return current


def _link_payments(invoice: dict[str, Any]) -> None:
    links = [{"TxnId": pid, "TxnType": "Payment"} for pid in invoice["_links"]]
    if links:
        invoice["LinkedTxn"] = links
    else:
        invoice.pop("LinkedTxn", None)


def void_invoice(realm: Realm, current: dict[str, Any]) -> dict[str, Any]:
    for line in current["Line"]:
        line["Amount"] = 0.0
    current.update(TotalAmt=0.0, Balance=0.0, PrivateNote="Voided")
    realm.touch(current)
    return current


# Payment ----------------------------------------------------------------------------


def _applications(
    realm: Realm, data: dict[str, Any], customer_id: str
) -> list[tuple[dict[str, Any], Decimal]]:
    applied = []
    for line in data.get("Line") or []:
        amount = money(line.get("Amount") or 0, "Line.Amount")
        for link in line.get("LinkedTxn") or []:
            if link.get("TxnType") != "Invoice":
                continue
            invoice = realm.entities["Invoice"].get(str(link.get("TxnId")))
            if invoice is None or invoice["CustomerRef"]["value"] != customer_id:
                raise _invalid_ref("Invoice", str(link.get("TxnId")))
            applied.append((invoice, amount))
    return applied


def _apply(realm: Realm, payment_id: str, applied: list[tuple[dict[str, Any], Decimal]], sign: int) -> None:
    for invoice, amount in applied:
        invoice["_paid"] += sign * amount
        if sign > 0:
            invoice["_links"][payment_id] = None
        else:
            invoice["_links"].pop(payment_id, None)
        invoice["Balance"] = _num(max(Decimal(str(invoice["TotalAmt"])) - invoice["_paid"], Decimal(0)))
        _link_payments(invoice)
        realm.touch(invoice)


def _payment_fields(
    realm: Realm, data: dict[str, Any], credit: dict[str, Decimal]
) -> tuple[dict[str, Any], Any]:
    customer_id = _ref_id(data, "CustomerRef")
    customer = realm.entities["Customer"].get(customer_id)
    if customer is None:
        raise _invalid_ref("Customer", customer_id)
    if data.get("TotalAmt") is None:
        raise required("TotalAmt")
    total = money(data["TotalAmt"], "TotalAmt")
    applied = _applications(realm, data, customer_id)
    used = sum((amount for _, amount in applied), Decimal(0))
    over = [
        inv for inv, amount in applied if amount > Decimal(str(inv["Balance"])) + credit.get(inv["Id"], 0)
    ]
    if used > total or over:
        raise QBError(
            "6000",
            "A business validation error has occurred while processing your request",
            "Business Validation Error: The amount applied to invoices exceeds the payment amount "
            "or an invoice's open balance.",
            element="Line.Amount",
        )
    fields = {k: v for k, v in data.items() if k not in READ_ONLY and v is not None}
    fields.update(
        CustomerRef={"value": customer_id, "name": customer["DisplayName"]},
        TotalAmt=_num(total),
        UnappliedAmt=_num(total - used),
    )
    fields.setdefault("TxnDate", qb_date(realm.clock()))
    fields.setdefault("CurrencyRef", USD)
    fields.setdefault("Line", [])
    return fields, applied


def create_payment(realm: Realm, data: dict[str, Any]) -> dict[str, Any]:
    fields, applied = _payment_fields(realm, data, {})
    record = {
        **fields,
        "ProcessPayment": False,
        "domain": "QBO",
        "sparse": False,
        "Id": realm.new_id("Payment"),
        "_applied": applied,
    }
    realm.touch(record, created=True)
    realm.entities["Payment"][record["Id"]] = record
    _apply(realm, record["Id"], applied, +1)
    return record


def update_payment(
    realm: Realm, current: dict[str, Any], data: dict[str, Any], sparse: bool
) -> dict[str, Any]:
    merged = {**{k: v for k, v in current.items() if k[0] != "_"}, **data} if sparse else dict(data)
    credit = {inv["Id"]: amount for inv, amount in current["_applied"]}
    fields, applied = _payment_fields(realm, merged, credit)
    _apply(realm, current["Id"], current["_applied"], -1)
    keep = {k: current[k] for k in ("Id", "SyncToken", "MetaData", "domain", "sparse", "_c", "_u")}
    current.clear()
    current.update(fields, **keep, _applied=applied)
    realm.touch(current)
    _apply(realm, current["Id"], applied, +1)
    return current


# Dispatch ---------------------------------------------------------------------------

CREATE = {"Customer": create_customer, "Invoice": create_invoice, "Payment": create_payment}
UPDATE = {"Customer": update_customer, "Invoice": update_invoice, "Payment": update_payment}


def write(realm: Realm, entity: str, data: dict[str, Any]) -> dict[str, Any]:
    """Create (no Id) or update (Id + current SyncToken; ``sparse`` merges) one record."""
    check(data, SCHEMAS[entity], entity)
    if data.get("Id") in (None, ""):
        return CREATE[entity](realm, data)
    current = realm.get(entity, data["Id"])
    if data.get("SyncToken") in (None, ""):
        raise required("SyncToken")
    if str(data["SyncToken"]) != current["SyncToken"]:
        raise stale(entity)
    sparse = data.get("sparse") in (True, "true")
    return UPDATE[entity](realm, current, data, sparse)


def delete(realm: Realm, entity: str, data: dict[str, Any]) -> dict[str, Any]:
    """``?operation=delete`` for Invoice and Payment (a Customer can only be made inactive)."""
    if entity == "Customer":
        raise QBError(
            "6000",
            "A business validation error has occurred while processing your request",
            "Business Validation Error: Customers cannot be deleted; set Active to false.",
        )
    if data.get("Id") in (None, ""):
        raise required("Id")
    current = realm.get(entity, data["Id"])
    if str(data.get("SyncToken")) != current["SyncToken"]:
        raise stale(entity)
    if entity == "Payment":
        _apply(realm, current["Id"], current["_applied"], -1)
    del realm.entities[entity][current["Id"]]
    realm.deleted[entity][current["Id"]] = realm.clock()
    return {"domain": "QBO", "status": "Deleted", "Id": current["Id"]}


def void(realm: Realm, entity: str, data: dict[str, Any]) -> dict[str, Any]:
    """``?operation=void`` for an Invoice."""
    if entity != "Invoice":
        raise QBError("500", "Unsupported Operation", f"Operation void is not supported for {entity}.")
    current = realm.get(entity, data.get("Id"))
    if str(data.get("SyncToken")) != current["SyncToken"]:
        raise stale(entity)
    return void_invoice(realm, current)
