"""The built-in mapping document of every (provider, entity): pure data, no logic.

Each document maps the platform shape (``service.entities``) to the provider's own JSON
field names as its API uses them; ``service.mapping`` explains the entry format and the
transforms. A venue's override replaces entries by platform path.

Linking a pulled record back to its platform id:

- Stripe: ``metadata.platform_id`` (customers, payment intents, charges, refunds).
- Square: ``reference_id`` (customers, orders).
- QuickBooks: none in the record. A Customer has no metadata, and every free-text field
  (Notes, DisplayName, PrivateNote) is read and edited by people, so the link is the
  engine's record_state row written when a push returns the QuickBooks ``Id``.
- Mailchimp: the email address (the member's subscriber hash); no id field.

Push-side notes for the provider modules: QuickBooks ``DisplayName`` is the name, else the
company, else the email (it must be unique: a clash is QuickBooks error 6240); Square
inventory counts map to the count object, to be wrapped as a ``PHYSICAL_COUNT`` change;
Square orders map to the ``order`` object; Mailchimp tags are ``[{"name": ...}]`` as
Mailchimp lists them (add ``"status": "active"`` for its tags endpoint), and ``status`` is
the member's subscription status (set ``status_if_new`` from it on a PUT).
"""

from __future__ import annotations

from typing import Any

Entry = dict[str, Any]


def _e(platform: str, provider: str, transform: str | None = None, *, direction: str = "both",
       default: Any = None, required: bool = False) -> Entry:
    return {"platform": platform, "provider": provider, "transform": transform,
            "default": default, "required": required, "direction": direction}


def _pull(platform: str, provider: str, transform: str | None = None, **kwargs: Any) -> Entry:
    return _e(platform, provider, transform, direction="pull", **kwargs)


def _push(platform: str, provider: str, transform: str | None = None, **kwargs: Any) -> Entry:
    return _e(platform, provider, transform, direction="push", **kwargs)


def _address(platform: str, provider: str, names: tuple[str, str, str, str, str, str],
             *, direction: str = "both") -> list[Entry]:
    """line1, line2, city, region, postal_code, country under two object paths."""
    ours = ("line1", "line2", "city", "region", "postal_code", "country")
    return [
        _e(f"{platform}.{mine}", f"{provider}.{theirs}",
           "iso_country" if mine == "country" else None, direction=direction)
        for mine, theirs in zip(ours, names, strict=True)
    ]


def _money(platform: str, amount: str, currency: str, *, direction: str = "pull",
           transform: str | None = None) -> list[Entry]:
    """A Money object from an amount field and a currency field."""
    return [
        _e(f"{platform}.currency", currency, "upper", direction=direction),
        _e(f"{platform}.amount_minor", amount, transform, direction=direction),
    ]


# ---------------------------------------------------------------- Stripe (amounts in minor units)

_STRIPE_ADDRESS = ("line1", "line2", "city", "state", "postal_code", "country")

STRIPE_CUSTOMERS: list[Entry] = [
    _e("id", "metadata.platform_id"),
    _e("email", "email"),
    _e("first_name", "name", "split_name"),
    _e("last_name", "name", "split_name"),
    _e("phone", "phone", "e164"),
    _e("company", "metadata.company"),
    *_address("address", "address", _STRIPE_ADDRESS),
    _e("metadata", "metadata"),
]

STRIPE_PAYMENT_INTENTS: list[Entry] = [
    _pull("external_id", "id", required=True),
    _pull("id", "metadata.platform_id"),
    _pull("customer_external_id", "customer"),
    *_money("amount", "amount", "currency"),
    *_money("amount_received", "amount_received", "currency"),
    _pull("status", "status"),
    _pull("description", "description"),
    _pull("latest_charge_external_id", "latest_charge"),
    _pull("created_at", "created", "datetime"),
    _pull("metadata", "metadata"),
]

STRIPE_CHARGES: list[Entry] = [
    _pull("external_id", "id", required=True),
    _pull("id", "metadata.platform_id"),
    _pull("payment_intent_external_id", "payment_intent"),
    _pull("customer_external_id", "customer"),
    _pull("balance_transaction_external_id", "balance_transaction"),
    *_money("amount", "amount", "currency"),
    *_money("amount_refunded", "amount_refunded", "currency"),
    _pull("status", "status"),
    _pull("paid", "paid", "bool"),
    _pull("refunded", "refunded", "bool"),
    _pull("description", "description"),
    _pull("created_at", "created", "datetime"),
    _pull("metadata", "metadata"),
]

STRIPE_REFUNDS: list[Entry] = [
    _pull("external_id", "id", required=True),
    _e("id", "metadata.platform_id"),
    _e("charge_external_id", "charge"),
    _e("payment_intent_external_id", "payment_intent"),
    _pull("amount.currency", "currency", "upper"),
    _e("amount.amount_minor", "amount"),  # Stripe takes the charge's currency on create
    _e("reason", "reason"),
    _pull("status", "status"),
    _pull("created_at", "created", "datetime"),
    _e("metadata", "metadata"),
]

