"""Acknowledgements coalesced per channel: the deliveries whose outcomes are stored in one
loop iteration (their writes group-committed together) share one Basic.Ack with
multiple=True, instead of a frame each (and, on a quorum queue, a settle command each).

A multiple ack settles every unacknowledged delivery of the channel up to its tag, those the
consumer never saw included. So one is sent only up to a tag when every tag from 1 to it is
known settled: its outcome stored, or handed back already. A delivery still running (or one
never seen) stops it there; the deliveries done above it are acknowledged one by one in the
same flush, so one long job never holds the others' acks, and the prefetch window, back.
"""

from __future__ import annotations

import asyncio
import contextvars

import aiormq
import structlog

log = structlog.get_logger(__name__)


class AckTracker:
    """Which delivery tags of one channel to acknowledge now, and how; decisions only, no I/O.

    Delivery tags count up from 1 on each channel. Every tag at or below ``floor`` is settled
    at the broker (acknowledged or handed back). Above it, ``_done`` tags wait for their ack,
    and ``_settled`` ones were acknowledged alone or handed back already: a later multiple
    ack may pass over them, but never over a tag in neither set, so a delivery still running
    and one the consumer never saw both stop it.
    """

    def __init__(self) -> None:
        self.floor = 0
        self._done: set[int] = set()
        self._settled: set[int] = set()

    def done(self, tag: int) -> None:
        """The delivery's outcome is stored: acknowledge it in the next ``take``."""
        if tag > self.floor and tag not in self._settled:  # never settle a tag twice
            self._done.add(tag)

    def handed_back(self, tag: int) -> None:
        """The delivery's nack is on its way (call this only once its frame is queued, or a
        multiple ack sent meanwhile would acknowledge it)."""
        if tag > self.floor:
            self._settled.add(tag)

    @property
    def waiting(self) -> bool:
        """Whether some done tag waits for its ack."""
        return bool(self._done)

    def take(self) -> tuple[int | None, list[int]]:
        """What to send now, counted as sent: a tag to acknowledge with multiple=True (only
        when it covers more than one done delivery), and the tags to acknowledge alone."""
        covered = self._advance_floor()
        beyond = sorted(self._done)  # behind a delivery still running: one by one
        self._settled.update(beyond)
        self._done.clear()
        if len(covered) > 1:
            return covered[-1], beyond
        return None, covered + beyond

    def _advance_floor(self) -> list[int]:
        """Move the floor up over the done and settled tags just above it; return the done ones."""
        covered: list[int] = []
        tag = self.floor + 1
        while tag in self._done or tag in self._settled:
            if tag in self._done:
                self._done.remove(tag)
                covered.append(tag)
            else:
                self._settled.remove(tag)
            tag += 1
        self.floor = tag - 1
        return covered


class AckBatcher:
    """Sends the acknowledgements of one aiormq channel at the end of the loop iteration in
    which their deliveries were marked done, at most one sender at a time: acks from two
    senders could reach the socket out of order (the connection's write queue is bounded),
    and a single ack arriving after a multiple ack that covered it is an unknown delivery
    tag to the broker, which closes the channel."""

    def __init__(self, channel: aiormq.abc.AbstractChannel) -> None:
        self.channel = channel
        self._tags = AckTracker()
        self._sending: asyncio.Task[None] | None = None
        self._dropped = False  # the channel failed an ack: its deliveries are the broker's again

    def done(self, tag: int) -> None:
        """The delivery's outcome is stored: acknowledge it once this loop iteration ends."""
        if self._dropped:
            return
        self._tags.done(tag)
        if self._sending is None:
            self._start()

    async def hand_back(self, tag: int) -> None:
        """Nack the delivery for the broker to requeue it, now and on its own."""
        try:
            await self.channel.basic_nack(delivery_tag=tag, requeue=True)
        except Exception as exc:  # the channel is gone: the broker requeues it anyway
            log.warning("nack_failed", error=f"{exc.__class__.__name__}")
            return
        self._tags.handed_back(tag)

    async def flush(self) -> None:
        """Send every ack waiting now (the channel is about to be closed)."""
        if self._sending is None and self._tags.waiting and not self._dropped:
            self._start()
        if self._sending is not None:
            await asyncio.shield(self._sending)

    def _start(self) -> None:
        # A context of its own: the sender is no one delivery's (nor carries its log bindings).
        self._sending = asyncio.get_running_loop().create_task(
            self._send(), name="send-acks", context=contextvars.Context()
        )

    async def _send(self) -> None:
        try:
            while True:
                cumulative, singles = self._tags.take()
                if cumulative is None and not singles:
                    return
                if cumulative is not None:
                    await self.channel.basic_ack(delivery_tag=cumulative, multiple=True, wait=False)
                for tag in singles:
                    await self.channel.basic_ack(delivery_tag=tag, wait=False)
        except Exception as exc:  # the channel is closed: the broker redelivers what it held
            log.warning("ack_failed", error=f"{exc.__class__.__name__}")
            self._dropped = True
            self._tags = AckTracker()
        finally:
            self._sending = None
