"""The platform shapes of CONTRACT section 4, as frozen pydantic models, and what is supported.

Every provider record is mapped to and from these shapes (``service.mapping``). Conventions:

- ``id`` is the platform's own id, present when the provider carries it (Stripe
  ``metadata.platform_id``, Square ``reference_id``) or when the platform sent the record;
  ``external_id`` is the provider's id of the record.
- A reference to another provider record is named ``<thing>_external_id`` and holds the
  provider's id (a Square customer id, a QuickBooks invoice Id): the engine resolves platform
  ids through its record links, never the mapping.
- Money is always ``{"amount_minor": int, "currency": "ISO 4217, upper case"}``; times are
  RFC 3339 in UTC (``...Z``); calendar dates are ``YYYY-MM-DD``; quantities are decimal strings
  (``"1.5"``) because Square sends them as strings and floats would lose digits.

The customer shape is the contract's exactly; the others follow it in spirit.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

import pydantic
from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    PlainSerializer,
    StrictBool,
    StrictInt,
)

from service.errors import UnknownEntityError, ValidationError


def _to_utc(value: datetime) -> datetime:
    return value.astimezone(UTC)


def _rfc3339(value: datetime) -> str:
    text = value.astimezone(UTC).isoformat()
    return text.removesuffix("+00:00") + "Z"


def _quantity_text(value: Any) -> Any:
    """A number becomes its decimal text (QuickBooks sends 1, Square "1"); text stays as sent."""
    if isinstance(value, int | float | Decimal) and not isinstance(value, bool):
        text = format(Decimal(str(value)), "f")
        return text.rstrip("0").rstrip(".") if "." in text else text
    return value


UtcDatetime = Annotated[AwareDatetime, AfterValidator(_to_utc), PlainSerializer(_rfc3339, return_type=str)]
CountryCode = Annotated[str, Field(pattern=r"^[A-Z]{2}$", description="ISO 3166-1 alpha-2")]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, upper case")]
E164Phone = Annotated[str, Field(pattern=r"^\+[1-9][0-9]{1,14}$", description="E.164")]
Email = Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+$")]
Quantity = Annotated[str, BeforeValidator(_quantity_text), Field(pattern=r"^-?[0-9]+(\.[0-9]+)?$")]
Metadata = dict[str, JsonValue]


class Shape(BaseModel):
    """Base of every platform shape: immutable, and unknown fields are refused."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class Money(Shape):
    amount_minor: StrictInt
    currency: CurrencyCode


class Address(Shape):
    line1: str | None = None
    line2: str | None = None
    city: str | None = None
    region: str | None = None
    postal_code: str | None = None
    country: CountryCode | None = None


class Customer(Shape):
    """A customer (Stripe, Square, QuickBooks) or contact (Mailchimp): the contract's shape."""

    id: str | None = None
    email: Email | None = None
    first_name: str | None = None
    last_name: str | None = None
    phone: E164Phone | None = None
    company: str | None = None
    address: Address | None = None
    tags: list[str] = Field(default_factory=list)
    marketing_consent: StrictBool | None = None
    metadata: Metadata = Field(default_factory=dict)


class OrderLineItem(Shape):
    external_id: str | None = None
    name: str | None = None
    quantity: Quantity
    catalog_object_external_id: str | None = None
    unit_price: Money | None = None
    total: Money | None = None
    note: str | None = None


class Order(Shape):
    """A sale (Square order)."""

    id: str | None = None
    external_id: str | None = None
    location_external_id: str | None = None
    customer_external_id: str | None = None
    state: str | None = None
    line_items: list[OrderLineItem] = Field(default_factory=list)
    total: Money | None = None
    tax_total: Money | None = None
    discount_total: Money | None = None
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None
    closed_at: UtcDatetime | None = None
    metadata: Metadata = Field(default_factory=dict)


