"""The consumer reads deliveries straight from aiormq: the same Delivery as through aio-pika."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aio_pika import IncomingMessage
from aiormq import spec
from aiormq.abc import DeliveredMessage
from hypothesis import given
from hypothesis import strategies as st
from pamqp.header import ContentHeader

from consumers.consumer import delivery_of, to_delivery

text = st.text(max_size=20)  # NUL characters included: both ways must drop them
headers = st.dictionaries(st.text(min_size=1, max_size=8), st.one_of(st.integers(-5, 5), text, st.booleans()),
                          max_size=4)


def delivered(body: bytes, exchange: str, routing_key: str, redelivered: bool, tag: int,
              properties: dict[str, Any]) -> DeliveredMessage:
    return DeliveredMessage(
        delivery=spec.Basic.Deliver(consumer_tag="ctag", delivery_tag=tag, redelivered=redelivered,
                                    exchange=exchange, routing_key=routing_key),
        header=ContentHeader(properties=spec.Basic.Properties(**properties), body_size=len(body)),
        body=body,
        channel=None,  # type: ignore[arg-type]  # neither reads it
    )


exchanges = st.from_regex(r"\A[a-zA-Z0-9_.:-]{0,20}\Z")  # the names AMQP allows


@given(body=st.binary(max_size=40), exchange=exchanges, routing_key=text, redelivered=st.booleans(),
       tag=st.integers(1, 2**40), message_id=st.none() | text, reply_to=st.none() | text,
       correlation_id=st.none() | text, header_table=st.none() | headers)
def test_straight_from_aiormq_is_what_aio_pika_gives(
    body: bytes, exchange: str, routing_key: str, redelivered: bool, tag: int, message_id: str | None,
    reply_to: str | None, correlation_id: str | None, header_table: dict[str, Any] | None,
) -> None:
    message = delivered(body, exchange, routing_key, redelivered, tag, {
        "message_id": message_id, "reply_to": reply_to, "correlation_id": correlation_id,
        "headers": header_table, "content_type": "application/json", "delivery_mode": 2,
        "timestamp": datetime(2026, 12, 6, 8, 0, tzinfo=UTC),
    })
    assert to_delivery(IncomingMessage(message)) == delivery_of(message)
