"""An account owned by the one process using it: grants without statements, and still safe.

The rules are in service/database/ratelimit.py's docstring. Each test here holds one of
them to the real PostgreSQL: few statements for a process alone, the quota kept when a
second process arrives, an owner that stops renewing leaves a row another process can
start from safely, and ``close()`` lets go at once.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

from service.database import ratelimit
from service.database.ratelimit import PostgresBucketStore
from service.limiter import Limits, RateLimiter, state_from_json
from tests.helpers import eventually
from tests.integration.test_ratelimit_postgres import busiest_window

_ROW = (
    "SELECT owner, owner_until, version, state::text AS state, paused_until FROM rate_limit_buckets"
    " WHERE provider = 'stripe' AND account = $1"
)


async def grant_for(limiter: RateLimiter, account: str, limits: Limits, *, tasks: int, until: float,
                    stamps: list[float]) -> None:
    """``tasks`` loops acquiring on ``account`` until the wall clock passes ``until``."""
    async def loop() -> None:
        while time.time() < until:
            async with limiter.acquire("stripe", account, limits, max_wait_s=30):
                stamps.append(time.time())

    await asyncio.gather(*(loop() for _ in range(tasks)))


async def test_a_process_alone_grants_from_its_own_copy(pool: Any) -> None:
    """300 grants cost a write per renewal (every 50 ms), not one each; the quota holds;
    ``close()`` writes the copy back and lets go, so the next process waits for nothing
    but the spacing of what was granted."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = Limits(per_second=200)
    store = PostgresBucketStore(pool, own=True)
    stamps: list[float] = []
    started = time.time()
    await grant_for(RateLimiter(store), account, limits, tasks=8, until=started + 1.5, stamps=stamps)
    assert len(stamps) >= 200
    assert store._writes.items < len(stamps) / 5  # renewals (every 50 ms), not grants
    assert busiest_window(stamps, 1.0) <= 200
    until = store._owned[("stripe", account)].until
    row = await pool.fetchrow(_ROW, account)
    assert row["owner"] is not None
    assert row["owner_until"] >= until  # to the microsecond (a parameter typed integer cut it)

    copy = store._known[("stripe", account)].state
    await store.close()
    row = await pool.fetchrow(_ROW, account)
    assert row["owner"] is None
    assert copy == state_from_json(row["state"], row["paused_until"])  # written back as it was
    other = RateLimiter(PostgresBucketStore(pool, own=True))
    async with other.acquire("stripe", account, limits, max_wait_s=5):
        first = time.time()
    assert first - max(stamps) < 0.3  # no wait for a lease to run out


async def test_a_second_process_gets_the_account_and_the_quota_holds(pool: Any) -> None:
    """An owner saturating the account; a second process arrives and asks for it: the owner
    lets go, both then share it by compare-and-set, and together they stay within it."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = Limits(per_second=50)
    first_store, second_store = PostgresBucketStore(pool, own=True), PostgresBucketStore(pool, own=True)
    first, second = RateLimiter(first_store), RateLimiter(second_store)
    start = time.time()
    mine: list[float] = []
    theirs: list[float] = []
    owner_run = asyncio.ensure_future(
        grant_for(first, account, limits, tasks=4, until=start + 3.0, stamps=mine))
    await eventually(lambda: first_store._owned, timeout=5, interval=0.01, what="the account owned")
    asked = time.time()
    await grant_for(second, account, limits, tasks=4, until=start + 3.0, stamps=theirs)
    await owner_run
    await first_store.close()
    await second_store.close()
    assert first_store.handovers >= 1
    assert theirs and min(theirs) - asked < 0.5  # the owner let go well within its lease
    both = mine + theirs
    assert busiest_window(both, 1.0) <= 50
    steady = [s for s in both if start + 0.5 <= s < start + 2.5]
    assert len(steady) / (2.0 * 50) >= 0.7  # 0.97 on a quiet machine


async def test_an_owner_that_stops_renewing_leaves_a_safe_row(pool: Any) -> None:
    """An owner stalls: it neither renews nor writes back, and its tasks still send what
    they reserved. With 20 tasks on a 20/s account its reservations run a second ahead,
    past its lease: those were written through, so the process that takes the account
    after the lease ran out starts after them and the quota holds across the two."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = Limits(per_second=20)
    stalled_store = PostgresBucketStore(pool, own=True)
    stalled = RateLimiter(stalled_store)
    stamps: list[float] = []
    stop_asking = time.time() + 1.0
    run = asyncio.ensure_future(grant_for(stalled, account, limits, tasks=20, until=stop_asking, stamps=stamps))
    await eventually(lambda: stalled_store._owned, timeout=5, interval=0.01, what="the account owned")
    await asyncio.sleep(max(0.0, stop_asking - 0.3 - time.time()))  # the stall begins here
    keeper = stalled_store._keeper
    assert keeper is not None
    keeper.cancel()  # no more renewals: the lease runs out unless written through
    stalled_store._keeper = asyncio.get_running_loop().create_future()  # type: ignore[assignment]  # never restarted
    taker = RateLimiter(PostgresBucketStore(pool, own=True))
    taken: list[float] = []
    await asyncio.gather(run, grant_for(taker, account, limits, tasks=2, until=time.time() + 2.0, stamps=taken))
    assert taken and max(stamps) > stop_asking  # sends reserved past the lease went out
    assert busiest_window(stamps + taken, 1.0) <= 20


