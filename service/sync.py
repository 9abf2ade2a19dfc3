"""Running one sync job: push in provider-sized batches, pull page by page.

Each batch or page is committed in one transaction with its record outcomes, record state,
record events and the job's running counts, so a crash re-does at most one batch or page,
and a redelivered push skips records whose outcome is already stored (their idempotency
keys make any repeated provider write a replay).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import structlog

from providers.base import Page, ProviderRecord, PushItem, PushResult, VenueAuth
from service.database import jobs as jobs_db
from service.database import outbox as outbox_db
from service.errors import IntegrationError, ValidationError
from service.messages import (
    JobCounts,
    JobResult,
    RecordError,
    RecordEvent,
    SyncRequest,
    idempotency_key,
    record_event_id,
    utcnow,
)
from service.ports import Delivery

if TYPE_CHECKING:
    from service.engine import EngineDeps

log = structlog.get_logger(__name__)

Announced = tuple[outbox_db.StoredMessage, ...]  # committed outbox rows to publish after the ack-worthy commit


def content_hash(data: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def final_status(counts: JobCounts) -> str:
    if counts.failed == 0:
        return "succeeded"
    return "failed" if counts.failed == counts.processed else "partial"


ZERO_COUNTS: dict[str, int] = JobCounts().model_dump()


class Tally:
    """Running counts and per-record errors of one job."""

    def __init__(self, counts: dict[str, int], errors: list[dict[str, Any]]) -> None:
        # A new job's empty counts need no validating (most jobs: every pull's first page)
        self.counts = dict(JobCounts.model_validate(counts).model_dump()) if counts else ZERO_COUNTS.copy()
        self.errors = [RecordError.model_validate(e) for e in errors]

    def add(self, outcome: str, error: IntegrationError | None = None, record_id: str | None = None) -> None:
        self.counts[outcome] += 1
        self.counts["processed"] += 1
        if error is not None:
            self.errors.append(
                RecordError(
                    record_id=record_id, category=error.category, severity=error.severity, message=str(error)
                )
            )

    def job_counts(self) -> JobCounts:
        return JobCounts.model_validate(self.counts)


class JobRunner:
    """One execution of one sync request."""

    def __init__(self, deps: EngineDeps, request: SyncRequest, delivery: Delivery, *,
                 group: jobs_db.GroupCommit, overrides: Any = None,
                 hold: Callable[[], Awaitable[None]] | None = None) -> None:
        self._d = deps
        self._hold = hold  # takes the job's run lock, or raises RunningElsewhere
        self._group = group
        self._r = request
        self._delivery = delivery
        self._overrides = overrides
        self.attempts = 0
        self._outbox: list[outbox_db.StoredMessage] = []  # published right after the ack-worthy commit
        self.made_progress = False  # records stored this run: a retry then starts a fresh count
        self.finished: str | None = None  # the final status, once stored
        self._started_at: Any = None

    async def run(self) -> tuple[str, Announced]:
        """Run the job to its end; return (status, outbox rows to publish). Raises RetryLater
        or AlreadyFinished."""
        started_at = utcnow()
        first = await self._read_first()
        if first is not None:
            done = await self._done_at_once(first, started_at)
            if done is not None:
                return done
        return await self._run(first)

    async def _done_at_once(self, first: FirstPage, started_at: Any) -> tuple[str, Announced] | None:
        """A pull whose first page is its last and holds nothing (the usual incremental
        pull: nothing changed since the cursor) has nothing to compare and no page to resume
        from: the job is created finished, with its cursor and result, in one statement
        shared with the jobs ending at the same moment. None (nothing written) when the page
        failed or holds something, or the job_id already has a row: the usual way then
        starts the job and uses the page read."""
        if first.error is not None:
            return None
        _, _, page = first.get()
        if page.next_cursor is not None or page.records:
            return None
        nothing = Tally({}, [])
        status, finish = self._final_state(nothing, started_at, cursor=page.resume_cursor)
        stored = await self._group.create.submit(jobs_db.Done(self._start_of_job(), finish, started_at))
        if stored is None:
            return None
        self.attempts = 1
        self._outbox += stored
        self._finished(status, nothing, attempt=1)
        return status, tuple(self._outbox)

    async def _run(self, first: FirstPage | None) -> tuple[str, Announced]:
        from service.engine import RetryLater

        if self._hold is not None:
            await self._hold()
        row = await self._start()
        if self._r.direction == "push":  # the record log is the truth after a crash
            counts, errors = await jobs_db.outcome_tally(self._d.pool, self._r.job_id)
            tally = Tally(counts, errors)
        else:
            tally = Tally(row["counts"], row["errors"])
        client = self._d.clients[self._r.provider]
        try:
            if first is None:
                auth = await self._d.auth_for(self._r.venue_id, self._r.provider)
                await self._push(client, auth, tally)
            else:
                await self._pull(client, tally, row["progress"], first)
        except IntegrationError as exc:
            if exc.retryable:
                raise RetryLater(exc) from exc
            raise
        if self.finished is not None:  # the last page's transaction stored the result
            return self.finished, tuple(self._outbox)
        return await self._finish(tally, row["started_at"])

    async def _read_first(self) -> FirstPage | None:
        """For a pull, read its first page before anything is stored: a read has no side
        effect. An empty last page then ends the job in one statement (_done_at_once); any
        other page (or the error reading it) waits for the job start and is used, or thrown
        away when the job turns out to be a duplicate or a crashed run left a page to resume
        from. Writes (a push) never go ahead of their job row."""
        if self._r.direction != "pull":
            return None
        try:
            return FirstPage(await self._first_page())
        except Exception as exc:  # raised where the page is used, once the job has started
            return FirstPage(error=exc)

    async def _first_page(self) -> tuple[VenueAuth, dict[str, Any] | None, Page]:
        r = self._r
        auth = await self._d.auth_for(r.venue_id, r.provider)
        resume = None if r.mode == "full" else await self._group.cursor.submit((r.venue_id, r.provider, r.entity))
        page = await self._d.clients[r.provider].pull_page(
            auth, r.entity, cursor=None, resume=resume, options=r.options
        )
        return auth, resume, page

    async def _start(self) -> Any:
        """Mark the job running, in a statement shared with the jobs starting at the same
        moment, on the relaxed pool (a crash before the outcome redoes it); that also forgets
        the failed records of a failed job's re-run. Raises AlreadyFinished for a job that
        succeeded (or ended partial) before."""
        from service.engine import AlreadyFinished

        r = self._r
        row = await self._group.start.submit(self._start_of_job())
        if row["job_id"] is None:
            status, result = row["previous_status"], row["previous_result"]
            if status not in ("succeeded", "partial"):  # it finished between our read and write
                fresh = await jobs_db.get_job(self._d.pool, r.job_id)
                assert fresh is not None  # jobs are never deleted while their messages flow
                status, result = fresh["status"], fresh["result"]
            raise AlreadyFinished(status, result)
        self.attempts = row["attempts"]
        self._started_at = row["started_at"]
        log.info("sync_started", entity=r.entity, direction=r.direction, mode=r.mode, attempt=self.attempts)
        return row

    def _start_of_job(self) -> jobs_db.Start:
        r = self._r
        return jobs_db.Start(
            job_id=r.job_id,
            venue_id=r.venue_id,
            provider=r.provider,
            entity=r.entity,
            direction=r.direction,
            mode=r.mode,
            options=r.options,
            message_id=self._delivery.message_id,
            reply_to=self._delivery.reply_to,
            correlation_id=self._delivery.correlation_id,
        )

    def _mapping(self, override: list[dict[str, Any]] | None) -> Any:
        from service.mapping import effective_mapping

        return effective_mapping(self._r.provider, self._r.entity, override)

    async def _override(self) -> list[dict[str, Any]] | None:
        r = self._r
        if self._overrides is not None:
            cached: list[dict[str, Any]] | None = await self._overrides(r.venue_id, r.provider, r.entity)
            return cached
        return await jobs_db.get_mapping_override(self._d.pool, r.venue_id, r.provider, r.entity)

    # Push ----------------------------------------------------------------------------

    async def _push(self, client: Any, auth: VenueAuth, tally: Tally) -> None:
        from service.entities import parse_record
        from service.mapping import to_provider

        r = self._r
        mapping = self._mapping(await self._override())
        records = r.records or []
        done = {record_id for record_id, _ in await jobs_db.recorded_outcomes(self._d.pool, r.job_id)}
        ids = [str(rec.get("id")) for rec in records if rec.get("id") is not None]
        links = await jobs_db.platform_links(self._d.pool, r.venue_id, r.provider, r.entity, ids)
        pending: list[tuple[PushItem, dict[str, Any]]] = []
        invalid: list[tuple[str | None, IntegrationError]] = []
        for index, record in enumerate(records):
            record_id = record.get("id")
            if record_id is None or not isinstance(record_id, str | int):
                invalid.append((None, ValidationError(f"record {index} has no id")))
                continue
            record_id = str(record_id)
            if record_id in done:
                continue  # its outcome was stored by an earlier delivery of this job
            external_id = links.get(record_id)
            operation = "update" if external_id else "create"
            try:
                shape = parse_record(r.provider, r.entity, record)  # the platform shape, checked
                payload = to_provider(mapping, shape.model_dump(mode="json", exclude_unset=True))
            except IntegrationError as exc:
                invalid.append((record_id, exc))
                continue
            key = idempotency_key(r.job_id, record_id, operation)
            pending.append(
                (PushItem(record_id, payload, key, external_id, first_attempt_at=self._started_at), record)
            )
        await self._store_invalid(invalid, tally)
        size = max(1, client.batch_size(r.entity))
        for batch in _chunks(pending, size):
            results = await client.push_batch(auth, r.entity, [item for item, _ in batch], options=r.options)
            await self._store_push_results(batch, results, tally, mapping)

    async def _store_invalid(self, invalid: list[tuple[str | None, IntegrationError]], tally: Tally) -> None:
        if not invalid:
            return
        rows = []
        for record_id, exc in invalid:
            tally.add("failed", exc, record_id)
            if record_id is not None:
                rows.append((record_id, "map", "failed", None, None, exc.category, exc.severity, str(exc)))
        async with self._d.fast.acquire() as conn, conn.transaction():
            await jobs_db.log_records(conn, self._r.job_id, rows)
            await jobs_db.set_progress(conn, self._r.job_id, None, tally.counts)

    async def _store_push_results(
        self,
        batch: list[tuple[PushItem, dict[str, Any]]],
        results: list[PushResult],
        tally: Tally,
        mapping: Any,
    ) -> None:
        from service.engine import RetryLater

        r = self._r
        by_id = {result.record_id: result for result in results}
        log_rows, states, events = [], [], []
        transient: IntegrationError | None = None
        for item, record in batch:
            result = by_id.get(item.record_id)
            if result is None or (result.error is not None and result.error.retryable):
                transient = (
                    transient
                    or (result.error if result else None)
                    or ValidationError(
                        f"provider returned no result for record {item.record_id}", retryable=True
                    )
                )
                continue
            operation = "update" if item.external_id else "create"
            error = result.error
            log_rows.append(
                (
                    item.record_id,
                    operation,
                    result.outcome,
                    result.external_id,
                    item.idempotency_key,
                    error and error.category,
                    error and error.severity,
                    error and str(error),
                )
            )
            tally.add(result.outcome, error, item.record_id)
            if result.outcome != "failed" and result.external_id:
                data = self._platform_view(mapping, result.data, record)
                version = content_hash(data)
                states.append((result.external_id, item.record_id, version, None, version, False))
                events.append(self._event(result.external_id, item.record_id, data, version))
        async with self._d.fast.acquire() as conn, conn.transaction():
            await jobs_db.log_records(conn, r.job_id, log_rows)
            await jobs_db.upsert_record_states(conn, r.venue_id, r.provider, r.entity, states)
            stored = await outbox_db.enqueue(conn, events)
            self.made_progress = self.made_progress or bool(log_rows or states)
            await jobs_db.set_progress(conn, r.job_id, None, tally.counts)
        await self._announce_now(stored)
        if transient is not None:
            raise RetryLater(transient)

    @staticmethod
    def _platform_view(
        mapping: Any, provider_data: dict[str, Any] | None, record: dict[str, Any]
    ) -> dict[str, Any]:
        """The written record as a pull would see it, so the next pull finds it unchanged."""
        from service.mapping import to_platform

        if not provider_data:
            return record
        try:
            return to_platform(mapping, provider_data)
        except IntegrationError:
            return record

    # Pull ----------------------------------------------------------------------------

    async def _pull(
        self,
        client: Any,
        tally: Tally,
        progress: dict[str, Any] | None,
        first: FirstPage,
    ) -> None:
        """Page by page from the first page read ahead, or from the page a crashed run
        stored in ``progress``."""
        r = self._r
        page: Page | None
        if progress is None:
            auth, resume, page = first.get()
            cursor = None
        else:
            auth = await self._d.auth_for(r.venue_id, r.provider)
            cursor, resume, page = progress.get("cursor"), progress.get("resume"), None
        mapping = self._mapping(await self._override())
        pages = 0
        while True:
            if page is None:
                page = await client.pull_page(auth, r.entity, cursor=cursor, resume=resume, options=r.options)
            pages += 1
            await self._store_page(page, mapping, tally, resume, auth)
            if page.next_cursor is None:
                break
            cursor, page = page.next_cursor, None
        log.info("sync_pulled", pages=pages, processed=tally.counts["processed"])

    async def _store_page(
        self, page: Page, mapping: Any, tally: Tally, resume: dict[str, Any] | None, auth: VenueAuth
    ) -> None:
        from service.mapping import to_platform

        r = self._r
        external_ids = [rec.external_id for rec in page.records]
        last = page.next_cursor is None
        if last and not page.records:  # nothing to compare: result and cursor in one statement
            await self._finish(tally, self._started_at, cursor=page.resume_cursor)
            return
        pool = self._d.pool if last else self._d.fast  # the last page carries the outcome
        async with pool.acquire() as conn, conn.transaction():
            known = (
                await jobs_db.record_states(conn, r.venue_id, r.provider, r.entity, external_ids)
                if external_ids else {}
            )
            states, events, log_rows = [], [], []
            for record in page.records:
                try:
                    data = to_platform(mapping, record.data)
                except IntegrationError as exc:
                    tally.add("failed", exc, record.external_id)
                    log_rows.append(
                        (
                            record.external_id,
                            "pull",
                            "failed",
                            record.external_id,
                            None,
                            exc.category,
                            exc.severity,
                            str(exc),
                        )
                    )
                    continue
                outcome, state, event = self._compare(record, data, known.get(record.external_id), auth)
                tally.add(outcome)
                if state is not None:
                    states.append(state)
                if event is not None:
                    events.append(event)
            await jobs_db.log_records(conn, r.job_id, log_rows)
            await jobs_db.upsert_record_states(conn, r.venue_id, r.provider, r.entity, states)
            stored = await outbox_db.enqueue(conn, events)
            self.made_progress = True  # the page and its cursor are stored
            if last:  # the events go out with the result, after the acknowledgement
                self._outbox += stored
                await self._finish(tally, self._started_at, conn, cursor=page.resume_cursor)
                return
            if page.resume_cursor is not None:
                await jobs_db.put_cursor(conn, r.venue_id, r.provider, r.entity, page.resume_cursor)
            progress = {"cursor": page.next_cursor, "resume": resume}
            await jobs_db.set_progress(conn, r.job_id, progress, tally.counts)
        await self._announce_now(stored)

    async def _announce_now(self, stored: list[outbox_db.StoredMessage]) -> None:
        """Publish a committed mid-job page's or batch's events now. Held back to the job's
        end, a job longer than the relay's INLINE_GRACE_S would have them published twice:
        by the relay loop, which takes them as left behind, and again with the result."""
        if not stored:
            return
        if self._d.announce is None:
            self._outbox += stored
            return
        await self._d.announce(stored)

    def _compare(
        self, record: ProviderRecord, data: dict[str, Any], known: Any, auth: VenueAuth
    ) -> tuple[str, tuple[Any, ...] | None, outbox_db.OutboxMessage | None]:
        digest = content_hash(data)
        if known is not None:
            unchanged = known["content_hash"] == digest and known["deleted"] == record.deleted
            older = (
                known["updated_at"] is not None
                and record.updated_at is not None
                and record.updated_at < known["updated_at"]
            )
            if unchanged or older:
                return "skipped", None, None
        platform_id = (known["platform_id"] if known is not None else None) or platform_id_of(data)
        version = record.version or digest
        state = (record.external_id, platform_id, version, record.updated_at, digest, record.deleted)
        event = self._event(
            record.external_id, platform_id, data, version, deleted=record.deleted, account=auth.account_id
        )
        return ("created" if known is None else "updated"), state, event

    def _event(
        self,
        external_id: str,
        platform_id: str | None,
        data: dict[str, Any],
        version: str,
        *,
        deleted: bool = False,
        account: str | None = None,
    ) -> outbox_db.OutboxMessage:
        r = self._r
        event = RecordEvent(
            venue_id=r.venue_id,
            provider=r.provider,
            entity=r.entity,
            op="deleted" if deleted else "upserted",
            external_id=external_id,
            platform_id=platform_id,
            data=data,
            source="sync",
            occurred_at=utcnow(),
            event_id=record_event_id(r.provider, account or r.venue_id, r.entity, external_id, version),
        )
        self._d.metrics.record_events.labels(r.provider, r.entity, event.op, "sync").inc()
        return self._d.routes.record_event(event)

    # Finish --------------------------------------------------------------------------

    async def _finish(
        self, tally: Tally, started_at: Any, conn: Any = None, *, cursor: dict[str, Any] | None = None
    ) -> tuple[str, Announced]:
        """Store the job's result (in ``conn``'s transaction when given, else as one
        statement of its own), with the pull cursor it reached, and announce it."""
        status, state = self._final_state(tally, started_at, cursor=cursor)
        if conn is not None:  # part of the last page's transaction
            stored = (await jobs_db.finish_jobs(conn, [state]))[0]
        else:  # shares a statement with the jobs finishing at the same moment
            stored = await self._group.finish.submit(state)
        if stored is None:  # another delivery of this job finished it first
            raise await self._finished_elsewhere()  # (rolls the last page's transaction back)
        self._outbox += stored
        self._finished(status, tally, attempt=self.attempts)
        return status, tuple(self._outbox)

    async def _finished_elsewhere(self) -> Exception:
        """AlreadyFinished with the stored outcome of the delivery that finished this job."""
        from service.engine import AlreadyFinished

        row = await jobs_db.get_job(self._d.pool, self._r.job_id)
        assert row is not None  # jobs are never deleted while their messages flow
        log.warning("sync_finished_by_another_delivery", status=row["status"])
        return AlreadyFinished(row["status"], row["result"])

    def _final_state(
        self, tally: Tally, started_at: Any, *, cursor: dict[str, Any] | None
    ) -> tuple[str, jobs_db.Finish]:
        """The job's status and what storing its result writes."""
        from service.engine import final_state

        r = self._r
        counts = tally.job_counts()
        status = final_status(counts)
        result = JobResult(
            job_id=r.job_id,
            venue_id=r.venue_id,
            provider=r.provider,
            entity=r.entity,
            direction=r.direction,
            status=status,
            counts=counts,
            errors=tally.errors,
            started_at=started_at or utcnow(),
            finished_at=utcnow(),
        )
        reached = None if cursor is None else (r.venue_id, r.provider, r.entity, cursor)
        return status, final_state(self._d.routes, result, self._delivery, cursor=reached)

    def _finished(self, status: str, tally: Tally, *, attempt: int) -> None:
        """The job's result is stored: count its records, log its end."""
        r = self._r
        self.finished = status
        for outcome in ("created", "updated", "skipped", "failed"):
            if tally.counts[outcome]:
                self._d.metrics.records_processed.labels(r.provider, r.entity, outcome).inc(
                    tally.counts[outcome]
                )
        log.info("sync_finished", status=status, attempt=attempt, **tally.counts)


def platform_id_of(data: dict[str, Any]) -> str | None:
    """The platform id a mapped record carries, if any."""
    value = data.get("id")
    return str(value) if value not in (None, "") else None


@dataclass(frozen=True, slots=True)
class FirstPage:
    """A pull's first page read before its job started: (auth, resume cursor, page), or
    the error reading it, raised where the page is used."""

    read: tuple[VenueAuth, dict[str, Any] | None, Page] | None = None
    error: Exception | None = None

    def get(self) -> tuple[VenueAuth, dict[str, Any] | None, Page]:
        if self.error is not None:
            raise self.error
        assert self.read is not None
        return self.read


def _chunks(items: list[Any], size: int) -> Iterator[list[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]
