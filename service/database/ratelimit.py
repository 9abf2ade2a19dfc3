"""The rate limiter's shared state in PostgreSQL: one row per (provider, account).

Every change is a compare-and-set on the row's ``version``: the limiter's pure arithmetic
(service/limiter.py) runs on the state this process last wrote or read, and one statement
writes the result only if nobody changed the row since; otherwise the same statement
returns the current row and the change is computed again. So a process alone on an
account grants in one round trip (no BEGIN, no ``SELECT ... FOR UPDATE``, no COMMIT), the
grants of several accounts made at the same moment share that statement (group commit, see
batching.py), and any number of processes still apply changes atomically, one version
after another. A change that writes nothing (no free slot, a wait too long) is confirmed
on a fresh read, so a stale copy never decides alone. The ``state`` column holds the JSON
of ``BucketState`` except ``paused_until``, which has its own column so an operator can
read a pause at a glance. Writes go through the relaxed pool (no wait for the WAL flush): a
bucket lost in a database crash only forgets the last instants of spacing.

Owning an account (``own=True``, the daemon's setting). A process that is alone on an
account and uses it steadily (its second write within ``OWN_IDLE_S``) takes it for a
short lease (``owner``, ``owner_until`` on the row) and then grants
from its own copy with no statement at all; one statement every ``OWN_RENEW_S`` renews the
leases of all the accounts it owns, writing its copies back. Three rules keep this as safe
as the compare-and-set:

- *Nobody else writes an owned row.* A process that needs an account another one owns sets
  the row's ``wanted`` flag and waits; the owner's next write (its renewal at the latest)
  writes its copy back and lets go in the same statement. Both then share the account by
  compare-and-set, and neither takes it again until ``OWN_COOL_OFF_S`` has passed without
  the other's writes.
- *What is not written cannot outlive the lease.* Granted locally are only send times up to
  ``OWN_SAFETY_S`` before the lease ends; changes to concurrency slots, pauses and later
  send times are written through. So when an owner dies (or stalls past its lease, or its
  write failed) without writing back, every send it granted and did not write is over by
  the time another process may take the row, and the state on the row is a safe start.
- *Local grants stop ``OWN_SAFETY_S`` before the lease ends*, and so do the sends they
  reserve: that margin covers a renewal in flight and clock skew between hosts (leases are
  on each process's ``time.time()``, like the send times; hosts need NTP).

An owner that loses its row anyway (a hand-made UPDATE, which bumps the version) keeps the
send times it granted on top of the row's state. Two things an owner cannot see: a process
of a version before ownership, which writes by compare-and-set alone (during a rolling
upgrade, grants of the last renewal period, 100 ms, can be doubled once per cool-off), and
an operator clearing ``owner`` by hand (never needed: lift a pause with ``paused_until``).
Accounts used by several processes at once cost what they cost before, one statement per
grant, and so do accounts with a concurrency cap (every slot is written through, so
nothing is gained by owning them), and so do accounts used now and then (owning one for a
single call would cost a claim, renewals and a let-go); an account one process uses
steadily costs a statement every 100 ms, shared with every other account it owns, instead
of one per call. (Renewing every 100 ms keeps at least 250 ms of local grants ahead; every
50 ms cost a twentieth of the daemon's CPU with 100 accounts owned, bench/consume.py.)
"""

from __future__ import annotations

import asyncio
import contextvars
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, TypeVar, cast

import asyncpg
import structlog

from service.database.batching import Coalescer
from service.errors import NetworkError
from service.limiter import BucketState, state_from_json, state_to_json

T = TypeVar("T")

log = structlog.get_logger(__name__)

ACQUIRE_TIMEOUT_S = 5.0
COMMAND_TIMEOUT_S = 5.0
MAX_ROUNDS = 100  # compare-and-set rounds before giving up (each loses only to a real write)