async def test_a_lease_given_up_on_a_failed_renewal_is_waited_out(pool: Any) -> None:
    """A process whose renewal failed drops its copy; the row still names it owner until
    the lease ends. Its next grant waits that out instead of starting from the row (which
    lacks the sends it granted locally)."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = Limits(per_second=100)
    store = PostgresBucketStore(pool, own=True)
    limiter = RateLimiter(store)
    stamps: list[float] = []
    await grant_for(limiter, account, limits, tasks=4, until=time.time() + 0.3, stamps=stamps)
    key = ("stripe", account)
    assert key in store._owned
    keeper = store._keeper
    assert keeper is not None
    keeper.cancel()
    store._drop(key)  # what a failed renewal does
    row = await pool.fetchrow(_ROW, account)
    async with limiter.acquire("stripe", account, limits, max_wait_s=5):
        granted = time.time()
    assert granted >= row["owner_until"]
    assert granted - max(stamps) >= 1 / 100
    await store.close()


async def test_an_operator_update_reaches_an_owner(pool: Any) -> None:
    """An operator lifts a pause with a plain UPDATE while a process owns the account: the
    owner's next renewal loses to it, and its grants start from the lifted pause."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = Limits(per_second=100)
    store = PostgresBucketStore(pool, own=True)
    limiter = RateLimiter(store)
    for _ in range(2):  # the second grant in a row takes the account
        async with limiter.acquire("stripe", account, limits, max_wait_s=1):
            pass
    await limiter.penalize("stripe", account, 3600)
    assert ("stripe", account) in store._owned
    await pool.execute("UPDATE rate_limit_buckets SET paused_until = 0 WHERE provider = 'stripe' AND account = $1",
                       account)
    await eventually(lambda: ("stripe", account) not in store._owned, timeout=5, interval=0.01,
                     what="the owner losing the row")
    async with limiter.acquire("stripe", account, limits, max_wait_s=1):
        pass
    await store.close()


async def test_a_write_cancelled_in_flight_is_not_forgotten(pool: Any) -> None:
    """A task cancelled while its write-through is on its way (a job cancelled at shutdown):
    the write still lands, so the owner must not go on from its copy without it. The next
    change here sees what the row holds."""
    from dataclasses import replace

    from service.limiter import BucketState

    account = f"acct-{uuid.uuid4().hex[:8]}"
    store = PostgresBucketStore(pool, own=True)
    limiter = RateLimiter(store)
    for _ in range(2):  # the second grant in a row takes the account
        async with limiter.acquire("stripe", account, Limits(per_second=100), max_wait_s=1):
            pass
    assert ("stripe", account) in store._owned

    def bump(state: BucketState) -> tuple[BucketState, None]:  # an epoch: always written through
        return replace(state, epoch=state.epoch + 1), None

    def look(state: BucketState) -> tuple[BucketState, int]:
        return state, state.epoch

    bumping = asyncio.ensure_future(store.update("stripe", account, bump))
    await asyncio.sleep(0)  # it runs up to its write, which is now queued
    bumping.cancel()
    seen = await store.update("stripe", account, look)
    row = await pool.fetchrow(_ROW, account)
    assert seen == state_from_json(row["state"], row["paused_until"]).epoch
    assert bumping.cancelled()
    await store.close()


