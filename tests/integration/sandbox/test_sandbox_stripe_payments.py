"""Stripe payment intents, charges, refunds and balance transactions through the SDK."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import stripe

from tests.integration.sandbox.stripe_helpers import stripe_account, stripe_client


def _paid_intent(client: stripe.StripeClient, customer: str, amount: int = 1250) -> Any:
    return client.v1.payment_intents.create(
        params={
            "amount": amount,
            "currency": "usd",
            "customer": customer,
            "payment_method": "pm_card_visa",
            "confirm": True,
        }
    )


def test_confirmed_payment_intent_books_a_charge_and_balance_transaction(sandbox_server: Any) -> None:
    """A confirmed intent succeeds with a charge whose balance transaction nets the fee."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    customer = client.v1.customers.create(params={"email": "p@example.com"}).id
    intent = _paid_intent(client, customer)
    assert ("succeeded", 1250) == (intent.status, intent.amount_received)
    [charge] = client.v1.charges.list(params={"payment_intent": intent.id}).data
    assert (intent.latest_charge, customer, "succeeded") == (charge.id, charge.customer, charge.status)
    txn = client.v1.balance_transactions.retrieve(charge.balance_transaction)
    assert (1250, charge.id, txn.amount - txn.fee) == (txn.amount, txn.source, txn.net)
    assert [intent.id] == [i.id for i in client.v1.payment_intents.list(params={"customer": customer}).data]


def test_declined_card_raises_card_error(sandbox_server: Any) -> None:
    """Stripe's declining test card gives a 402 CardError and a failed charge."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    with pytest.raises(stripe.CardError) as caught:
        client.v1.payment_intents.create(
            params={
                "amount": 500,
                "currency": "usd",
                "payment_method": "pm_card_chargeDeclined",
                "confirm": True,
            }
        )
    assert (402, "card_declined") == (caught.value.http_status, caught.value.code)
    assert ["failed"] == [c.status for c in client.v1.charges.list().data]


def test_refunds_partial_then_rest_then_refuse_more(sandbox_server: Any) -> None:
    """Two refunds use up a charge; a third is refused; refunds list by charge."""
    _, key = stripe_account(sandbox_server)
    client = stripe_client(sandbox_server, key)
    intent = _paid_intent(client, client.v1.customers.create().id, amount=1000)
    first = client.v1.refunds.create(
        params={"payment_intent": intent.id, "amount": 400}, options={"idempotency_key": str(uuid.uuid4())}
    )
    rest = client.v1.refunds.create(
        params={"charge": intent.latest_charge, "reason": "requested_by_customer"}
    )
    assert (400, 600, intent.latest_charge) == (first.amount, rest.amount, rest.charge)
    charge = client.v1.charges.retrieve(intent.latest_charge)
    assert (1000, True) == (charge.amount_refunded, charge.refunded)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        client.v1.refunds.create(params={"charge": intent.latest_charge})
    assert "charge_already_refunded" == caught.value.code
    listed = client.v1.refunds.list(params={"charge": intent.latest_charge}).data
    assert [rest.id, first.id] == [r.id for r in listed]
    refund_txns = client.v1.balance_transactions.list(params={"type": "refund"}).data
    assert [-600, -400] == [t.amount for t in refund_txns]
    types = [
        e.type for e in client.v1.events.list(params={"types": ["refund.created", "charge.refunded"]}).data
    ]
    assert ["charge.refunded", "refund.created"] * 2 == types


def test_refund_of_unknown_charge_is_a_404(sandbox_server: Any) -> None:
    """Refunding a charge that does not exist raises a 404 resource_missing."""
    _, key = stripe_account(sandbox_server)
    with pytest.raises(stripe.InvalidRequestError) as caught:
        stripe_client(sandbox_server, key).v1.refunds.create(params={"charge": "ch_missing"})
    assert (404, "resource_missing", "charge") == (
        caught.value.http_status,
        caught.value.code,
        caught.value.param,
    )
