"""Coalesced acknowledgements: never one for a delivery whose outcome is not stored, every
stored one exactly once, and a multiple ack only where it saves frames."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any, cast

import aiormq
from hypothesis import given, settings
from hypothesis import strategies as st
from structlog.testing import capture_logs

from consumers.acks import AckBatcher, AckTracker
from consumers.consumer import QueueConsumer, Received
from service.metrics import Metrics
from service.ports import Delivery, Outcome


class Broker:
    """One channel as the broker sees it: the deliveries not settled yet, whoever saw them."""

    def __init__(self) -> None:
        self.next_tag = 1
        self.unsettled: set[int] = set()
        self.acked: Counter[int] = Counter()

    def deliver(self) -> int:
        tag, self.next_tag = self.next_tag, self.next_tag + 1
        self.unsettled.add(tag)
        return tag

    def ack(self, tag: int, *, multiple: bool) -> set[int]:
        """The tags the ack settles; an unknown tag would close the channel."""
        assert tag in self.unsettled, f"ack of unknown delivery tag {tag}"
        covered = {t for t in self.unsettled if t <= tag} if multiple else {tag}
        self.unsettled -= covered
        self.acked.update(covered)
        return covered


OPS = st.lists(
    st.one_of(
        st.tuples(st.sampled_from(["deliver", "unseen", "flush"]), st.just(0)),
        st.tuples(st.sampled_from(["done", "nack"]), st.integers(0, 64)),
    ),
    max_size=80,
)


@settings(max_examples=400, deadline=None)
@given(ops=OPS)
def test_acks_cover_only_stored_outcomes_and_each_once(ops: list[tuple[str, int]]) -> None:
    """Random interleavings of deliveries (some the consumer never sees, say one aiormq had
    no consumer for), outcomes stored, hand-backs and flushes: no flush acknowledges a
    delivery whose outcome is not stored, alone or under a multiple ack; a multiple ack
    covers more than one delivery; after a last flush every stored outcome is
    acknowledged exactly once."""
    broker, tracker = Broker(), AckTracker()
    running: list[int] = []
    stored: set[int] = set()

    def flush() -> None:
        cumulative, singles = tracker.take()
        if cumulative is not None:
            covered = broker.ack(cumulative, multiple=True)
            assert covered <= stored, f"acked {sorted(covered - stored)} under {cumulative}"
            assert len(covered) > 1
        for tag in singles:
            assert tag in stored
            broker.ack(tag, multiple=False)

    for op, pick in ops:
        if op == "deliver":
            tag = broker.deliver()
            running.append(tag)
        elif op == "unseen":
            broker.deliver()
        elif op == "flush":
            flush()
        elif running:
            tag = running.pop(pick % len(running))
            if op == "done":
                tracker.done(tag)
                stored.add(tag)
            else:  # the nack frame is queued first, then the tracker is told
                broker.unsettled.discard(tag)
                tracker.handed_back(tag)
    flush()
    assert {tag: 1 for tag in stored} == dict(broker.acked)
    assert (None, []) == tracker.take()


def test_deliveries_done_at_once_share_one_multiple_ack() -> None:
    tracker = AckTracker()
    for tag in (3, 1, 5, 2, 4):
        tracker.done(tag)
    assert (5, []) == tracker.take()
    assert (None, []) == tracker.take()


def test_a_slow_delivery_holds_back_no_other_ack() -> None:
    """Tag 1 still running: 2 to 4 are acknowledged alone, at once; once 1 is done, a
    multiple ack passes over them again."""
    tracker = AckTracker()
    for tag in (2, 3, 4):
        tracker.done(tag)
    assert (None, [2, 3, 4]) == tracker.take()
    tracker.done(6)
    assert (None, [6]) == tracker.take()
    tracker.done(1)
    assert (None, [1]) == tracker.take()  # alone: 2 to 4 are acknowledged already
    tracker.done(5)
    for tag in (7, 8):
        tracker.done(tag)
    assert (8, []) == tracker.take()  # 5, 7 and 8 (6 acknowledged already)


def test_a_single_done_delivery_is_not_a_multiple_ack() -> None:
    tracker = AckTracker()
    tracker.done(1)
    assert (None, [1]) == tracker.take()


# The batcher on a channel -------------------------------------------------------------


class FakeChannel:
    """An aiormq channel as the acks use it: the frames sent, in order."""

    def __init__(self, *, full: bool = False) -> None:
        self.frames: list[tuple[str, int, bool]] = []
        self.is_closed = False
        self.full = full  # the connection's write queue is full: every frame waits a turn
        self.writing = self.most_writing = 0  # acks waiting for room at once
        self.nacking = asyncio.Event()
        self.nacking.set()

    async def basic_ack(self, delivery_tag: int, multiple: bool = False, wait: bool = True) -> None:
        if self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("closed")
        self.writing += 1
        self.most_writing = max(self.most_writing, self.writing)
        if self.full:
            await asyncio.sleep(0)
        self.writing -= 1
        self.frames.append(("ack", delivery_tag, multiple))

    async def basic_nack(self, delivery_tag: int, multiple: bool = False, requeue: bool = True,
                         wait: bool = True) -> None:
        if self.is_closed:
            raise aiormq.exceptions.ChannelInvalidStateError("closed")
        await self.nacking.wait()
        self.frames.append(("nack", delivery_tag, multiple))


def batcher(channel: FakeChannel) -> AckBatcher:
    return AckBatcher(cast(aiormq.abc.AbstractChannel, channel))


async def turns(n: int = 5) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


async def test_acks_marked_in_one_loop_iteration_go_out_in_one_frame() -> None:
    channel = FakeChannel()
    acks = batcher(channel)
    for tag in range(1, 5):
        acks.done(tag)
    assert [] == channel.frames  # not before the iteration ends
    await turns()
    assert [("ack", 4, True)] == channel.frames


async def test_acks_keep_their_order_while_the_write_queue_is_full() -> None:
    """A multiple ack must not overtake the single ack of a tag it covers (the broker would
    close the channel over an unknown delivery tag), nor may the connection's write queue
    be left to order them: one sender at a time."""
    channel = FakeChannel(full=True)
    acks = batcher(channel)
    acks.done(2)
    acks.done(3)
    await asyncio.sleep(0)  # the sender takes 2 and 3 and waits to write 2
    acks.done(1)
    acks.done(4)
    await turns()
    assert [("ack", 2, False), ("ack", 3, False), ("ack", 4, True)] == channel.frames
    assert 1 == channel.most_writing


async def test_no_multiple_ack_covers_a_delivery_whose_nack_is_not_sent_yet() -> None:
    channel = FakeChannel()
    channel.nacking.clear()
    acks = batcher(channel)
    handing_back = asyncio.ensure_future(acks.hand_back(1))
    await asyncio.sleep(0)  # the nack waits for room on the connection
    acks.done(2)
    acks.done(3)
    await turns()
    assert [("ack", 2, False), ("ack", 3, False)] == channel.frames
    channel.nacking.set()
    await handing_back
    for tag in (4, 5):
        acks.done(tag)
    await turns()
    assert [("nack", 1, False), ("ack", 5, True)] == channel.frames[2:]


async def test_a_closed_channel_is_logged_once_and_its_acks_dropped() -> None:
    channel = FakeChannel()
    channel.is_closed = True
    acks = batcher(channel)
    with capture_logs() as logs:
        for tag in (1, 2):
            acks.done(tag)
            await turns()
        await acks.flush()
    assert ["ack_failed"] == [e["event"] for e in logs]
    assert [] == channel.frames


# The consumer ------------------------------------------------------------------------


class Relay:
    async def publish_stored(self, stored: Any) -> None:
        return None


def consumer_with(handler: Any) -> QueueConsumer:
    return QueueConsumer(
        cast(Any, None), "q", handler, relay=cast(Any, Relay()), metrics=Metrics(), probe=cast(Any, None)
    )


def received(channel: FakeChannel, tag: int) -> Received:
    delivery = Delivery(body=b"{}", exchange="", routing_key="q", message_id=str(tag), reply_to=None,
                        correlation_id=None, headers={}, redelivered=False)
    return Received(delivery, cast(aiormq.abc.AbstractChannel, channel), tag, None)


async def test_the_consumer_acks_deliveries_finishing_together_in_one_frame_per_channel() -> None:
    """Tags restart at 1 on a channel a reconnect opened: each channel has its own acks."""
    finish = asyncio.Event()

    async def handler(delivery: Delivery) -> Outcome:
        await finish.wait()
        return Outcome("done", "succeeded")

    consumer = consumer_with(handler)
    first, second = FakeChannel(), FakeChannel()
    tasks = [asyncio.ensure_future(consumer._on_received(received(c, t)))
             for c, t in ((first, 1), (first, 2), (first, 3), (second, 1), (second, 2))]
    await turns()
    finish.set()
    await asyncio.gather(*tasks)
    await turns()
    assert ([("ack", 3, True)], [("ack", 2, True)]) == (first.frames, second.frames)


async def test_drain_returns_once_the_acks_are_sent() -> None:
    async def handler(delivery: Delivery) -> Outcome:
        return Outcome("done", "succeeded")

    consumer = consumer_with(handler)
    channel = FakeChannel()
    await consumer._on_received(received(channel, 1))  # done: its ack waits for the iteration's end
    assert 0 == await consumer.drain(1.0)
    assert [("ack", 1, False)] == channel.frames
