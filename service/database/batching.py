"""Group commit: concurrent calls of one statement run together as one multi-row statement.

A ``Coalescer`` takes one item per caller and hands lists of items to a batch function
that runs them in one round trip. The first call starts a batch at once (no added latency
when the daemon is quiet); calls arriving while a batch is in flight wait for it and go
together in the next one, so under load each round trip, commit and WAL flush is shared
by as many jobs as the prefetch lets run at once. A coalescer may also let the event loop
run ``settle_turns`` more times before it takes a batch (no timer, no added wait when
nothing else is ready): the callers made ready in the same moment (deliveries whose provider
replies came in together) then reach it and join, so a busy daemon makes fewer, larger
statements (JOB_SETTLE_TURNS has the numbers). If a batch fails for something in its
data, its items are tried one by one, so a bad item fails alone and the others go through;
if the database is away or too slow, every caller gets that error at once (one by one would
only multiply the wait).
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

import asyncpg
import structlog

I = TypeVar("I")  # noqa: E741 - an item, as in the typing docs' examples
R = TypeVar("R")

log = structlog.get_logger(__name__)

MAX_BATCH = 64
# Loop turns the job statements' coalescers (and the pull cursors' read) let pass before
# taking a batch. bench/consume.py A/B, 6 rounds each: process 0.370 -> 0.353 ms and all
# processes 0.650 -> 0.597 ms per message, rate +4 %; with the cursors' read too, in
# incremental mode, rate +12 % and process 0.390 -> 0.358 ms. 4 or 8 turns saved little more
# CPU and lost rate (waiting jobs hold prefetch slots).
JOB_SETTLE_TURNS = 2


def is_outage(exc: BaseException) -> bool:
    """The database is away or too slow: no item of a batch could have gone through alone."""
    return isinstance(exc, OSError | TimeoutError | asyncpg.PostgresConnectionError | asyncpg.InterfaceError)


class Coalescer(Generic[I, R]):
    """Runs ``batch(items) -> results`` (one result per item, in order) for concurrent callers."""

    def __init__(
        self, batch: Callable[[list[I]], Awaitable[Sequence[R]]], *, max_batch: int = MAX_BATCH,
        settle_turns: int = 0,
    ) -> None:
        self._batch = batch
        self._max = max_batch
        self._settle_turns = settle_turns  # loop turns let pass before a batch is taken
        self._waiting: list[tuple[I, asyncio.Future[R]]] = []
        self._runner: asyncio.Task[None] | None = None
        self.batches = 0  # for tests and the benchmark: how many round trips were made
        self.items = 0

    async def submit(self, item: I) -> R:
        """This item's result, once the batch that carries it has run."""
        return await self.enqueue(item)

    def enqueue(self, item: I) -> asyncio.Future[R]:
        """The future of this item's result. Cancelling the future does not take the item
        out of its batch: a caller that must know whether it ran shields the future."""
        future: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._waiting.append((item, future))
        if self._runner is None:  # its own context: its log lines are no caller's (no job_id)
            self._runner = asyncio.get_running_loop().create_task(self._run(), context=contextvars.Context())
        return future

    async def _run(self) -> None:
        try:
            while self._waiting:
                for _ in range(self._settle_turns):  # callers ready now run and join
                    await asyncio.sleep(0)
                taken, self._waiting = self._waiting[: self._max], self._waiting[self._max :]
                await self._settle(taken)
        except BaseException as exc:  # cancelled with the process: nobody may wait forever
            waiting, self._waiting = self._waiting, []
            for _, future in waiting:
                _fail(future, exc)
            raise
        finally:
            self._runner = None

    async def _settle(self, taken: list[tuple[I, asyncio.Future[R]]]) -> None:
        self.batches += 1
        self.items += len(taken)
        try:
            results = list(await self._batch([item for item, _ in taken]))
            if len(results) != len(taken):
                raise RuntimeError(f"a batch of {len(taken)} gave {len(results)} results")
        except Exception as exc:
            if len(taken) == 1 or is_outage(exc):
                for _, future in taken:
                    _fail(future, exc)
                return
            log.warning("batch_failed_trying_one_by_one", size=len(taken), error=exc.__class__.__name__)
            try:
                for one in taken:
                    await self._settle([one])
            except BaseException as stop:  # cancelled meanwhile: those not tried yet fail too
                for _, future in taken:
                    _fail(future, stop)
                raise
            return
        except BaseException as exc:  # cancelled with the process: nobody may wait forever
            for _, future in taken:
                _fail(future, exc)
            raise
        for (_, future), result in zip(taken, results, strict=False):
            if not future.done():
                future.set_result(result)


def _fail(future: asyncio.Future[R], exc: BaseException) -> None:
    if not future.done():
        if isinstance(exc, asyncio.CancelledError):
            future.cancel()
        else:
            future.set_exception(exc)
