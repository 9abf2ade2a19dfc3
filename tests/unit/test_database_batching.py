"""Group commit: concurrent calls share a batch, results go back in order, a bad item fails alone."""

from __future__ import annotations

import asyncio

import pytest

from service.database.batching import Coalescer


class Recorder:
    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.gate = asyncio.Event()

    async def run(self, items: list[str]) -> list[str]:
        self.batches.append(list(items))
        if len(self.batches) == 1:
            await self.gate.wait()  # the first batch is in flight while others arrive
        if "bad" in items:
            raise ValueError("bad item")
        return [item.upper() for item in items]


async def test_calls_arriving_during_a_batch_go_together_in_the_next() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, str] = Coalescer(recorder.run)
    first = asyncio.ensure_future(coalescer.submit("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(coalescer.submit(x)) for x in ("b", "c", "d")]
    await asyncio.sleep(0)
    recorder.gate.set()
    assert ["A", "B", "C", "D"] == await asyncio.gather(first, *rest)
    assert [["a"], ["b", "c", "d"]] == recorder.batches


async def test_a_failing_batch_is_retried_one_by_one_so_a_bad_item_fails_alone() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, str] = Coalescer(recorder.run)
    first = asyncio.ensure_future(coalescer.submit("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    rest = [asyncio.ensure_future(coalescer.submit(x)) for x in ("b", "bad", "c")]
    await asyncio.sleep(0)
    recorder.gate.set()
    results = await asyncio.gather(first, *rest, return_exceptions=True)
    assert ["A", "B", "C"] == [r for r in results if isinstance(r, str)]
    assert isinstance(results[2], ValueError)
    assert [["a"], ["b", "bad", "c"], ["b"], ["bad"], ["c"]] == recorder.batches


async def test_batches_are_capped_and_a_wrong_result_count_is_an_error() -> None:
    seen: list[int] = []

    async def short(items: list[int]) -> list[int]:
        seen.append(len(items))
        return items[:-1] if len(items) > 1 else items

    coalescer: Coalescer[int, int] = Coalescer(short, max_batch=2)
    assert [0, 1, 2] == await asyncio.gather(*(coalescer.submit(i) for i in range(3)))
    assert [2, 1, 1, 1] == seen  # capped at two; the short batch was redone one by one


async def test_a_cancelled_caller_does_not_stop_the_others() -> None:
    recorder = Recorder()
    coalescer: Coalescer[str, str] = Coalescer(recorder.run)
    first = asyncio.ensure_future(coalescer.submit("a"))
    await asyncio.sleep(0)
    await asyncio.sleep(0)
    gone = asyncio.ensure_future(coalescer.submit("b"))
    kept = asyncio.ensure_future(coalescer.submit("c"))
    await asyncio.sleep(0)
    gone.cancel()
    recorder.gate.set()
    assert ["A", "C"] == [await first, await kept]
    with pytest.raises(asyncio.CancelledError):
        await gone


async def test_an_outage_fails_every_caller_at_once_instead_of_one_by_one() -> None:
    calls: list[list[str]] = []

    async def away(items: list[str]) -> list[str]:
        calls.append(items)
        raise ConnectionRefusedError("database away")

    coalescer: Coalescer[str, str] = Coalescer(away)
    results = await asyncio.gather(*(coalescer.submit(x) for x in "abc"), return_exceptions=True)
    assert all(isinstance(r, ConnectionRefusedError) for r in results)
    assert [["a", "b", "c"]] == calls


async def test_a_batch_runs_in_no_callers_context() -> None:
    """A batch serves many callers: it must not run (and log) with the first one's bindings."""
    import contextvars

    job = contextvars.ContextVar("job", default=None)
    seen: list[object] = []

    async def batch(items: list[str]) -> list[str]:
        seen.append(job.get())
        return items

    coalescer: Coalescer[str, str] = Coalescer(batch)
    job.set("job-1")
    assert ["a"] == await asyncio.gather(coalescer.submit("a"))
    assert [None] == seen


@pytest.mark.parametrize(("turns", "expected"), [(0, [["a"], ["b", "c"]]), (2, [["a", "b", "c"]])])
async def test_settle_turns_let_callers_ready_a_moment_later_join(turns: int, expected: list[list[str]]) -> None:
    """With settle turns, callers that become ready within those loop turns (deliveries
    whose replies came in together) join the batch the first caller started; without,
    the first goes alone."""
    batches: list[list[str]] = []

    async def run(items: list[str]) -> list[str]:
        batches.append(list(items))
        return [item.upper() for item in items]

    coalescer: Coalescer[str, str] = Coalescer(run, settle_turns=turns)

    async def a_turn_later(item: str) -> str:
        await asyncio.sleep(0)
        return await coalescer.submit(item)

    later = [asyncio.ensure_future(a_turn_later(x)) for x in ("b", "c")]
    assert "A" == await coalescer.submit("a")
    assert ["B", "C"] == await asyncio.gather(*later)
    assert expected == batches


async def test_a_cancel_during_the_one_by_one_retry_settles_every_caller() -> None:
    """A batch failed for its data and is being retried one item at a time when the process
    stops (the runner is cancelled): the items not retried yet are settled too, so nobody
    waits forever for them."""
    started = asyncio.Event()

    async def run(items: list[str]) -> list[str]:
        if len(items) > 1:
            raise ValueError("bad data somewhere")
        started.set()
        await asyncio.Event().wait()  # the first one-by-one retry hangs
        return items

    coalescer: Coalescer[str, str] = Coalescer(run)
    futures = [coalescer.enqueue(x) for x in ("a", "b", "c")]
    await asyncio.wait_for(started.wait(), timeout=5)
    runner = coalescer._runner
    assert runner is not None
    runner.cancel()
    done, pending = await asyncio.wait(futures, timeout=5)
    assert not pending
    assert all(f.cancelled() for f in done)