class InvoiceLine(Shape):
    external_id: str | None = None
    kind: str | None = Field(None, description="the provider's line type, e.g. SalesItemLineDetail")
    description: str | None = None
    quantity: Quantity | None = None
    unit_price: Money | None = None
    amount: Money | None = None
    item_external_id: str | None = None


class Invoice(Shape):
    """A bill sent to a customer (QuickBooks invoice)."""

    id: str | None = None
    external_id: str | None = None
    number: str | None = None
    customer_external_id: str | None = None
    issue_date: date | None = None
    due_date: date | None = None
    lines: list[InvoiceLine] = Field(default_factory=list)
    total: Money | None = None
    balance: Money | None = None
    email: Email | None = None
    note: str | None = None
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None


class PaymentApplication(Shape):
    """The part of a payment applied to one document (QuickBooks LinkedTxn)."""

    document_external_id: str | None = None
    document_type: str | None = Field(None, description="e.g. Invoice")
    amount: Money | None = None


class Payment(Shape):
    """Money received (Stripe payment intent, QuickBooks payment)."""

    id: str | None = None
    external_id: str | None = None
    customer_external_id: str | None = None
    amount: Money | None = None
    amount_received: Money | None = None
    status: str | None = None
    description: str | None = None
    reference: str | None = None
    payment_date: date | None = None
    applications: list[PaymentApplication] = Field(default_factory=list)
    latest_charge_external_id: str | None = None
    created_at: UtcDatetime | None = None
    updated_at: UtcDatetime | None = None
    metadata: Metadata = Field(default_factory=dict)


class Refund(Shape):
    id: str | None = None
    external_id: str | None = None
    charge_external_id: str | None = None
    payment_intent_external_id: str | None = None
    amount: Money | None = None
    reason: str | None = None
    status: str | None = None
    created_at: UtcDatetime | None = None
    metadata: Metadata = Field(default_factory=dict)


class Charge(Shape):
    id: str | None = None
    external_id: str | None = None
    payment_intent_external_id: str | None = None
    customer_external_id: str | None = None
    balance_transaction_external_id: str | None = None
    amount: Money | None = None
    amount_refunded: Money | None = None
    status: str | None = None
    paid: StrictBool | None = None
    refunded: StrictBool | None = None
    description: str | None = None
    created_at: UtcDatetime | None = None
    metadata: Metadata = Field(default_factory=dict)


class BalanceTransaction(Shape):
    external_id: str | None = None
    source_external_id: str | None = None
    type: str | None = None
    status: str | None = None
    description: str | None = None
    amount: Money | None = None
    fee: Money | None = None
    net: Money | None = None
    created_at: UtcDatetime | None = None
    available_on: UtcDatetime | None = None


class InventoryCount(Shape):
    """Stock of one catalog item at one location (Square); pushed as a physical count."""

    id: str | None = None  # the platform id, so a pushed record can be told apart

    catalog_object_external_id: str
    location_external_id: str
    state: str | None = None
    quantity: Quantity
    calculated_at: UtcDatetime | None = None


class Location(Shape):
    external_id: str | None = None
    name: str | None = None
    business_name: str | None = None
    status: str | None = None
    timezone: str | None = None
    currency: CurrencyCode | None = None
    country: CountryCode | None = None
    address: Address | None = None
    created_at: UtcDatetime | None = None


class MarketingList(Shape):
    """A Mailchimp audience (list) with what creating one requires."""

    id: str | None = None  # the platform id, so a pushed record can be told apart

    external_id: str | None = None
    name: str
    company: str | None = None
    address: Address | None = None
    permission_reminder: str | None = None
    from_name: str | None = None
    from_email: Email | None = None
    subject: str | None = None
    language: str | None = None
    email_type_option: StrictBool | None = None
    member_count: StrictInt | None = None
    created_at: UtcDatetime | None = None


class Company(Shape):
    """The account's own business details (QuickBooks CompanyInfo)."""

    external_id: str | None = None
    name: str | None = None
    legal_name: str | None = None
    email: Email | None = None
    phone: str | None = None
    website: str | None = None
    country: CountryCode | None = None
    address: Address | None = None
    created_at: UtcDatetime | None = None