OWN_LEASE_S = 0.5  # an owner's lease on an account, renewed every OWN_RENEW_S while used
OWN_RENEW_S = 0.1  # also how soon an owner sees that another process wants the account
OWN_SAFETY_S = 0.15  # local grants stop this long before the lease ends
OWN_IDLE_S = 1.0  # an account unused this long is written back and let go
OWN_COOL_OFF_S = 2.0  # after another process's write on an account, no owning it for this long
HANDOVER_POLL_S = 0.01  # a process waiting for an owner to let go looks again this often
HANDOVER_MAX_S = 5.0  # ... and gives up (NetworkError) after this long

_COLUMNS = "version, state::text AS state, paused_until, owner, owner_until, wanted"
_SELECT = f"SELECT {_COLUMNS} FROM rate_limit_buckets WHERE provider = $1 AND account = $2"
_INSERT = (
    "INSERT INTO rate_limit_buckets (provider, account) VALUES ($1, $2)"
    " ON CONFLICT (provider, account) DO NOTHING"
)
# Ask the owner to let go; changes nothing else, so the trigger leaves the version alone.
# The owner's next write (a renewal at the latest) then lets go in the same statement.
_WANT = (
    "UPDATE rate_limit_buckets SET wanted = true"
    " WHERE provider = $1 AND account = $2 AND owner = $3 AND NOT wanted"
)
# Each row is written only if still at the version the caller computed from; every row
# comes back as this statement saw it (its snapshot), so a loser recomputes at once.
# An owner renewing a row another process wants lets go instead (``owner`` NULL), and
# ``written_owner`` tells it so; every write clears ``wanted``.
# One account alone (the quiet case) has its own statement: on a pool without generic plans
# PostgreSQL plans the array form afresh on every call, which costs more than the write
# (0.24 vs 0.65 ms here); the daemon's pools now keep generic plans, where the single-row
# form is still the cheaper of the two.
_COMPARE_AND_SET_ONE = """
    WITH current AS (""" + _SELECT + """),
    written AS (
        UPDATE rate_limit_buckets
        SET state = $3::text::jsonb, paused_until = $4, version = version + 1, updated_at = now(),
            owner = CASE WHEN wanted AND owner = $6::text THEN NULL ELSE $6::text END,
            owner_until = CASE WHEN wanted AND owner = $6::text THEN 0 ELSE $7::float8 END,
            wanted = false
        WHERE provider = $1 AND account = $2 AND version = $5
        RETURNING version, owner
    )
    SELECT (SELECT version FROM written) AS written, (SELECT owner FROM written) AS written_owner,
        version, state, paused_until, owner, owner_until, wanted
    FROM current
"""
_COMPARE_AND_SET = """
    WITH input AS (
        SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::float8[], $5::bigint[],
                             $6::text[], $7::float8[])
            AS i(provider, account, state, paused_until, version, owner, owner_until)
    ), written AS (
        UPDATE rate_limit_buckets AS b
        SET state = i.state::jsonb, paused_until = i.paused_until, version = b.version + 1,
            updated_at = now(),
            owner = CASE WHEN b.wanted AND b.owner = i.owner THEN NULL ELSE i.owner END,
            owner_until = CASE WHEN b.wanted AND b.owner = i.owner THEN 0 ELSE i.owner_until END,
            wanted = false
        FROM input AS i
        WHERE b.provider = i.provider AND b.account = i.account AND b.version = i.version
        RETURNING b.provider, b.account, b.version, b.owner
    )
    SELECT i.provider, i.account, w.version AS written, w.owner AS written_owner, b.version,
        b.state::text AS state, b.paused_until, b.owner, b.owner_until, b.wanted
    FROM input AS i
    LEFT JOIN written AS w ON w.provider = i.provider AND w.account = i.account
    LEFT JOIN rate_limit_buckets AS b ON b.provider = i.provider AND b.account = i.account
"""

_STORE_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError)  # PostgreSQL failed
KNOWN_MAX = 10_000  # accounts remembered; past it the copies are dropped and read again