async def test_an_owner_killed_with_sigkill_hands_over_a_safe_row(services: Any, pool: Any) -> None:
    """A worker process owns an account and grants from its own copy; it is killed with
    SIGKILL mid-run, without a word to the row. This process then waits out the dead
    owner's lease (0.5 s; the row lags the dead copy by up to a renewal) and carries on:
    across the two, no second holds more than the quota, and the wait is no longer than
    the lease."""
    import json
    import os
    import signal

    from tests.integration.test_ratelimit_postgres import worker

    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = Limits(per_second=20)
    start_at = time.time() + 1.5
    args = {"dsn": services.database_url, "mode": "stream", "account": account, "tasks": 2,
            "limits": {"per_second": 20}, "start_at": start_at, "end_at": start_at + 60, "own": True}
    theirs: list[float] = []
    async with worker(args) as owner:
        assert owner.stdout is not None
        while len(theirs) < 25:  # a second and more of grants from its own copy
            line = await asyncio.wait_for(owner.stdout.readline(), timeout=30)
            assert line, "the worker ended early"
            theirs.append(float(json.loads(line)))
        os.kill(owner.pid, signal.SIGKILL)
        await owner.wait()
        killed = time.time()
        rest, _ = await owner.communicate()  # grants printed before the kill
        theirs += [float(json.loads(line)) for line in rest.decode().split()]
    row = await pool.fetchrow(_ROW, account)
    assert row["owner"] is not None  # it owned the account, and its lease is on the row
    store = PostgresBucketStore(pool, own=True)
    ours: list[float] = []
    await grant_for(RateLimiter(store), account, limits, tasks=2, until=time.time() + 1.5, stamps=ours)
    await store.close()
    assert ours and row["owner_until"] <= min(ours) <= killed + 0.5 + 0.3  # the lease ran out, no more
    assert busiest_window(theirs + ours, 1.0) <= 20


