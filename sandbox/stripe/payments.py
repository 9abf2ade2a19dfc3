"""Stripe payment intents, charges, refunds and balance transactions (providers.md 1.3).

Confirming a payment intent (or creating a charge) with a test card succeeds at once and
books a charge and a balance transaction; ``pm_card_chargeDeclined`` / ``tok_chargeDeclined``
decline with a 402 ``card_error`` as Stripe's test cards do.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sandbox.stripe import forms
from sandbox.stripe.forms import StripeError, check_known, text
from sandbox.stripe.resources import created_match, list_page
from sandbox.stripe.store import new_id, require

if TYPE_CHECKING:
    from sandbox.stripe.plugin import Call

DECLINED = frozenset({"pm_card_chargeDeclined", "tok_chargeDeclined"})
_PI_WRITE = frozenset(
    {
        "amount",
        "currency",
        "customer",
        "description",
        "metadata",
        "payment_method",
        "payment_method_types",
        "confirm",
        "receipt_email",
        "capture_method",
        "automatic_payment_methods",
        "off_session",
        "return_url",
        "statement_descriptor",
        "setup_future_usage",
        "expand",
    }
)
_REFUND_REASONS = frozenset({"duplicate", "fraudulent", "requested_by_customer"})


def _money(params: dict[str, Any]) -> tuple[int, str]:
    amount = forms.as_int({"amount": require(params, "amount")}, "amount", low=1)
    currency = str(require(params, "currency")).lower()
    if len(currency) != 3:
        raise StripeError(400, message=f"Invalid currency: {currency}.", param="currency")
    return int(amount or 0), currency


def _customer(call: Call) -> str | None:
    customer = text(call.params, "customer")
    if customer is not None:
        call.store.customers.get(customer)
    return customer


def _balance_transaction(call: Call, *, amount: int, currency: str, source: str, kind: str) -> str:
    fee = round(amount * 0.029) + 30 if kind == "charge" else 0
    details = (
        [
            {
                "amount": fee,
                "application": None,
                "currency": currency,
                "description": "Stripe processing fees",
                "type": "stripe_fee",
            }
        ]
        if fee
        else []
    )
    txn = call.store.balance_transactions.add(
        {
            "id": new_id("txn_")[:28],
            "object": "balance_transaction",
            "amount": amount,
            "available_on": call.now + 2 * 86400,
            "created": call.now,
            "currency": currency,
            "description": None,
            "exchange_rate": None,
            "fee": fee,
            "fee_details": details,
            "net": amount - fee,
            "reporting_category": kind,
            "source": source,
            "status": "pending",
            "type": kind,
        }
    )
    return str(txn["id"])


def _charge(
    call: Call,
    *,
    amount: int,
    currency: str,
    customer: str | None,
    payment_method: str,
    payment_intent: str | None,
    description: str | None,
) -> dict[str, Any]:
    """Book a charge (succeeded, or failed for a declining test card)."""
    declined = payment_method in DECLINED
    charge: dict[str, Any] = {
        "id": new_id("ch_")[:27],
        "object": "charge",
        "amount": amount,
        "amount_captured": 0 if declined else amount,
        "amount_refunded": 0,
        "balance_transaction": None,
        "captured": not declined,
        "created": call.now,
        "currency": currency,
        "customer": customer,
        "description": description,
        "failure_code": "card_declined" if declined else None,
        "failure_message": "Your card was declined." if declined else None,
        "livemode": call.store.livemode,
        "metadata": {},
        "paid": not declined,
        "payment_intent": payment_intent,
        "payment_method": payment_method,
        "receipt_email": None,
        "refunded": False,
        "status": "failed" if declined else "succeeded",
    }
    if not declined:
        charge["balance_transaction"] = _balance_transaction(
            call, amount=amount, currency=currency, source=charge["id"], kind="charge"
        )
    call.store.charges.add(charge)
    call.store.emit(
        "charge.failed" if declined else "charge.succeeded", charge, now=call.now, request=call.request_ref
    )
    return charge


def _decline(charge: dict[str, Any], intent: dict[str, Any] | None) -> StripeError:
    extra: dict[str, Any] = {"charge": charge["id"], "decline_code": "generic_decline"}
    if intent is not None:
        extra["payment_intent"] = intent
    return StripeError(
        402, message="Your card was declined.", type_="card_error", code="card_declined", **extra
    )


def _confirm(call: Call, intent: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    payment_method = text(call.params, "payment_method") or intent["payment_method"]
    if payment_method is None:
        raise StripeError(
            400,
            message="You cannot confirm this PaymentIntent because it's missing a payment method.",
            code="payment_intent_unexpected_state",
        )
    intent["payment_method"] = payment_method
    charge = _charge(
        call,
        amount=intent["amount"],
        currency=intent["currency"],
        customer=intent["customer"],
        payment_method=payment_method,
        payment_intent=intent["id"],
        description=intent["description"],
    )
    intent["latest_charge"] = charge["id"]
    if charge["status"] == "failed":
        intent["status"] = "requires_payment_method"
        intent["last_payment_error"] = {
            "code": "card_declined",
            "message": "Your card was declined.",
            "type": "card_error",
        }
        call.store.emit("payment_intent.payment_failed", intent, now=call.now, request=call.request_ref)
        raise _decline(charge, intent)
    intent.update(status="succeeded", amount_received=intent["amount"], last_payment_error=None)
    call.store.emit("payment_intent.succeeded", intent, now=call.now, request=call.request_ref)
    return 200, intent


def create_payment_intent(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(
        call.params, _PI_WRITE, {"automatic_payment_methods": frozenset({"enabled", "allow_redirects"})}
    )
    amount, currency = _money(call.params)
    intent_id = new_id("pi_")[:27]
    intent: dict[str, Any] = {
        "id": intent_id,
        "object": "payment_intent",
        "amount": amount,
        "amount_capturable": 0,
        "amount_received": 0,
        "capture_method": text(call.params, "capture_method") or "automatic",
        "client_secret": f"{intent_id}_secret_{new_id('')[:24]}",
        "confirmation_method": "automatic",
        "created": call.now,
        "currency": currency,
        "customer": _customer(call),
        "description": text(call.params, "description"),
        "last_payment_error": None,
        "latest_charge": None,
        "livemode": call.store.livemode,
        "metadata": forms.metadata_update({}, call.params.get("metadata")),
        "payment_method": text(call.params, "payment_method"),
        "payment_method_types": ["card"],
        "receipt_email": text(call.params, "receipt_email"),
        "status": "requires_confirmation" if "payment_method" in call.params else "requires_payment_method",
    }
    call.store.payment_intents.add(intent)
    call.store.emit("payment_intent.created", intent, now=call.now, request=call.request_ref)
    if forms.as_bool(call.params, "confirm"):
        return _confirm(call, intent)
    return 200, intent


def confirm_payment_intent(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(call.params, frozenset({"payment_method", "return_url", "off_session", "expand"}), {})
    intent = call.store.payment_intents.get(call.ids["id"])
    if intent["status"] == "succeeded":
        raise StripeError(
            400,
            message="This PaymentIntent's status is succeeded, so it cannot be confirmed.",
            code="payment_intent_unexpected_state",
        )
    return _confirm(call, intent)


def retrieve(collection: str) -> Callable[[Call], tuple[int, dict[str, Any]]]:
    def handler(call: Call) -> tuple[int, dict[str, Any]]:
        check_known(call.params, frozenset({"expand", "client_secret"}), {})
        return 200, getattr(call.store, collection).get(call.ids["id"])

    return handler


def list_payment_intents(call: Call) -> tuple[int, dict[str, Any]]:
    return list_page(
        call,
        call.store.payment_intents,
        "/v1/payment_intents",
        frozenset({"created", "customer"}),
        created_match(call, {"customer": "customer"}),
    )


def create_charge(call: Call) -> tuple[int, dict[str, Any]]:
    """The legacy Charges API: a test token (``tok_visa``) or a customer pays at once."""
    check_known(
        call.params,
        frozenset(
            {
                "amount",
                "currency",
                "customer",
                "source",
                "description",
                "metadata",
                "capture",
                "receipt_email",
                "statement_descriptor",
                "expand",
            }
        ),
        {},
    )
    amount, currency = _money(call.params)
    customer = _customer(call)
    source = text(call.params, "source")
    if source is None and customer is None:
        raise StripeError(
            400, message="Must provide source or customer.", code="parameter_missing", param="source"
        )
    charge = _charge(
        call,
        amount=amount,
        currency=currency,
        customer=customer,
        payment_method=source or "card_default",
        payment_intent=None,
        description=text(call.params, "description"),
    )
    charge["metadata"] = forms.metadata_update({}, call.params.get("metadata"))
    if charge["status"] == "failed":
        raise _decline(charge, None)
    return 200, charge


def list_charges(call: Call) -> tuple[int, dict[str, Any]]:
    return list_page(
        call,
        call.store.charges,
        "/v1/charges",
        frozenset({"created", "customer", "payment_intent", "transfer_group"}),
        created_match(call, {"customer": "customer", "payment_intent": "payment_intent"}),
    )


def _refunded_charge(call: Call) -> dict[str, Any]:
    charge_id, intent_id = text(call.params, "charge"), text(call.params, "payment_intent")
    if charge_id is None and intent_id is None:
        raise StripeError(
            400,
            message="One of the following params should be provided for this request: "
            "payment_intent or charge.",
            code="parameter_missing",
        )
    if charge_id is None:
        intent = call.store.payment_intents.get(str(intent_id))
        if intent["latest_charge"] is None or intent["status"] != "succeeded":
            raise StripeError(
                400,
                message=f"This PaymentIntent ({intent_id}) does not have a successful charge to refund.",
                code="charge_not_refundable",
                param="payment_intent",
            )
        charge_id = intent["latest_charge"]
    try:
        return call.store.charges.get(str(charge_id))
    except StripeError:
        raise forms.no_such("charge", str(charge_id), status=404, param="charge") from None


def create_refund(call: Call) -> tuple[int, dict[str, Any]]:
    check_known(
        call.params,
        frozenset(
            {
                "charge",
                "payment_intent",
                "amount",
                "reason",
                "metadata",
                "expand",
                "instructions_email",
                "origin",
            }
        ),
        {},
    )
    charge = _refunded_charge(call)
    remaining = charge["amount_captured"] - charge["amount_refunded"]
    if remaining <= 0:
        raise StripeError(
            400,
            message=f"Charge {charge['id']} has already been refunded.",
            code="charge_already_refunded",
            param="charge",
        )
    amount = forms.as_int(call.params, "amount", low=1) or remaining
    if amount > remaining:
        raise StripeError(
            400,
            message=f"Refund amount ({amount}) is greater than unrefunded amount on charge ({remaining})",
            code="amount_too_large",
            param="amount",
        )
    reason = text(call.params, "reason")
    if reason is not None and reason not in _REFUND_REASONS:
        raise StripeError(
            400,
            message=f"Invalid reason: must be one of {', '.join(sorted(_REFUND_REASONS))}",
            param="reason",
        )
    refund_id = new_id("re_")[:27]
    refund = call.store.refunds.add(
        {
            "id": refund_id,
            "object": "refund",
            "amount": amount,
            "balance_transaction": _balance_transaction(
                call, amount=-amount, currency=charge["currency"], source=refund_id, kind="refund"
            ),
            "charge": charge["id"],
            "created": call.now,
            "currency": charge["currency"],
            "metadata": forms.metadata_update({}, call.params.get("metadata")),
            "payment_intent": charge["payment_intent"],
            "reason": reason,
            "status": "succeeded",
        }
    )
    previous = {"amount_refunded": charge["amount_refunded"], "refunded": charge["refunded"]}
    charge["amount_refunded"] += amount
    charge["refunded"] = charge["amount_refunded"] >= charge["amount_captured"]
    call.store.emit("refund.created", refund, now=call.now, request=call.request_ref)
    call.store.emit("charge.refunded", charge, now=call.now, request=call.request_ref, previous=previous)
    return 200, refund


def list_refunds(call: Call) -> tuple[int, dict[str, Any]]:
    return list_page(
        call,
        call.store.refunds,
        "/v1/refunds",
        frozenset({"created", "charge", "payment_intent"}),
        created_match(call, {"charge": "charge", "payment_intent": "payment_intent"}),
    )


def list_balance_transactions(call: Call) -> tuple[int, dict[str, Any]]:
    return list_page(
        call,
        call.store.balance_transactions,
        "/v1/balance_transactions",
        frozenset({"created", "payout", "source", "type", "currency"}),
        created_match(call, {"source": "source", "type": "type", "currency": "currency"}),
    )


ROUTES: tuple[tuple[str, str, Callable[[Call], tuple[int, dict[str, Any]]]], ...] = (
    ("POST", "/v1/payment_intents", create_payment_intent),
    ("GET", "/v1/payment_intents", list_payment_intents),
    ("GET", "/v1/payment_intents/{id}", retrieve("payment_intents")),
    ("POST", "/v1/payment_intents/{id}/confirm", confirm_payment_intent),
    ("POST", "/v1/charges", create_charge),
    ("GET", "/v1/charges", list_charges),
    ("GET", "/v1/charges/{id}", retrieve("charges")),
    ("POST", "/v1/refunds", create_refund),
    ("GET", "/v1/refunds", list_refunds),
    ("GET", "/v1/refunds/{id}", retrieve("refunds")),
    ("GET", "/v1/balance_transactions", list_balance_transactions),
    ("GET", "/v1/balance_transactions/{id}", retrieve("balance_transactions")),
)