@dataclass(frozen=True, slots=True)
class Row:
    """A row of rate_limit_buckets as this process last wrote or read it."""

    version: int
    state: BucketState
    owner: str | None = None
    owner_until: float = 0.0
    wanted: bool = False


def _row(record: Mapping[str, Any], version: int | None = None) -> Row:
    return Row(
        record["version"] if version is None else version,
        state_from_json(record["state"], record["paused_until"]),
        record["owner"], float(record["owner_until"]), bool(record["wanted"]),
    )


@dataclass(slots=True)
class _Turn:
    """This process's tasks on one account take turns; ``users`` counts the task holding
    the lock and those waiting for it (a lock just released to a waiter that has not run
    yet reports itself unlocked, so ``locked()`` alone cannot tell a turn is still in use)."""

    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    users: int = 0


def _free(turn: _Turn) -> None:
    """Give back a turn taken with ``users += 1`` and its lock acquired."""
    if turn.lock.locked():
        turn.lock.release()
    turn.users -= 1


@dataclass(slots=True)
class _Owned:
    """An account this process owns: its lease and when it was last used here."""

    until: float
    used: float


@dataclass(frozen=True, slots=True)
class _Write:
    provider: str
    account: str
    state: BucketState
    version: int  # the version ``state`` was computed from
    owner: str | None = None  # who owns the row after this write (None: nobody)
    owner_until: float = 0.0


def local_ok(state: BucketState, new_state: BucketState, until: float) -> bool:
    """May an owner keep this change to itself? Only new send times up to ``until`` (its
    lease's end less OWN_SAFETY_S): slots, pauses and epochs must be on the row in case
    the owner dies, and so must later send times."""
    if (new_state.leases != state.leases or new_state.paused_until != state.paused_until
            or new_state.epoch != state.epoch):
        return False
    return all(
        value[0] <= until for key, value in new_state.tat.items() if state.tat.get(key) != value
    )


def merged(mine: BucketState, theirs: BucketState) -> BucketState:
    """The row's state, with the later send times of an owner's copy that lost the row (to a
    hand-made UPDATE, or to a takeover after a stall): what it granted stays granted."""
    tat = dict(theirs.tat)
    for key, value in mine.tat.items():
        if key not in tat or value[0] > tat[key][0]:
            tat[key] = value
    return replace(theirs, tat=tat)


