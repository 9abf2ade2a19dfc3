"""The sync engine's front door: one consumed sync request in, one stored outcome out.

For each delivery it decides, in this order: a finished job seen again is a duplicate
(acknowledged, its stored result re-sent to ``reply_to``); a body that is not a valid sync
request for a known provider, entity and venue is dead-lettered as ``validation``; else the
job runs (service/sync.py). A transient failure schedules a delayed retry through the outbox
(the delivery is acknowledged, never held); the last attempt, or a permanent failure,
dead-letters the message. Everything an outcome implies (job row, record log, events, job
result, retry or dead letter) is committed in one transaction before the consumer
acknowledges, and the consumer publishes the outbox rows named in the Outcome.
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import structlog
from pydantic import ValidationError as PydanticValidationError

from providers.base import ProviderClient, VenueAuth
from service.config import PROVIDERS, Settings
from service.database import INFRASTRUCTURE_ERRORS
from service.database import credentials as credentials_db
from service.database import jobs as jobs_db
from service.database import outbox as outbox_db
from service.database.job_locks import JobLocks
from service.errors import (
    IntegrationError,
    RateLimitError,
    UnknownEntityError,
    ValidationError,
    classify,
)
from service.logs import bind_message_context
from service.messages import (
    JobCounts,
    JobResult,
    RecordError,
    SyncRequest,
    first_error_line,
    parse_json_object,
    utcnow,
    without_nul,
)
from service.metrics import Metrics
from service.ports import Delivery, Outcome, Routes

log = structlog.get_logger(__name__)

AuthFactory = Callable[[str, str], Awaitable[VenueAuth]]
KNOWN_VENUE_TTL_S = 5.0


class AlreadyFinished(Exception):
    """Raised by a job runner when the job_id already succeeded (or ended partial)."""

    def __init__(self, status: str, result: dict[str, Any] | None) -> None:
        super().__init__(status)
        self.status = status
        self.result = result


class RunningElsewhere(Exception):
    """Raised by a job runner when another delivery of the job is running it right now."""


class RetryLater(Exception):
    """Raised by a job runner for a transient failure: retry the whole request later."""

    def __init__(self, error: IntegrationError) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class EngineDeps:
    """What the engine needs, passed in by lifecycle (no AMQP, no web server)."""

    settings: Settings
    pool: asyncpg.Pool
    clients: dict[str, ProviderClient]
    auth_for: AuthFactory
    routes: Routes
    metrics: Metrics
    relaxed_pool: asyncpg.Pool | None = None  # commits without waiting for the disk
    # Publishes committed outbox rows now (the relay's publish_stored): a long job's
    # mid-job events go out page by page. None: they wait for the job's end with its result.
    announce: Callable[[list[outbox_db.StoredMessage]], Awaitable[None]] | None = None
    job_locks: JobLocks | None = None  # one run of a job at a time; None: no lock taken

    @property
    def fast(self) -> asyncpg.Pool:
        """The pool for writes a redelivery would redo (job start, mid-job pages)."""
        return self.relaxed_pool or self.pool


def backoff_delay_s(
    attempt: int,
    *,
    base_s: float,
    max_s: float,
    retry_after_s: float | None,
    rng: Callable[[], float] = random.random,
) -> float:
    """Exponential backoff with full jitter, at least Retry-After, at most max_s."""
    ceiling = min(max_s, base_s * (2 ** max(attempt - 1, 0)))
    delay = ceiling * (0.5 + rng() / 2)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return float(min(delay, max_s))


def readable_job_id(body: dict[str, Any] | None) -> str | None:
    value = body.get("job_id") if body else None
    return value if isinstance(value, str) and 0 < len(value) <= 200 and "\x00" not in value else None


class Engine:
    """Runs sync requests to one stored outcome each."""

    def __init__(self, deps: EngineDeps) -> None:
        self._d = deps
        self._group = jobs_db.GroupCommit(deps.pool, deps.fast)
        self._known: dict[tuple[str, str], float] = {}
        self._overrides: dict[tuple[str, str, str], tuple[float, list[dict[str, Any]] | None]] = {}

    async def handle_sync(self, delivery: Delivery) -> Outcome:
        """Process one sync request delivery; never raises for bad input."""
        try:
            raw = parse_json_object(delivery.body)
        except ValueError as exc:
            return await self.dead_letter(delivery, ValidationError(str(exc)), raw=None)
        job_id = readable_job_id(raw)
        bind_message_context(
            message_id=delivery.message_id,
            job_id=job_id,
            venue_id=raw.get("venue_id"),
            provider=raw.get("provider"),
        )
        try:
            request = await self._validate(raw, delivery)
        except IntegrationError as exc:
            if job_id is not None:  # a finished job is acknowledged, whatever its body says now
                row = await jobs_db.get_job(self._d.pool, job_id)
                if row is not None and row["status"] in ("succeeded", "partial"):
                    return await self._duplicate(row["status"], row["result"], delivery)
            return await self.dead_letter(delivery, exc, raw=raw)
        return await self._run(request, delivery)

    async def _duplicate(self, status: str, stored_result: dict[str, Any] | None, delivery: Delivery) -> Outcome:
        """A finished job seen again: nothing runs; its stored result goes to reply_to."""
        stored: list[outbox_db.StoredMessage] = []
        if delivery.reply_to and stored_result:
            result = JobResult.model_validate(stored_result)
            message = self._d.routes.reply(
                result, reply_to=delivery.reply_to, correlation_id=delivery.correlation_id
            )
            async with self._d.pool.acquire() as conn, conn.transaction():
                stored = await outbox_db.enqueue(conn, [message])
        log.info("sync_duplicate", status=status)
        return Outcome("duplicate", status=status, outbox=tuple(stored))

    async def _validate(self, raw: dict[str, Any], delivery: Delivery) -> SyncRequest:
        from service.entities import check_supported

        if raw.get("provider") not in PROVIDERS and isinstance(raw.get("provider"), str):
            raise UnknownEntityError(f"unknown provider {raw['provider']!r}")
        try:
            request = SyncRequest.model_validate(raw)
        except PydanticValidationError as exc:
            raise ValidationError(f"invalid sync request: {first_error_line(exc)}") from None
        expected = f"sync.{request.provider}.{request.entity}"
        if delivery.routing_key != expected:
            raise ValidationError(
                f"routing key {delivery.routing_key!r} does not match the body's provider and entity ({expected})"
            )
        check_supported(request.provider, request.entity, request.direction)
        if not await self._venue_known(request.venue_id, request.provider):
            raise UnknownEntityError(f"unknown venue {request.venue_id!r} for {request.provider}")
        return request

    async def _override(self, venue_id: str, provider: str, entity: str) -> list[dict[str, Any]] | None:
        """A venue's mapping override, remembered for a few seconds."""
        key, now = (venue_id, provider, entity), time.monotonic()
        hit = self._overrides.get(key)
        if hit is not None and hit[0] > now:
            return hit[1]
        document = await jobs_db.get_mapping_override(self._d.pool, venue_id, provider, entity)
        if len(self._overrides) > 10_000:
            self._overrides.clear()
        self._overrides[key] = (now + KNOWN_VENUE_TTL_S, document)
        return document

    async def _venue_known(self, venue_id: str, provider: str) -> bool:
        """Known venues are remembered for a few seconds; unknown ones are asked each time."""
        now = time.monotonic()
        if self._known.get((venue_id, provider), 0.0) > now:
            return True
        known = await credentials_db.venue_known(self._d.pool, venue_id, provider)
        if known:
            if len(self._known) > 10_000:
                self._known.clear()
            self._known[(venue_id, provider)] = now + KNOWN_VENUE_TTL_S
        return known

    async def _run(self, request: SyncRequest, delivery: Delivery) -> Outcome:
        from service.sync import JobRunner

        held = _RunLock(self._d.job_locks, request.job_id)
        runner = JobRunner(
            self._d, request, delivery, group=self._group, overrides=self._override, hold=held.take
        )
        started = time.monotonic()  # a duration: not moved by a wall-clock step
        try:  # the run lock is held until the run's outcome is stored, retries and failures too
            try:
                status, stored = await runner.run()
            except AlreadyFinished as done:
                return await self._duplicate(done.status, done.result, delivery)
            except RunningElsewhere:
                row = await jobs_db.get_job(self._d.pool, request.job_id)
                if row is not None and row["status"] in ("succeeded", "partial"):  # it just ended
                    return await self._duplicate(row["status"], row["result"], delivery)
                return await self._put_off(request, delivery)
            except RetryLater as exc:
                attempts = 1 if runner.made_progress else runner.attempts
                return await self._retry_or_give_up(request, delivery, exc.error, attempts)
            except IntegrationError as exc:
                return await self.dead_letter(delivery, exc, raw=request.model_dump(by_alias=True))
            except INFRASTRUCTURE_ERRORS:
                raise  # not the request's fault: the consumer hands the delivery back
            except Exception as exc:
                log.exception("sync_crashed")
                return await self.dead_letter(delivery, classify(exc), raw=request.model_dump(by_alias=True))
        finally:
            await held.release()
        elapsed = time.monotonic() - started
        self._d.metrics.child(self._d.metrics.job_duration, request.provider, request.entity, status).observe(elapsed)
        return Outcome("done", status=status, outbox=stored)

    async def _put_off(self, request: SyncRequest, delivery: Delivery) -> Outcome:
        """Another delivery of this job is running it now (here or in another process):
        schedule this one again, with a growing backoff, instead of running the job twice
        at once. By then the job has usually finished, and this delivery ends as a duplicate
        (its reply_to answered from the stored result). The job's row is not touched."""
        attempt = _retry_attempt(delivery) + 1
        delay, stored = await self._republish_later(delivery, attempt, retry_after_s=None)
        log.info("sync_running_elsewhere", delay_s=round(delay, 3), attempt=attempt)
        return Outcome("retry", status="running", outbox=tuple(stored))

    async def _retry_or_give_up(
        self, request: SyncRequest, delivery: Delivery, error: IntegrationError, attempts: int
    ) -> Outcome:
        local_wait = isinstance(error, RateLimitError) and error.status is None

        async def job_waits(conn: asyncpg.Connection) -> None:
            # Attempts count failures in a row without progress; waiting for our own limiter
            # is not a failure at all.
            await conn.execute(
                "UPDATE sync_jobs SET attempts = $2 WHERE job_id = $1 AND status NOT IN ('succeeded', 'partial')",
                request.job_id,
                attempts - 1 if local_wait else attempts,
            )
            await jobs_db.set_pending_retry(conn, request.job_id, str(error))

        return await self.retry_later(
            delivery, error, attempt=attempts, provider=request.provider,
            raw=request.model_dump(by_alias=True), no_limit=local_wait, also=job_waits,
            log_event="sync_retry_scheduled",
        )

    async def retry_later(
        self,
        delivery: Delivery,
        error: IntegrationError,
        *,
        attempt: int,
        provider: str,
        raw: dict[str, Any] | None,
        log_event: str,
        no_limit: bool = False,
        also: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> Outcome:
        """A transient failure of a sync request or a webhook: after RETRY_MAX_ATTEMPTS
        (unless ``no_limit``) dead-letter it, else republish the delivery after an
        exponential backoff with jitter, in one transaction with ``also``'s writes."""
        settings = self._d.settings
        if attempt >= settings.retry_max_attempts and not no_limit:
            reason = f"gave up after {attempt} attempts: {error}"
            return await self.dead_letter(delivery, type(error)(reason), raw=raw)
        delay, stored = await self._republish_later(delivery, attempt, retry_after_s=error.retry_after_s, also=also)
        self._d.metrics.retries.labels(provider, error.category).inc()
        log.info(log_event, attempt=attempt, delay_s=round(delay, 3), category=error.category, error=str(error))
        return Outcome("retry", status="pending", outbox=tuple(stored), category=error.category)

    async def _republish_later(
        self, delivery: Delivery, attempt: int, *, retry_after_s: float | None,
        also: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
    ) -> tuple[float, list[outbox_db.StoredMessage]]:
        """Store the delivery again as an outbox row due after the backoff of ``attempt``
        (at least ``retry_after_s``), in one transaction with ``also``'s writes; return the
        delay and the stored row."""
        settings = self._d.settings
        delay = backoff_delay_s(
            attempt,
            base_s=settings.retry_base_delay_seconds,
            max_s=settings.retry_max_delay_seconds,
            retry_after_s=retry_after_s,
        )
        message = self._d.routes.retry(delivery, attempt=attempt, delay_s=delay)
        async with self._d.pool.acquire() as conn, conn.transaction():
            if also is not None:
                await also(conn)
            stored = await outbox_db.enqueue(conn, [message])
        return delay, stored

    async def dead_letter(
        self, delivery: Delivery, error: IntegrationError, *, raw: dict[str, Any] | None
    ) -> Outcome:
        """Store, route to integration.dead and fail the job, in one transaction."""
        reason = str(error)
        job_id = readable_job_id(raw)
        message = self._d.routes.dead_letter(
            delivery, reason=reason, category=error.category, severity=error.severity
        )
        async with self._d.pool.acquire() as conn, conn.transaction():
            dead_letter_id = await outbox_db.store_dead_letter(
                conn,
                message_id=delivery.message_id,
                job_id=job_id,
                exchange=delivery.exchange,
                routing_key=delivery.routing_key,
                body=delivery.body,
                headers=_jsonable(delivery.headers),
                properties={"reply_to": delivery.reply_to, "correlation_id": delivery.correlation_id},
                reason=reason,
                category=error.category,
                severity=error.severity,
            )
            stored = await outbox_db.enqueue(conn, [message] if dead_letter_id is not None else [])
            if job_id is not None and dead_letter_id is not None:  # else a redelivery failed it already
                stored += await self._fail_job(conn, job_id, raw or {}, error, delivery)
        queue = (
            "integration.webhook-events"
            if delivery.routing_key.startswith("webhook.")
            else "integration.sync-requests"
        )
        self._d.metrics.dead_lettered.labels(queue=queue, category=error.category).inc()
        log.warning("message_dead_lettered", reason=reason, category=error.category)
        return Outcome("dead_lettered", status="failed", outbox=tuple(stored), category=error.category)

    async def _fail_job(
        self,
        conn: asyncpg.Connection,
        job_id: str,
        raw: dict[str, Any],
        error: IntegrationError,
        delivery: Delivery,
    ) -> list[outbox_db.StoredMessage]:
        def text(name: str) -> str:
            value = raw.get(name)
            return value if isinstance(value, str) else "unknown"

        direction = "push" if raw.get("direction") == "push" else "pull"  # the contract's default
        mode = "full" if raw.get("mode") == "full" else "incremental"
        await jobs_db.ensure_job_row(
            conn,
            job_id=job_id,
            venue_id=text("venue_id"),
            provider=text("provider"),
            entity=text("entity"),
            direction=direction,
            mode=mode,
        )
        row = await jobs_db.get_job(conn, job_id, for_update=True)
        assert row is not None
        counts = JobCounts.model_validate(row["counts"]) if row["status"] != "failed" else JobCounts()
        job_error = RecordError(
            record_id=None, category=error.category, severity=error.severity, message=str(error)
        )
        result = JobResult(
            job_id=job_id,
            venue_id=row["venue_id"],
            provider=row["provider"],
            entity=row["entity"],
            direction=row["direction"],
            status="failed",
            counts=counts,
            errors=[*[RecordError.model_validate(e) for e in row["errors"] if e.get("record_id")], job_error],
            started_at=row["started_at"] or utcnow(),
            finished_at=utcnow(),
        )
        # None: another delivery of the job succeeded meanwhile; its outcome stands
        return (await jobs_db.finish_jobs(conn, [final_state(self._d.routes, result, delivery)]))[0] or []


class _RunLock:
    """A job's run lock for one delivery: taken by the runner when it starts the job the
    long way, released once the delivery's outcome is stored."""

    def __init__(self, locks: JobLocks | None, job_id: str) -> None:
        self._locks = locks
        self._job_id = job_id
        self._held = False

    async def take(self) -> None:
        """Raises RunningElsewhere when another delivery holds it."""
        if self._locks is None:
            return
        if not await self._locks.try_hold(self._job_id):
            raise RunningElsewhere(self._job_id)
        self._held = True

    async def release(self) -> None:
        if self._held:
            self._held = False
            assert self._locks is not None
            await self._locks.release(self._job_id)


def _retry_attempt(delivery: Delivery) -> int:
    value = delivery.headers.get("x-retry-attempt")
    return value if isinstance(value, int) and value >= 0 else 0


def final_state(
    routes: Routes, result: JobResult, delivery: Delivery, *, cursor: jobs_db.Cursor | None = None
) -> jobs_db.Finish:
    """What storing a job's result writes: its final state, the pull cursor it reached and
    the messages that announce it (the job result, and the reply when reply_to is set)."""
    messages = [routes.job_result(result)]
    reply_to = delivery.reply_to
    if reply_to:
        messages.append(routes.reply(result, reply_to=reply_to, correlation_id=delivery.correlation_id))
    return jobs_db.Finish(
        job_id=result.job_id,
        status=result.status,
        counts=result.counts.model_dump(),
        errors=[e.model_dump() for e in result.errors],
        result=result.to_json_bytes().decode(),
        finished_at=result.finished_at,
        announce=messages,
        cursor=cursor,
    )


def _jsonable(headers: dict[str, Any]) -> dict[str, Any]:
    """AMQP headers as JSON (bytes decoded, nested tables kept, the rest as text)."""

    def convert(value: Any) -> Any:
        if isinstance(value, bytes):
            return value.decode("utf-8", "replace")
        if isinstance(value, dict):
            return {str(k): convert(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [convert(v) for v in value]
        if isinstance(value, str):
            return without_nul(value)
        if isinstance(value, int | float | bool) or value is None:
            return value
        if isinstance(value, datetime):
            return value.astimezone(UTC).isoformat()
        return without_nul(str(value))

    return {without_nul(str(k)): convert(v) for k, v in headers.items()}


def new_message_id() -> str:
    return str(uuid.uuid4())


def due_in(delay_s: float) -> datetime:
    return utcnow() + timedelta(seconds=delay_s)