STRIPE_BALANCE_TRANSACTIONS: list[Entry] = [
    _pull("external_id", "id", required=True),
    _pull("source_external_id", "source"),
    _pull("type", "type"),
    _pull("status", "status"),
    _pull("description", "description"),
    *_money("amount", "amount", "currency"),
    *_money("fee", "fee", "currency"),
    *_money("net", "net", "currency"),
    _pull("created_at", "created", "datetime"),
    _pull("available_on", "available_on", "datetime"),
]

# ---------------------------------------------------------------- Square (amounts in minor units)

_SQUARE_ADDRESS = ("address_line_1", "address_line_2", "locality", "administrative_district_level_1",
                   "postal_code", "country")

SQUARE_CUSTOMERS: list[Entry] = [
    _e("id", "reference_id"),
    _e("first_name", "given_name"),
    _e("last_name", "family_name"),
    _e("email", "email_address"),
    _e("phone", "phone_number", "e164"),
    _e("company", "company_name"),
    *_address("address", "address", _SQUARE_ADDRESS),
]

SQUARE_ORDERS: list[Entry] = [
    _pull("external_id", "id"),
    _e("id", "reference_id"),
    _e("location_external_id", "location_id", required=True),
    _e("customer_external_id", "customer_id"),
    _pull("state", "state", "lower"),
    _pull("line_items[].external_id", "line_items[].uid"),
    _e("line_items[].name", "line_items[].name"),
    _e("line_items[].quantity", "line_items[].quantity", required=True),
    _e("line_items[].catalog_object_external_id", "line_items[].catalog_object_id"),
    _e("line_items[].note", "line_items[].note"),
    *_money("line_items[].unit_price", "line_items[].base_price_money.amount",
            "line_items[].base_price_money.currency", direction="both"),
    *_money("line_items[].total", "line_items[].total_money.amount", "line_items[].total_money.currency"),
    *_money("total", "total_money.amount", "total_money.currency"),
    *_money("tax_total", "total_tax_money.amount", "total_tax_money.currency"),
    *_money("discount_total", "total_discount_money.amount", "total_discount_money.currency"),
    _pull("created_at", "created_at", "datetime"),
    _pull("updated_at", "updated_at", "datetime"),
    _pull("closed_at", "closed_at", "datetime"),
    _e("metadata", "metadata"),
]

SQUARE_INVENTORY: list[Entry] = [
    _e("catalog_object_external_id", "catalog_object_id", required=True),
    _e("location_external_id", "location_id", required=True),
    _e("state", "state", default="IN_STOCK"),
    _e("quantity", "quantity", required=True),
    _pull("calculated_at", "calculated_at", "datetime"),
    _push("calculated_at", "occurred_at", "datetime"),
]

SQUARE_LOCATIONS: list[Entry] = [
    _pull("external_id", "id", required=True),
    _pull("name", "name"),
    _pull("business_name", "business_name"),
    _pull("status", "status"),
    _pull("timezone", "timezone"),
    _pull("currency", "currency", "upper"),
    _pull("country", "country", "iso_country"),
    *_address("address", "address", _SQUARE_ADDRESS, direction="pull"),
    _pull("created_at", "created_at", "datetime"),
]

# ---------------------------------------------------------------- QuickBooks (amounts in major units)

_QBO_ADDRESS = ("Line1", "Line2", "City", "CountrySubDivisionCode", "PostalCode", "Country")

QUICKBOOKS_CUSTOMERS: list[Entry] = [
    _e("first_name", "GivenName"),
    _e("last_name", "FamilyName"),
    _e("company", "CompanyName"),
    _e("email", "PrimaryEmailAddr.Address"),
    # DisplayName is required and unique: the name, else the company, else the email (a later
    # entry writing the same field wins, and a missing value writes nothing).
    _push("email", "DisplayName"),
    _push("company", "DisplayName"),
    _push("first_name", "DisplayName", "split_name"),
    _push("last_name", "DisplayName", "split_name"),
    _e("phone", "PrimaryPhone.FreeFormNumber", "e164"),
    *_address("address", "BillAddr", _QBO_ADDRESS),
]

QUICKBOOKS_INVOICES: list[Entry] = [
    _pull("external_id", "Id"),
    _e("number", "DocNumber"),
    _e("customer_external_id", "CustomerRef.value", required=True),
    _e("issue_date", "TxnDate", "date"),
    _e("due_date", "DueDate", "date"),
    _e("email", "BillEmail.Address"),
    _e("note", "PrivateNote"),
    *_money("total", "TotalAmt", "CurrencyRef.value", transform="minor_units"),
    *_money("balance", "Balance", "CurrencyRef.value", transform="minor_units"),
    _push("total.currency", "CurrencyRef.value", "upper"),
    _pull("lines[].external_id", "Line[].Id"),
    _e("lines[].kind", "Line[].DetailType", default="SalesItemLineDetail"),
    _e("lines[].description", "Line[].Description"),
    *_money("lines[].amount", "Line[].Amount", "CurrencyRef.value", direction="both",
            transform="minor_units"),
    _e("lines[].quantity", "Line[].SalesItemLineDetail.Qty"),
    *_money("lines[].unit_price", "Line[].SalesItemLineDetail.UnitPrice", "CurrencyRef.value",
            direction="both", transform="minor_units"),
    _e("lines[].item_external_id", "Line[].SalesItemLineDetail.ItemRef.value"),
    _pull("created_at", "MetaData.CreateTime", "datetime"),
    _pull("updated_at", "MetaData.LastUpdatedTime", "datetime"),
]

