"""The publish path's edges that a real broker shows only by chance: a channel the broker
closed while its reopening is under way, a confirm failed by a cancelled connection reader,
and marks in flight when the relay is cancelled at shutdown."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from consumers.publishers import AmqpPublisher, OutboxRelay
from service.database.outbox import OutboxMessage
from service.errors import NetworkError

MESSAGE = OutboxMessage("integration.events", "job.succeeded", b"{}", "m-1")


class Underlay:
    """Stands in for aiormq's Channel: records publishes, fails them as told."""

    def __init__(self, *, closed: bool = False, fail_with: BaseException | None = None) -> None:
        self.is_closed = closed
        self.fail_with = fail_with
        self.published: list[bytes] = []

    async def basic_publish(self, body: bytes, **kwargs: Any) -> None:
        if self.fail_with is not None:
            raise self.fail_with
        self.published.append(body)


class Robust:
    """Stands in for aio-pika's robust channel: hands out the current underlay channel."""

    def __init__(self, underlay: Underlay) -> None:
        self.underlay = underlay

    async def get_underlay_channel(self) -> Underlay:
        return self.underlay


async def test_a_channel_the_broker_closed_takes_no_publish() -> None:
    """Before its robust reopening, the underlay channel is the closed one: a publish
    queued on it would reach a dead channel number (the broker then closes the whole
    connection) or the reopened one (shifting its confirm numbering)."""
    underlay = Underlay(closed=True)
    with pytest.raises(NetworkError, match="ChannelInvalidStateError"):
        await AmqpPublisher(Robust(underlay)).publish(MESSAGE)  # type: ignore[arg-type]
    assert underlay.published == []


async def test_a_confirm_failed_by_a_cancelled_connection_reader_is_a_network_error() -> None:
    """aiormq fails pending confirms with CancelledError when its reader is cancelled; that
    is the broker going away, and must not end the relay's task as if it were cancelled."""
    underlay = Underlay(fail_with=asyncio.CancelledError())
    with pytest.raises(NetworkError, match="connection closed"):
        await AmqpPublisher(Robust(underlay)).publish(MESSAGE)  # type: ignore[arg-type]


async def test_a_nack_is_a_network_error_that_says_so() -> None:
    """aiormq fails the confirm of a Basic.Nack with DeliveryError."""
    import aiormq
    from aiormq import spec

    nack = aiormq.exceptions.DeliveryError(None, spec.Basic.Nack(delivery_tag=1))
    with pytest.raises(NetworkError, match="refused the message"):
        await AmqpPublisher(Robust(Underlay(fail_with=nack))).publish(MESSAGE)  # type: ignore[arg-type]


async def test_a_publish_whose_own_task_is_cancelled_stays_cancelled() -> None:
    entered = asyncio.Event()

    class Hangs(Underlay):
        async def basic_publish(self, body: bytes, **kwargs: Any) -> None:
            entered.set()
            await asyncio.Event().wait()

    task = asyncio.ensure_future(AmqpPublisher(Robust(Hangs())).publish(MESSAGE))  # type: ignore[arg-type]
    await asyncio.wait_for(entered.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_marks_in_flight_when_the_relay_is_cancelled_are_kept_for_the_next_flush() -> None:
    """Shutdown cancels the mark loop, maybe in the middle of its statement; the final
    relay pass flushes what it held, instead of leaving those rows to be published again."""
    entered, executed = asyncio.Event(), []

    class Pool:
        hang = True

        async def execute(self, query: str, ids: list[int]) -> None:
            if self.hang:
                entered.set()
                await asyncio.Event().wait()
            executed.append(sorted(ids))

    pool = Pool()
    relay = OutboxRelay(pool, AmqpPublisher(Robust(Underlay())))  # type: ignore[arg-type]
    relay._sent = [1, 2]
    flush = asyncio.ensure_future(relay.flush_marks())
    await asyncio.wait_for(entered.wait(), 5)
    flush.cancel()
    with pytest.raises(asyncio.CancelledError):
        await flush
    pool.hang = False
    await relay.flush_marks()
    assert executed == [[1, 2]]