class PostgresBucketStore:
    """BucketStore shared by every process on the same database."""

    def __init__(
        self, pool: asyncpg.Pool, *, own: bool = False, clock: Callable[[], float] = time.time,
    ) -> None:
        """``pool``: the relaxed pool (``create_pool(relaxed=True)``) in production, so a
        grant does not wait for the WAL flush; any pool is correct. ``own``: take accounts
        this process has to itself (module docstring); ``close()`` then lets them go."""
        self._pool = pool
        self._own = own
        self._clock = clock  # the limiter's clock: send times and leases are on it
        self._me = uuid.uuid4().hex
        self._known: dict[tuple[str, str], Row] = {}
        self._turns: dict[tuple[str, str], _Turn] = {}
        self._owned: dict[tuple[str, str], _Owned] = {}
        self._foreign: dict[tuple[str, str], float] = {}  # another process's write last seen
        self._wrote_at: dict[tuple[str, str], float] = {}  # our last write on the row path
        self._keeper: asyncio.Task[None] | None = None
        self._closing = False
        self._writes: Coalescer[_Write, Mapping[str, Any]] = Coalescer(self._write_many)
        self.handovers = 0  # accounts let go because another process wanted them (tests, bench)

    def update_now(
        self, provider: str, account: str, change: Callable[[BucketState], tuple[BucketState, T]]
    ) -> tuple[bool, T | None]:
        """``update`` without waiting for anything, when it can stay in this process: the
        account is ours, no task of ours is taking a turn on it (the keeper writing it back,
        say) and ``change`` is one an owner may keep (local_ok). Then (True, its result);
        else (False, None) with nothing changed, and the caller takes ``update``. The usual
        grant on an owned account, without the turn's lock and a coroutine per call."""
        key = (provider, account)
        owned = self._owned.get(key)
        if owned is None:
            return False, None
        turn = self._turns.get(key)
        if turn is not None and turn.users:
            return False, None
        return self._keep_local(key, owned, change)

    def _keep_local(
        self, key: tuple[str, str], owned: _Owned, change: Callable[[BucketState], tuple[BucketState, T]]
    ) -> tuple[bool, T | None]:
        """Apply ``change`` to our copy of an owned account if an owner may keep it to itself
        (its caller holds the account's turn, or knows no task of ours does)."""
        now = self._clock()
        until = owned.until - OWN_SAFETY_S
        if until <= now:
            return False, None
        row = self._known[key]
        new_state, result = change(row.state)
        if new_state != row.state and not local_ok(row.state, new_state, until):
            return False, None
        owned.used = now
        self._known[key] = replace(row, state=new_state)
        return True, result

    async def update(
        self, provider: str, account: str, change: Callable[[BucketState], tuple[BucketState, T]]
    ) -> T:
        """Apply ``change`` atomically; raises NetworkError when PostgreSQL fails."""
        key = (provider, account)
        turn = self._turn(key)
        turn.users += 1
        try:
            async with turn.lock:
                owned = self._owned.get(key)
                if owned is not None:
                    kept, result = self._keep_local(key, owned, change)
                    if kept:
                        return cast(T, result)
                return await self._update_on_row(key, change)
        except _STORE_ERRORS as exc:
            self._drop(key)
            raise NetworkError(f"rate-limit store failed: {exc.__class__.__name__}") from exc
        finally:
            turn.users -= 1

    async def _update_on_row(
        self, key: tuple[str, str], change: Callable[[BucketState], tuple[BucketState, T]]
    ) -> T:
        """The compare-and-set rounds (in the account's turn), taking or keeping the lease
        when this process is alone on the account and owning it would save statements."""
        provider, account = key
        row = self._known.get(key) or await self._fetch(provider, account)
        deadline = self._clock() + HANDOVER_MAX_S
        for _ in range(MAX_ROUNDS):
            now = self._clock()
            owned = self._owned.get(key)
            mine = owned is not None and owned.until > now
            if not mine and row.owner is not None and row.owner_until > now:
                row = await self._wait_for_owner(key, row, deadline)
                continue
            new_state, result = change(row.state)
            if new_state == row.state:
                if mine:  # nobody else writes an owned row: our copy is the row
                    return result
                fresh = await self._fetch(provider, account)
                if fresh.version == row.version:
                    self._remember(key, fresh)
                    return result
                row = self._saw_foreign(key, row, fresh)
                continue
            until = now + OWN_LEASE_S
            # Owning pays for an account in steady use here (the write before this one was
            # recent), not for one call now and then: that would cost a claim, renewals and
            # a let-go instead of one write.
            claim = self._own and not self._closing and (mine or (
                now - self._foreign.get(key, -OWN_COOL_OFF_S) >= OWN_COOL_OFF_S
                and now - self._wrote_at.get(key, -OWN_IDLE_S) < OWN_IDLE_S
                and local_ok(row.state, new_state, until - OWN_SAFETY_S)))
            self._wrote_at[key] = now
            record = await self._write(key, _Write(
                provider, account, new_state, row.version, self._me if claim else None,
                until if claim else 0.0))
            if record["written"] is not None:
                self._wrote(key, record, new_state, until, used=now)
                return result
            row = self._saw_foreign(key, row, await self._lost(key, record, row.version))
        raise NetworkError(f"rate-limit store: {provider} {account} changed {MAX_ROUNDS} times under us")

    async def _write(self, key: tuple[str, str], write: _Write) -> Mapping[str, Any]:
        """The row after ``write``. A task cancelled meanwhile holds the account's turn
        until the write has settled (it may still land), forgets its copy, then raises: so
        nobody here computes from a copy that a landed write has made stale."""
        pending = self._writes.enqueue(write)
        try:
            return await asyncio.shield(pending)
        except asyncio.CancelledError:
            try:
                await asyncio.wait({pending})
            finally:
                self._drop(key)
            raise

    def _wrote(
        self, key: tuple[str, str], record: Mapping[str, Any], state: BucketState, until: float,
        *, used: float | None = None,
    ) -> None:
        """A write landed: remember the row; own the account if the row now names us, or
        count a hand-over if the statement let go because another process asked."""
        owner = record["written_owner"]
        self._remember(key, Row(record["written"], state, owner, until if owner else 0.0))
        owned = self._owned.get(key)
        if owner != self._me:
            if owned is not None:
                del self._owned[key]
                if record["owner"] == self._me and record["wanted"]:
                    self.handovers += 1
                    self._foreign[key] = self._clock()
            return
        if owned is None:
            self._owned[key] = _Owned(until, used if used is not None else self._clock())
        else:
            owned.until = until
            if used is not None:
                owned.used = used
        if self._keeper is None or self._keeper.done():  # its own context: no caller's job_id in its logs
            self._keeper = asyncio.get_running_loop().create_task(self._keep(), context=contextvars.Context())

    async def _lost(self, key: tuple[str, str], record: Mapping[str, Any], version: int) -> Row:
        """The row that beat a compare-and-set. The statement's own snapshot may predate the
        winning write (its UPDATE waited for the row and then found another version): then,
        or when the row is gone, read it again, so every lost round loses to a real write."""
        if record["version"] is None or record["version"] == version:
            return await self._fetch(*key)
        return _row(record)

    def _saw_foreign(self, key: tuple[str, str], row: Row, fresh: Row) -> Row:
        """Another writer changed the row under us: no owning it for a while, and an owner's
        copy keeps the send times it granted. Returns the row to compute from (remembered)."""
        self._foreign[key] = self._clock()
        if self._owned.pop(key, None) is not None:
            log.warning("rate_limit_ownership_lost", provider=key[0], taken=fresh.owner is not None)
            fresh = replace(fresh, state=merged(row.state, fresh.state))
        self._remember(key, fresh)
        return fresh

    async def _wait_for_owner(self, key: tuple[str, str], row: Row, deadline: float) -> Row:
        """The row has a live owner: ask it to let go and wait until it has, or until its
        lease ran out. The owner may be this process, having given the account up after a
        failed or cancelled write: the sends it granted and did not write end with that
        lease. Returns the row as it is then."""
        provider, account = key
        while True:
            now = self._clock()
            if row.owner is None or row.owner_until <= now:
                self._remember(key, row)
                return row
            if now > deadline:
                raise NetworkError(
                    f"rate-limit store: {provider} {account} is held by another process that"
                    f" did not let go within {HANDOVER_MAX_S:.0f}s")
            if row.owner == self._me:
                await asyncio.sleep(row.owner_until - now)
            else:
                self._foreign[key] = now
                if not row.wanted:
                    await self._pool.execute(_WANT, provider, account, row.owner, timeout=COMMAND_TIMEOUT_S)
                await asyncio.sleep(HANDOVER_POLL_S)
            row = await self._fetch(provider, account)

    async def _keep(self) -> None:
        """Renew the leases of the accounts in use (their writes share statements); let go
        of those nobody here used lately. An account whose turn is busy is skipped: the task
        holding it writes the row itself, or the lease runs out (which is safe)."""
        while self._owned and not self._closing:
            await asyncio.sleep(OWN_RENEW_S)
            await self._renew(list(self._owned))

    async def _renew(self, keys: list[tuple[str, str]]) -> None:
        """Write owned accounts' copies back: renewing their leases, or letting go (closing,
        unused for OWN_IDLE_S, or wanted by another process: the statement decides that).

        All in this task, not a task per account (which cost more than the rest of the
        renewal): the turns that are free are taken in this step (a free lock is acquired
        without waiting), every write joins the same statement, and the turns are held
        until their writes settle, as any write on the row path holds its turn."""
        held: dict[tuple[str, str], _Turn] = {}  # the turns taken, until each account is settled
        writes: list[tuple[tuple[str, str], Row, float, asyncio.Future[Mapping[str, Any]]]] = []
        try:
            for key in keys:
                turn = self._turn(key)
                owned = self._owned.get(key)
                if owned is None or turn.users or turn.lock.locked():
                    continue
                now = self._clock()
                if owned.until <= now:  # lapsed (a stalled loop or a slow database): start over
                    self._drop(key)
                    continue
                turn.users += 1
                held[key] = turn
                await turn.lock.acquire()  # free (no user): taken without waiting
                row = self._known[key]
                let_go = self._closing or now - owned.used >= OWN_IDLE_S
                until = now + OWN_LEASE_S
                writes.append((key, row, until, self._writes.enqueue(_Write(
                    key[0], key[1], row.state, row.version, None if let_go else self._me,
                    0.0 if let_go else until))))
            if writes:
                await self._settled([pending for *_, pending in writes], [key for key, *_ in writes])
            lost = []
            for key, row, until, pending in writes:  # each account's turn freed once it is settled
                try:
                    record = pending.result()
                except (Exception, asyncio.CancelledError) as exc:  # failed, or cancelled with its batch
                    self._drop(key)  # the write may have landed: nobody computes from this copy
                    _free(held.pop(key))
                    log.warning("rate_limit_renew_failed", provider=key[0], error=exc.__class__.__name__)
                    continue
                if record["written"] is None:  # a hand-made UPDATE, or taken after a stall
                    lost.append((key, row, record))
                else:
                    self._wrote(key, record, row.state, until)
                    _free(held.pop(key))
            for key, row, record in lost:
                try:
                    self._saw_foreign(key, row, await self._lost(key, record, row.version))
                except Exception as exc:  # PostgreSQL failed: the lease runs out, safely
                    self._drop(key)
                    log.warning("rate_limit_renew_failed", provider=key[0], error=exc.__class__.__name__)
                _free(held.pop(key))
        finally:
            for key, turn in held.items():  # not settled (cancelled, or a bug): forget those copies
                self._drop(key)
                _free(turn)

    async def _settled(
        self, pending: list[asyncio.Future[Mapping[str, Any]]], keys: list[tuple[str, str]]
    ) -> None:
        """Wait for writes to settle. Cancelled meanwhile, still wait (they may land), then
        forget those accounts' copies and raise: nobody here computes from a copy that a
        landed write has made stale (as _write does for one)."""
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            try:
                await asyncio.wait(pending)
            finally:
                for key in keys:
                    self._drop(key)
            raise

    async def close(self) -> None:
        """Write back and let go of every owned account, so another process need not wait
        for the leases to run out (a crash leaves them to run out, OWN_LEASE_S at most).
        Call it once nothing acquires any more; a grant after it does not take the account."""
        self._closing = True
        if self._keeper is not None:
            await asyncio.gather(self._keeper, return_exceptions=True)  # ends after its tick
        for _ in range(3):  # again for an account claimed by a write in flight when close began
            if not self._owned:
                break
            await self._turns_free(list(self._owned))  # a renewal skips a busy account
            try:
                await self._renew(list(self._owned))
            except Exception as exc:
                log.warning("rate_limit_let_go_failed", accounts=len(self._owned), error=exc.__class__.__name__)

    async def _turns_free(self, keys: list[tuple[str, str]]) -> None:
        """Wait until no task of ours is taking a turn on these accounts (a write in flight)."""
        for key in keys:
            turn = self._turns.get(key)
            if turn is not None and (turn.users or turn.lock.locked()):
                turn.users += 1
                try:
                    async with turn.lock:
                        pass
                finally:
                    turn.users -= 1

    async def _write_many(self, writes: list[_Write]) -> list[Mapping[str, Any]]:
        """Compare-and-set the accounts of concurrent grants in one statement, in key order
        (so two processes writing overlapping accounts lock them in the same order)."""
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            if len(writes) == 1:
                w = writes[0]
                row = await conn.fetchrow(
                    _COMPARE_AND_SET_ONE, w.provider, w.account, state_to_json(w.state),
                    w.state.paused_until, w.version, w.owner, w.owner_until, timeout=COMMAND_TIMEOUT_S,
                )
                return [row or {"written": None, "version": None}]  # the row is gone: fetched again
            ordered = sorted(writes, key=lambda w: (w.provider, w.account))
            if len({(w.provider, w.account) for w in ordered}) < len(ordered):
                # One statement would report both writes of one row as written: refused, the
                # Coalescer runs them one by one and the second loses its compare-and-set.
                raise ValueError("one account twice in a batch")
            rows = await conn.fetch(
                _COMPARE_AND_SET,
                [w.provider for w in ordered],
                [w.account for w in ordered],
                [state_to_json(w.state) for w in ordered],
                [w.state.paused_until for w in ordered],
                [w.version for w in ordered],
                [w.owner for w in ordered],
                [w.owner_until for w in ordered],
                timeout=COMMAND_TIMEOUT_S,
            )
        by_key = {(row["provider"], row["account"]): row for row in rows}
        return [by_key[(w.provider, w.account)] for w in writes]

    async def read(self, provider: str, account: str) -> BucketState:
        """The current state; raises NetworkError when PostgreSQL fails."""
        key = (provider, account)
        owned = self._owned.get(key)
        if owned is not None and owned.until > self._clock():
            return self._known[key].state
        try:
            row = await self._pool.fetchrow(_SELECT, provider, account, timeout=COMMAND_TIMEOUT_S)
        except _STORE_ERRORS as exc:
            raise NetworkError(f"rate-limit store failed: {exc.__class__.__name__}") from exc
        return BucketState() if row is None else state_from_json(row["state"], row["paused_until"])

    def _turn(self, key: tuple[str, str]) -> _Turn:
        turn = self._turns.get(key)
        if turn is None:
            turn = self._turns[key] = _Turn()
        return turn

    def _drop(self, key: tuple[str, str]) -> None:
        """Forget our copy (read again next time); an owned account is given up locally."""
        self._known.pop(key, None)
        self._owned.pop(key, None)

    def _remember(self, key: tuple[str, str], known: Row) -> None:
        if len(self._known) >= KNOWN_MAX and key not in self._known:
            self._known = {k: row for k, row in self._known.items() if k in self._owned}
            now = self._clock()
            self._foreign = {k: t for k, t in self._foreign.items() if now - t < OWN_COOL_OFF_S}
            self._wrote_at = {k: t for k, t in self._wrote_at.items() if now - t < OWN_IDLE_S}
            self._turns = {k: turn for k, turn in self._turns.items() if turn.users or k in self._owned}
        self._known[key] = known

    async def _fetch(self, provider: str, account: str) -> Row:
        """The row as it is now, created empty on first use of the account."""
        async with self._pool.acquire(timeout=ACQUIRE_TIMEOUT_S) as conn:
            row = await conn.fetchrow(_SELECT, provider, account, timeout=COMMAND_TIMEOUT_S)
            if row is None:
                await conn.execute(_INSERT, provider, account, timeout=COMMAND_TIMEOUT_S)
                row = await conn.fetchrow(_SELECT, provider, account, timeout=COMMAND_TIMEOUT_S)
        return _row(row)