Direction = Literal["push", "pull"]
DIRECTIONS: tuple[Direction, ...] = ("push", "pull")

ENTITY_MODELS: dict[tuple[str, str], type[Shape]] = {
    ("stripe", "customers"): Customer,
    ("stripe", "payment_intents"): Payment,
    ("stripe", "charges"): Charge,
    ("stripe", "refunds"): Refund,
    ("stripe", "balance_transactions"): BalanceTransaction,
    ("square", "customers"): Customer,
    ("square", "orders"): Order,
    ("square", "inventory"): InventoryCount,
    ("square", "locations"): Location,
    ("quickbooks", "customers"): Customer,
    ("quickbooks", "invoices"): Invoice,
    ("quickbooks", "payments"): Payment,
    ("quickbooks", "company_info"): Company,
    ("mailchimp", "contacts"): Customer,
    ("mailchimp", "lists"): MarketingList,
}

_PUSH: frozenset[tuple[str, str]] = frozenset({
    ("stripe", "customers"), ("stripe", "refunds"),
    ("square", "customers"), ("square", "orders"), ("square", "inventory"),
    ("quickbooks", "customers"), ("quickbooks", "invoices"), ("quickbooks", "payments"),
    ("mailchimp", "contacts"), ("mailchimp", "lists"),
})

# CONTRACT section 4: every entity is pulled (and reaches us by webhook); some are pushed.
SUPPORTED: frozenset[tuple[str, str, Direction]] = frozenset(
    {(provider, entity, "pull") for provider, entity in ENTITY_MODELS}
    | {(provider, entity, "push") for provider, entity in _PUSH}
)

PROVIDER_ENTITIES: dict[str, tuple[str, ...]] = {}
for _provider, _entity in ENTITY_MODELS:
    PROVIDER_ENTITIES.setdefault(_provider, ())
    PROVIDER_ENTITIES[_provider] += (_entity,)


def check_supported(provider: str, entity: str, direction: str | None = None) -> None:
    """Refuse an unknown provider, entity or direction; raises UnknownEntityError (one line)."""
    if provider not in PROVIDER_ENTITIES:
        raise UnknownEntityError(
            f'unknown provider "{provider}" (expected one of {", ".join(PROVIDER_ENTITIES)})'
        )
    if entity not in PROVIDER_ENTITIES[provider]:
        known = ", ".join(PROVIDER_ENTITIES[provider])
        raise UnknownEntityError(f'unknown entity "{entity}" for {provider} (expected one of {known})')
    if direction is None:
        return
    if direction not in DIRECTIONS:
        raise UnknownEntityError(f'unknown direction "{direction}" (expected push or pull)')
    if (provider, entity, direction) not in SUPPORTED:
        raise UnknownEntityError(f"{provider} {entity} cannot be {direction}ed (pull only)")


def entity_model(provider: str, entity: str) -> type[Shape]:
    """The platform model of (provider, entity); raises UnknownEntityError."""
    check_supported(provider, entity)
    return ENTITY_MODELS[(provider, entity)]


def parse_record(provider: str, entity: str, record: dict[str, Any]) -> Shape:
    """Validate a platform-shaped dict as its model; raises ValidationError naming the field."""
    model = entity_model(provider, entity)
    try:
        return model.model_validate(record)
    except pydantic.ValidationError as exc:
        raise ValidationError(describe_error(exc)) from None


def describe_error(exc: pydantic.ValidationError) -> str:
    """One line naming the first bad field of a pydantic error (and how many more there are)."""
    first = exc.errors(include_url=False)[0]
    where = ".".join(str(part) for part in first["loc"]) or "record"
    more = exc.error_count() - 1
    tail = f" (and {more} more)" if more else ""
    return f"{where}: {first['msg']}{tail}"