async def test_an_account_used_now_and_then_is_not_owned(pool: Any) -> None:
    """One call now and then costs one write, as before ownership: no claim, renewals and
    let-go for it. Calls in quick succession take the account."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = Limits(per_second=100)
    clock = [1_000.0]
    store = PostgresBucketStore(pool, own=True, clock=lambda: clock[0])
    limiter = RateLimiter(store, clock=lambda: clock[0])
    for _ in range(3):
        async with limiter.acquire("stripe", account, limits, max_wait_s=1):
            pass
        assert ("stripe", account) not in store._owned
        clock[0] += ratelimit.OWN_IDLE_S + 0.5  # the next call comes later than that
    assert 3 == store._writes.items  # one write per call
    for _ in range(2):
        async with limiter.acquire("stripe", account, limits, max_wait_s=1):
            pass
    assert ("stripe", account) in store._owned  # the second of two in a row took it
    await store.close()


async def test_a_grant_due_now_on_an_owned_account_takes_no_turn(pool: Any) -> None:
    """On an account this process owns, a send time due now is reserved in the caller's
    own step (update_now): no turn's lock, no coroutine of the store. While a task of ours
    takes a turn on the account (the keeper writing the copy back, say), the same grant
    waits for its turn the usual way instead."""
    account = f"acct-{uuid.uuid4().hex[:8]}"
    limits = Limits(per_second=1000, burst=500)  # every grant here is due at once
    store = PostgresBucketStore(pool, own=True)
    limiter = RateLimiter(store)
    key = ("stripe", account)
    for _ in range(3):  # steady use: the second write claims the account
        async with limiter.acquire("stripe", account, limits, max_wait_s=5):
            pass
    await eventually(lambda: key in store._owned, timeout=5, interval=0.01, what="the account owned")
    updates: list[str] = []
    update = store.update

    async def counted(provider: str, account: str, change: Any) -> Any:
        updates.append(account)
        return await update(provider, account, change)

    store.update = counted  # type: ignore[method-assign]
    granted_before = store._known[key].state
    async with limiter.acquire("stripe", account, limits, max_wait_s=5):
        pass
    assert updates == []
    assert store._known[key].state != granted_before  # the send time was reserved on our copy
    turn = store._turn(key)
    turn.users += 1  # a task of ours is taking a turn on the account
    try:
        async with limiter.acquire("stripe", account, limits, max_wait_s=5):
            pass
    finally:
        turn.users -= 1
    assert updates == [account]
    await store.close()


async def test_one_statement_renews_every_owned_account(pool: Any) -> None:
    """The keeper's tick writes every owned account back in one statement, and each lease
    it renews reaches the row."""
    limits = Limits(per_second=1000, burst=500)
    store = PostgresBucketStore(pool, own=True)
    limiter = RateLimiter(store)
    accounts = [f"acct-{uuid.uuid4().hex[:8]}" for _ in range(5)]
    for account in accounts:
        for _ in range(3):  # steady use: the second write claims the account
            async with limiter.acquire("stripe", account, limits, max_wait_s=5):
                pass
    await eventually(lambda: len(store._owned) == 5, timeout=5, interval=0.01, what="five accounts owned")
    batches, items = store._writes.batches, store._writes.items
    leases = {account: store._owned[("stripe", account)].until for account in accounts}
    await eventually(lambda: store._writes.batches > batches, timeout=5, interval=0.005, what="a renewal")
    assert (store._writes.batches - batches, store._writes.items - items) == (1, 5)
    await eventually(  # the statement returned (and committed): the leases are renewed here
        lambda: all(store._owned[("stripe", a)].until > leases[a] for a in accounts),
        timeout=5, interval=0.005, what="the renewed leases")
    for account in accounts:
        row = await pool.fetchrow(_ROW, account)
        assert row["owner"] is not None and row["owner_until"] > leases[account]
    await store.close()


async def test_a_renewal_whose_batch_is_cancelled_forgets_every_account(pool: Any) -> None:
    """The keeper's statement is cancelled in flight (the process stopping): it may still
    land, so every account in it is forgotten, not the first alone, and every turn is
    free again for the next grant to read the row."""
    limits = Limits(per_second=1000, burst=500)
    store = PostgresBucketStore(pool, own=True)
    limiter = RateLimiter(store)
    accounts = [f"acct-{uuid.uuid4().hex[:8]}" for _ in range(3)]
    for account in accounts:
        for _ in range(3):
            async with limiter.acquire("stripe", account, limits, max_wait_s=5):
                pass
    await eventually(lambda: len(store._owned) == 3, timeout=5, interval=0.01, what="three accounts owned")
    keeper = store._keeper
    assert keeper is not None
    keeper.cancel()  # this test runs the renewal itself
    await asyncio.gather(keeper, return_exceptions=True)
    in_flight = asyncio.Event()

    async def hanging(writes: Any) -> Any:
        in_flight.set()
        await asyncio.Event().wait()

    store._writes._batch = hanging  # type: ignore[assignment]
    renewal = asyncio.ensure_future(store._renew(list(store._owned)))
    await asyncio.wait_for(in_flight.wait(), timeout=5)
    runner = store._writes._runner
    assert runner is not None
    runner.cancel()  # the statement's task is cancelled: every write's future with it
    await asyncio.wait_for(renewal, timeout=5)
    assert store._owned == {}
    assert all(("stripe", a) not in store._known for a in accounts)
    assert all(not store._turn(("stripe", a)).lock.locked() and store._turn(("stripe", a)).users == 0
               for a in accounts)


async def test_close_waits_for_a_write_in_flight_then_lets_go(pool: Any) -> None:
    """``close()`` while a task of ours holds an owned account's turn (its write in flight):
    it waits for the turn instead of skipping the account, then lets go, so another process
    need not wait for the lease to run out."""
    limits = Limits(per_second=1000, burst=500)
    store = PostgresBucketStore(pool, own=True)
    limiter = RateLimiter(store)
    account = f"acct-{uuid.uuid4().hex[:8]}"
    for _ in range(3):
        async with limiter.acquire("stripe", account, limits, max_wait_s=5):
            pass
    await eventually(lambda: ("stripe", account) in store._owned, timeout=5, interval=0.01, what="owned")
    turn = store._turn(("stripe", account))
    turn.users += 1
    await turn.lock.acquire()  # a write of ours in flight
    closing = asyncio.ensure_future(store.close())
    keeper = store._keeper
    assert keeper is not None
    await asyncio.wait_for(asyncio.gather(keeper, return_exceptions=True), timeout=5)  # close's first wait
    for _ in range(10):  # turns enough for close() to skip the account and return, were it to
        await asyncio.sleep(0)
    assert not closing.done()
    turn.lock.release()
    turn.users -= 1
    await asyncio.wait_for(closing, timeout=5)
    row = await pool.fetchrow(_ROW, account)
    assert row["owner"] is None