QUICKBOOKS_PAYMENTS: list[Entry] = [
    _pull("external_id", "Id"),
    _e("customer_external_id", "CustomerRef.value", required=True),
    *_money("amount", "TotalAmt", "CurrencyRef.value", direction="both", transform="minor_units"),
    _e("payment_date", "TxnDate", "date"),
    _e("reference", "PaymentRefNum"),
    _e("description", "PrivateNote"),
    *_money("applications[].amount", "Line[].Amount", "CurrencyRef.value", direction="both",
            transform="minor_units"),
    _e("applications[].document_external_id", "Line[].LinkedTxn.0.TxnId"),
    _pull("applications[].document_type", "Line[].LinkedTxn.0.TxnType"),
    _push("applications[].document_type", "Line[].LinkedTxn.0.TxnType", default="Invoice"),
    _pull("created_at", "MetaData.CreateTime", "datetime"),
    _pull("updated_at", "MetaData.LastUpdatedTime", "datetime"),
]

QUICKBOOKS_COMPANY_INFO: list[Entry] = [
    _pull("external_id", "Id"),
    _pull("name", "CompanyName"),
    _pull("legal_name", "LegalName"),
    _pull("email", "Email.Address"),
    _pull("phone", "PrimaryPhone.FreeFormNumber"),
    _pull("website", "WebAddr.URI"),
    _pull("country", "Country", "iso_country"),
    *_address("address", "CompanyAddr", _QBO_ADDRESS, direction="pull"),
    _pull("created_at", "MetaData.CreateTime", "datetime"),
]

# ---------------------------------------------------------------- Mailchimp

_MAILCHIMP_MERGE_ADDRESS = ("addr1", "addr2", "city", "state", "zip", "country")
_MAILCHIMP_LIST_ADDRESS = ("address1", "address2", "city", "state", "zip", "country")

MAILCHIMP_CONTACTS: list[Entry] = [
    _e("email", "email_address", required=True),
    _e("first_name", "merge_fields.FNAME"),
    _e("last_name", "merge_fields.LNAME"),
    _e("phone", "merge_fields.PHONE", "e164"),
    *_address("address", "merge_fields.ADDRESS", _MAILCHIMP_MERGE_ADDRESS),
    _e("tags[]", "tags[].name"),
    _e("marketing_consent", "status", "bool"),
]

MAILCHIMP_LISTS: list[Entry] = [
    _pull("external_id", "id"),
    _e("name", "name", required=True),
    _e("company", "contact.company"),
    *_address("address", "contact", _MAILCHIMP_LIST_ADDRESS),
    _e("permission_reminder", "permission_reminder"),
    _e("from_name", "campaign_defaults.from_name"),
    _e("from_email", "campaign_defaults.from_email"),
    _e("subject", "campaign_defaults.subject"),
    _e("language", "campaign_defaults.language"),
    _e("email_type_option", "email_type_option", "bool"),
    _pull("member_count", "stats.member_count"),
    _pull("created_at", "date_created", "datetime"),
]

BUILTIN_MAPPINGS: dict[tuple[str, str], list[Entry]] = {
    ("stripe", "customers"): STRIPE_CUSTOMERS,
    ("stripe", "payment_intents"): STRIPE_PAYMENT_INTENTS,
    ("stripe", "charges"): STRIPE_CHARGES,
    ("stripe", "refunds"): STRIPE_REFUNDS,
    ("stripe", "balance_transactions"): STRIPE_BALANCE_TRANSACTIONS,
    ("square", "customers"): SQUARE_CUSTOMERS,
    ("square", "orders"): SQUARE_ORDERS,
    ("square", "inventory"): SQUARE_INVENTORY,
    ("square", "locations"): SQUARE_LOCATIONS,
    ("quickbooks", "customers"): QUICKBOOKS_CUSTOMERS,
    ("quickbooks", "invoices"): QUICKBOOKS_INVOICES,
    ("quickbooks", "payments"): QUICKBOOKS_PAYMENTS,
    ("quickbooks", "company_info"): QUICKBOOKS_COMPANY_INFO,
    ("mailchimp", "contacts"): MAILCHIMP_CONTACTS,
    ("mailchimp", "lists"): MAILCHIMP_LISTS,
}
