"""The daemon core on real RabbitMQ and PostgreSQL, with an in-memory provider."""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from consumers.consumer import PUBLISHING_PER_PREFETCH
from service.messages import SyncRequest, VerifiedWebhook, idempotency_key, utcnow
from tests.daemon_harness import Harness, body_of, running_daemon
from tests.helpers import eventually


def customer(n: int) -> dict[str, Any]:
    return {"id": f"cust-{n}", "email": f"user{n}@example.com", "first_name": f"User{n}", "last_name": "Test"}


def pull_request(venue: str, mode: str = "incremental") -> SyncRequest:
    return SyncRequest(
        job_id=str(uuid.uuid4()), venue_id=venue, provider="stripe", entity="customers", direction="pull", mode=mode
    )


def push(venue: str, records: list[dict[str, Any]], job_id: str | None = None) -> SyncRequest:
    return SyncRequest(
        job_id=job_id or str(uuid.uuid4()),
        venue_id=venue,
        provider="stripe",
        entity="customers",
        direction="push",
        records=records,
    )


@dataclass
class Held:
    entered: asyncio.Event  # a held publish has started
    release: asyncio.Event  # set it to let held publishes through


def hold_job_results(daemon: Harness, monkeypatch: pytest.MonkeyPatch, exchange: str = "") -> Held:
    """Job results (or, given ``exchange``, every message to it) are published, and so
    confirmed, only once ``release`` is set."""
    held = Held(asyncio.Event(), asyncio.Event())
    publish = daemon.publisher.publish

    async def holding(message: Any, **kwargs: Any) -> None:
        if message.exchange == exchange if exchange else message.routing_key.startswith("job."):
            held.entered.set()
            await held.release.wait()
        await publish(message, **kwargs)

    monkeypatch.setattr(daemon.publisher, "publish", holding)
    return held


def fail_job_creates(monkeypatch: pytest.MonkeyPatch, *errors: BaseException) -> list[BaseException]:
    """The next statements that would create finished jobs raise these errors, in order;
    returns what is left of them (empty once all were raised)."""
    from service.database import jobs as jobs_db

    create = jobs_db.create_finished_jobs
    left = list(reversed(errors))

    async def failing(conn: Any, jobs: Any) -> Any:
        if left:
            raise left.pop()
        return await create(conn, jobs)

    monkeypatch.setattr(jobs_db, "create_finished_jobs", failing)
    return left


@pytest.fixture
async def daemon(settings: Any, request: Any) -> Any:
    async with running_daemon(settings, name=request.node.name) as harness:
        yield harness


async def test_push_succeeds_and_publishes_events_and_result(daemon: Harness, venue_id: str) -> None:
    """A push of three records ends succeeded with three record events and one job result."""
    await daemon.credential(venue_id)
    request = push(venue_id, [customer(i) for i in range(3)])
    await daemon.request(request)
    row = await eventually(lambda: daemon.finished(request.job_id), what="job finished")
    assert "succeeded" == row["status"]
    assert {"processed": 3, "created": 3, "updated": 0, "skipped": 0, "failed": 0} == row["counts"]
    result = await daemon.probed(
        lambda m: m.routing_key == "job.succeeded" and body_of(m).get("job_id") == request.job_id
    )
    assert "integration.job_result.v1" == body_of(result)["schema"]
    keys = [key for op, key in daemon.provider.calls if op == "push"]
    assert sorted(idempotency_key(request.job_id, f"cust-{i}", "create") for i in range(3)) == sorted(keys)


async def test_a_stored_outcome_is_acknowledged_before_its_result_is_confirmed(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The delivery is acknowledged once its outcome is committed, while the job result's
    publish still waits for the broker; the result is published when the broker answers."""
    await daemon.credential(venue_id)
    held = hold_job_results(daemon, monkeypatch)
    request = push(venue_id, [customer(1)])
    await daemon.request(request)
    consumed = daemon.metrics.messages_consumed.labels(queue="integration.sync-requests", outcome="succeeded")
    await eventually(lambda: consumed._value.get() == 1, what="the delivery acknowledged")
    seen = [daemon.probe.get_nowait().routing_key for _ in range(daemon.probe.qsize())]
    assert "job.succeeded" not in seen  # no result yet: its publish is still waiting
    held.release.set()
    result = await daemon.probed(
        lambda m: m.routing_key == "job.succeeded" and body_of(m).get("job_id") == request.job_id
    )
    assert "succeeded" == body_of(result)["status"]


async def test_acknowledged_deliveries_waiting_for_confirms_are_bounded(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the broker not confirming, at most PUBLISHING_PER_PREFETCH x prefetch stored
    outcomes are acknowledged; the rest wait unacknowledged until the confirms come."""
    await daemon.credential(venue_id)
    held = hold_job_results(daemon, monkeypatch)
    bound = PUBLISHING_PER_PREFETCH * 16
    requests = [push(venue_id, [customer(i)]) for i in range(bound + 16)]  # 16: the prefetch
    for request in requests:
        await daemon.request(request)

    async def all_stored() -> bool:
        count = await daemon.pool.fetchval(
            "SELECT count(*) FROM sync_jobs WHERE job_id = ANY($1::text[]) AND status = 'succeeded'",
            [r.job_id for r in requests],
        )
        return bool(count == len(requests))

    await eventually(all_stored, timeout=30, what="every outcome stored")
    consumed = daemon.metrics.messages_consumed.labels(queue="integration.sync-requests", outcome="succeeded")
    assert bound == consumed._value.get()
    held.release.set()
    await eventually(lambda: consumed._value.get() == len(requests), timeout=30, what="the rest acknowledged")


async def test_nul_characters_are_dead_lettered_or_stored_not_handed_back_forever(
    daemon: Harness, venue_id: str
) -> None:
    """PostgreSQL text cannot hold NUL. A job_id with one is a validation dead letter (its
    record stored); a message_id or header with one is stored with U+FFFD instead. Before,
    every outcome of such a message failed, its dead letter too, and it went round."""
    await daemon.credential(venue_id)
    body = json.dumps(
        {"schema": "integration.sync_request.v1", "job_id": "job\u0000one", "venue_id": venue_id,
         "provider": "stripe", "entity": "customers", "direction": "pull"}
    ).encode()
    await daemon.publish(body, "sync.stripe.customers", message_id="message\x00one")
    dead = await daemon.probed(lambda m: m.exchange == "integration.dead" and m.body == body)
    assert "validation" == dead.headers["x-error-category"]
    assert "NUL" in str(dead.headers["x-death-reason"])
    stored = await daemon.pool.fetchrow("SELECT message_id, job_id FROM dead_letters WHERE body = $1", body)
    assert ("message\ufffdone", None) == (stored["message_id"], stored["job_id"])


async def test_a_dead_letter_is_acknowledged_only_after_it_is_published(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Dead letters keep the contract's order: stored, published to integration.dead, acked."""
    held = hold_job_results(daemon, monkeypatch, exchange="integration.dead")
    body = b"{not json"
    await daemon.publish(body, "sync.stripe.customers")
    await asyncio.wait_for(held.entered.wait(), timeout=10)  # stored, its publish under way
    dead = daemon.metrics.messages_consumed.labels(queue="integration.sync-requests", outcome="dead_lettered")
    assert 0 == dead._value.get()  # not acknowledged before the publish
    held.release.set()
    await daemon.probed(lambda m: m.exchange == "integration.dead" and m.body == body)
    await eventually(lambda: dead._value.get() == 1, what="acknowledged after the publish")


async def test_same_job_id_twice_runs_once_and_replies_with_stored_result(
    daemon: Harness, venue_id: str
) -> None:
    """A finished job's request arriving again is acknowledged without running, and replied to."""
    await daemon.credential(venue_id)
    request = push(venue_id, [customer(1)])
    await daemon.request(request)
    await eventually(lambda: daemon.finished(request.job_id))
    reply_queue = await (await daemon.connection.channel()).declare_queue(exclusive=True)
    await daemon.request(request, reply_to=reply_queue.name)
    reply = await eventually(lambda: reply_queue.get(fail=False), what="reply")
    assert request.job_id == json.loads(reply.body)["job_id"]
    assert 1 == len([c for c in daemon.provider.calls if c[0] == "push"])


async def test_a_failed_job_sent_again_runs_again_and_retries_its_failed_records(
    daemon: Harness, venue_id: str
) -> None:
    """Only succeeded and partial jobs are duplicates: a failed job_id sent again runs, its
    failed record outcomes forgotten; a finished one sent again with a body that no longer
    validates (here: a routing key that does not match) is still a duplicate, not a dead letter."""
    await daemon.credential(venue_id)
    daemon.provider.failing_records.add("cust-1")
    request = push(venue_id, [customer(1)])
    await daemon.request(request)
    assert "failed" == (await eventually(lambda: daemon.finished(request.job_id)))["status"]
    daemon.provider.failing_records.clear()
    await daemon.request(request)

    async def succeeded() -> Any:
        row = await daemon.job(request.job_id)
        return row if row is not None and row["status"] == "succeeded" else None

    row = await eventually(succeeded)
    assert (1, 0, 1) == (row["counts"]["created"], row["counts"]["failed"], row["attempts"])
    outcomes = await daemon.pool.fetch(
        "SELECT outcome FROM sync_record_log WHERE job_id = $1", request.job_id
    )
    assert ["created"] == [r["outcome"] for r in outcomes]

    reply_queue = await (await daemon.connection.channel()).declare_queue(exclusive=True)
    await daemon.publish(request.to_json_bytes(), "sync.stripe.products", reply_to=reply_queue.name)
    reply = await eventually(lambda: reply_queue.get(fail=False), what="reply")
    assert "succeeded" == json.loads(reply.body)["status"]
    assert 0 == await daemon.pool.fetchval("SELECT count(*) FROM dead_letters WHERE job_id = $1", request.job_id)


async def test_record_failure_fails_alone_and_job_is_partial(daemon: Harness, venue_id: str) -> None:
    """One bad record fails with validation; the others succeed; the job is partial."""
    await daemon.credential(venue_id)
    daemon.provider.failing_records.add("cust-2")
    request = push(venue_id, [customer(1), customer(2), {"id": "cust-3", "email": 12}])
    await daemon.request(request)
    row = await eventually(lambda: daemon.finished(request.job_id))
    assert "partial" == row["status"]
    assert 1 == row["counts"]["created"] and 2 == row["counts"]["failed"]
    categories = {e["record_id"]: e["category"] for e in row["errors"]}
    assert {"cust-2": "validation", "cust-3": "validation"} == categories


async def test_transient_failures_retry_with_the_same_keys(daemon: Harness, venue_id: str) -> None:
    """Network errors are retried later (delivery acked meanwhile) until the job succeeds."""
    await daemon.credential(venue_id)
    daemon.provider.transient_failures = 2
    request = push(venue_id, [customer(1), customer(2)])
    await daemon.request(request)
    row = await eventually(lambda: daemon.finished(request.job_id), timeout=20)
    assert ("succeeded", 3) == (row["status"], row["attempts"])
    keys = {key for op, key in daemon.provider.calls if op == "push"}
    assert {idempotency_key(request.job_id, f"cust-{i}", "create") for i in (1, 2)} == keys


async def test_retries_exhausted_dead_letters_with_reason(
    daemon: Harness, venue_id: str, settings_factory: Any
) -> None:
    """After RETRY_MAX_ATTEMPTS the message is dead-lettered as network and the job fails."""
    await daemon.credential(venue_id)
    daemon.provider.transient_failures = 100
    request = push(venue_id, [customer(1)])
    await daemon.request(request)
    row = await eventually(lambda: daemon.finished(request.job_id), timeout=30)
    assert "failed" == row["status"]
    dead = await daemon.probed(
        lambda m: m.exchange == "integration.dead" and body_of(m).get("job_id") == request.job_id
    )
    assert "network" == dead.headers["x-error-category"]
    assert str(dead.headers["x-death-reason"]).startswith("gave up after 8 attempts")
    daemon.provider.transient_failures = 0


BAD_INPUTS = [
    ("not json", b"{nope", "sync.stripe.customers", "validation"),
    (
        "wrong schema",
        {
            "schema": "integration.other.v9",
            "job_id": "J",
            "venue_id": "v",
            "provider": "stripe",
            "entity": "customers",
        },
        "sync.stripe.customers",
        "validation",
    ),
    (
        "unknown provider",
        {
            "schema": "integration.sync_request.v1",
            "job_id": "J",
            "venue_id": "v",
            "provider": "paypal",
            "entity": "customers",
        },
        "sync.paypal.customers",
        "validation",
    ),
    (
        "unknown entity",
        {
            "schema": "integration.sync_request.v1",
            "job_id": "J",
            "venue_id": "V",
            "provider": "stripe",
            "entity": "widgets",
        },
        "sync.stripe.widgets",
        "validation",
    ),
    (
        "unknown venue",
        {
            "schema": "integration.sync_request.v1",
            "job_id": "J",
            "venue_id": "nobody",
            "provider": "stripe",
            "entity": "customers",
        },
        "sync.stripe.customers",
        "validation",
    ),
    (
        "routing key mismatch",
        {
            "schema": "integration.sync_request.v1",
            "job_id": "J",
            "venue_id": "V",
            "provider": "stripe",
            "entity": "customers",
        },
        "sync.stripe.refunds",
        "validation",
    ),
    (
        "push without records",
        {
            "schema": "integration.sync_request.v1",
            "job_id": "J",
            "venue_id": "V",
            "provider": "stripe",
            "entity": "customers",
            "direction": "push",
        },
        "sync.stripe.customers",
        "validation",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "routing_key", "category"), BAD_INPUTS, ids=[c[0] for c in BAD_INPUTS]
)
async def test_bad_input_is_dead_lettered_with_headers_and_a_failed_result(
    daemon: Harness, venue_id: str, case: str, body: Any, routing_key: str, category: str
) -> None:
    """Each bad input lands in integration.dead with its four headers, the body untouched."""
    await daemon.credential(venue_id)
    job_id = str(uuid.uuid4())
    if isinstance(body, dict):
        body = json.dumps(
            {k: (job_id if v == "J" else venue_id if v == "V" else v) for k, v in body.items()}
        ).encode()
    await daemon.publish(body, routing_key)
    dead = await daemon.probed(lambda m: m.exchange == "integration.dead" and m.body == body)
    assert category == dead.headers["x-error-category"]
    assert dead.headers["x-death-reason"] and "\n" not in str(dead.headers["x-death-reason"])
    assert ("integration.commands", routing_key) == (
        dead.headers["x-original-exchange"],
        dead.headers["x-original-routing-key"],
    )
    assert dead.headers["x-error-severity"] in ("low", "medium", "high", "critical")
    stored = await daemon.pool.fetchval("SELECT count(*) FROM dead_letters WHERE body = $1", body)
    assert 1 == stored
    if case != "not json":
        result = await daemon.probed(
            lambda m: m.routing_key == "job.failed" and body_of(m).get("job_id") == job_id
        )
        errors = body_of(result)["errors"]
        assert [(None, category)] == [(e["record_id"], e["category"]) for e in errors]


async def test_pull_pages_store_cursor_and_incremental_emits_only_changes(
    daemon: Harness, venue_id: str
) -> None:
    """A full pull reads every page; an incremental pull after one change emits one event."""
    await daemon.credential(venue_id)
    first = push(venue_id, [customer(i) for i in range(5)])
    await daemon.request(first)
    await eventually(lambda: daemon.finished(first.job_id))
    full = pull_request(venue_id, "full")
    await daemon.request(full)
    row = await eventually(lambda: daemon.finished(full.job_id))
    assert ("succeeded", 5) == (row["status"], row["counts"]["processed"])
    assert 5 == row["counts"]["skipped"]  # the push already recorded these exact records
    cursor = await daemon.pool.fetchval("SELECT cursor FROM pull_cursors WHERE venue_id = $1", venue_id)
    assert cursor is not None
    some = next(iter(daemon.provider.objects.values()))
    some.update(
        {
            "email": "changed@example.com",
            "updated": max(o["updated"] for o in daemon.provider.objects.values()) + 1,
        }
    )
    incremental = pull_request(venue_id)
    await daemon.request(incremental)
    row = await eventually(lambda: daemon.finished(incremental.job_id))
    assert {"processed": 1, "created": 0, "updated": 1, "skipped": 0, "failed": 0} == row["counts"]
    event = await daemon.probed(
        lambda m: (
            m.routing_key == "stripe.customers.upserted"
            and body_of(m)["data"].get("email") == "changed@example.com"
        )
    )
    assert some["id"] == body_of(event)["external_id"]


async def test_a_pull_resumes_from_a_crashed_runs_page_and_drops_its_read_ahead(
    daemon: Harness, venue_id: str
) -> None:
    """The first page read ahead of the job start is thrown away when a crashed run of the
    same job stored a page to resume from: only the pages from there on are counted."""
    await daemon.credential(venue_id)
    seed = push(venue_id, [customer(i) for i in range(5)])
    await daemon.request(seed)
    await eventually(lambda: daemon.finished(seed.job_id))
    daemon.provider.page_size = 2
    pull = pull_request(venue_id, "full")
    await daemon.pool.execute(
        "INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, status, attempts, progress)"
        " VALUES ($1, $2, 'stripe', 'customers', 'pull', 'full', 'running', 1, $3)",
        pull.job_id,
        venue_id,
        {"cursor": {"offset": 2}, "resume": None},
    )
    await daemon.request(pull)
    row = await eventually(lambda: daemon.finished(pull.job_id))
    assert ("succeeded", 3) == (row["status"], row["counts"]["processed"])  # offsets 2, 3 and 4


async def test_a_long_pulls_page_events_are_published_once_as_its_pages_commit(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A pull that outlasts the relay's grace for fresh outbox rows: its earlier pages'
    events are published as those pages commit, and the job's end does not publish them
    again (held to the end, the relay took them as left behind and they went out twice)."""
    from service.database import outbox as outbox_db

    monkeypatch.setattr(outbox_db, "INLINE_GRACE_S", 0.2)
    await daemon.credential(venue_id)
    for n in range(6):
        daemon.provider.objects[f"cus_{n}"] = {"id": f"cus_{n}", "email": f"u{n}@example.com", "updated": n + 1}
    last_page = asyncio.Event()
    pull_page = daemon.provider.pull_page

    async def slow_last_page(auth: Any, entity: str, *, cursor: Any, **kwargs: Any) -> Any:
        if cursor == {"offset": 4}:
            await last_page.wait()
        return await pull_page(auth, entity, cursor=cursor, **kwargs)

    monkeypatch.setattr(daemon.provider, "pull_page", slow_last_page)
    published: list[str] = []
    publish = daemon.publisher.publish

    async def counting(message: Any, **kwargs: Any) -> None:
        if venue_id.encode() in message.body:  # not another test's leftover rows
            published.append(message.message_id)
        await publish(message, **kwargs)

    monkeypatch.setattr(daemon.publisher, "publish", counting)
    pull = pull_request(venue_id, "full")
    await daemon.request(pull)

    async def early_events_marked() -> bool:
        marked = await daemon.pool.fetchval(
            "SELECT count(*) FROM outbox WHERE routing_key = 'stripe.customers.upserted' AND published_at IS NOT NULL"
            " AND convert_from(body, 'UTF8') LIKE $1",
            f"%{venue_id}%",
        )
        return bool(marked == 4)  # pages one and two, published and marked while page three waits

    await eventually(early_events_marked, what="the first two pages' events published")
    last_page.set()
    await daemon.probed(lambda m: m.routing_key == "job.succeeded" and body_of(m).get("job_id") == pull.job_id)
    events = [m for m in published if m.startswith("event-")]
    assert 6 == len(events) == len(set(events))


async def test_a_job_delivered_again_while_it_runs_is_put_off_not_run_twice(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same job_id delivered again while its first run waits at the provider: the
    second delivery is scheduled again instead of running beside it, and once the job has
    finished it ends as a duplicate. The provider sees one write."""
    await daemon.credential(venue_id)
    entered, release = asyncio.Event(), asyncio.Event()
    push_batch = daemon.provider.push_batch

    async def held(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await push_batch(*args, **kwargs)

    monkeypatch.setattr(daemon.provider, "push_batch", held)
    request = push(venue_id, [customer(1)])
    await daemon.request(request)
    await asyncio.wait_for(entered.wait(), timeout=10)
    await daemon.request(request)  # a publisher's retry, while the first run is at the provider
    outcomes = daemon.metrics.messages_consumed
    put_off = outcomes.labels(queue="integration.sync-requests", outcome="retried")
    await eventually(lambda: put_off._value.get() >= 1, what="the second delivery put off")
    release.set()
    duplicate = outcomes.labels(queue="integration.sync-requests", outcome="duplicate")
    await eventually(lambda: duplicate._value.get() == 1, what="the put-off delivery ended as a duplicate")
    assert "succeeded" == (await daemon.finished(request.job_id))["status"]
    assert 1 == sum(1 for op, _ in daemon.provider.calls if op == "push")


async def test_a_finished_pull_sent_again_stores_and_announces_nothing(daemon: Harness, venue_id: str) -> None:
    """A duplicate pull's read-ahead page is dropped: no second result, no record event."""
    await daemon.credential(venue_id)
    daemon.provider.objects["obj-1"] = {"id": "obj-1", "email": "one@example.com", "updated": 1}
    pull = pull_request(venue_id, "full")
    await daemon.request(pull)
    first = await eventually(lambda: daemon.finished(pull.job_id))
    await daemon.request(pull)
    consumed = daemon.metrics.messages_consumed.labels(queue="integration.sync-requests", outcome="duplicate")
    await eventually(lambda: consumed._value.get() == 1, what="the duplicate acknowledged")
    assert first["finished_at"] == (await daemon.finished(pull.job_id))["finished_at"]
    results = await daemon.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key LIKE 'job.%' AND message_id LIKE $1", f"result-{pull.job_id}-%"
    )
    events = await daemon.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key = 'stripe.customers.upserted'"
        " AND convert_from(body, 'UTF8') LIKE $1",
        f"%{venue_id}%obj-1%",
    )
    assert (1, 1) == (results, events)


async def test_a_webhook_the_provider_code_cannot_handle_is_dead_lettered_not_handed_back(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A verified webhook whose body breaks the provider's parsing (garbage holding a NUL,
    which PostgreSQL cannot store in the reason either) is dead-lettered as `unknown`, like
    a sync request's crash; before, it was handed back as if the database were away, and
    the consumer paused and went round with it."""
    await daemon.credential(venue_id)

    def garbage(webhook: Any, body: bytes) -> Any:
        raise ValueError("unexpected field \x00 in event")

    monkeypatch.setattr(daemon.provider, "parse_webhook", garbage, raising=False)
    message = VerifiedWebhook(
        provider="stripe", venue_id=venue_id, received_at=utcnow(), headers={},
        body=base64.b64encode(b'{"id": "evt_garbage"}').decode(),
    )
    body = message.to_json_bytes()
    await daemon.publish(body, "webhook.stripe", exchange="integration.webhooks")
    dead = await daemon.probed(lambda m: m.exchange == "integration.dead" and m.body == body)
    assert "unknown" == dead.headers["x-error-category"]
    assert "ValueError: unexpected field \ufffd in event" == dead.headers["x-death-reason"]
    assert 1 == await daemon.pool.fetchval("SELECT count(*) FROM dead_letters WHERE body = $1", body)


async def test_same_webhook_event_twice_yields_one_record_event(daemon: Harness, venue_id: str) -> None:
    """Webhook dedupe: the same provider event delivered twice produces one record event."""
    await daemon.credential(venue_id)
    event = {
        "id": f"evt_{uuid.uuid4().hex}",
        "created": 1_800_000_000,
        "data": {"object": {"id": "cus_hook", "email": "hook@example.com", "name": "Hook Test"}},
    }
    message = VerifiedWebhook(
        provider="stripe",
        venue_id=venue_id,
        received_at=utcnow(),
        headers={},
        body=base64.b64encode(json.dumps(event).encode()).decode(),
    )
    for _ in range(2):
        await daemon.publish(message.to_json_bytes(), "webhook.stripe", exchange="integration.webhooks")
    await daemon.probed(
        lambda m: m.routing_key == "stripe.customers.upserted" and body_of(m)["external_id"] == "cus_hook"
    )
    await eventually(
        lambda: (
            daemon.consumers[1].idle.is_set()
            and daemon.metrics.messages_consumed.labels(
                queue="integration.webhook-events", outcome="succeeded"
            )._value.get()
            >= 2
        ),
        what="both consumed",
    )
    count = await daemon.pool.fetchval("SELECT count(*) FROM webhook_events WHERE event_id = $1", event["id"])
    events = await daemon.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key = 'stripe.customers.upserted'"
        " AND convert_from(body, 'UTF8')::jsonb ->> 'external_id' = 'cus_hook'"
    )
    assert (1, 1) == (count, events)


async def test_a_webhook_whose_fetch_fails_is_retried_later_then_dead_lettered(
    daemon: Harness, venue_id: str
) -> None:
    """A thin webhook whose object cannot be fetched is republished with a backoff (the
    delivery acked meanwhile) and, after RETRY_MAX_ATTEMPTS, dead-lettered with its reason."""
    await daemon.credential(venue_id)
    daemon.provider.objects["cus_thin"] = {"id": "cus_thin", "email": "thin@example.com", "updated": 7}

    def thin_event() -> bytes:
        event = {"id": f"evt_{uuid.uuid4().hex}", "created": 1_800_000_000, "thin": True,
                 "data": {"object": {"id": "cus_thin"}}}
        return VerifiedWebhook(
            provider="stripe", venue_id=venue_id, received_at=utcnow(), headers={},
            body=base64.b64encode(json.dumps(event).encode()).decode(),
        ).to_json_bytes()

    daemon.provider.transient_failures = 1
    await daemon.publish(thin_event(), "webhook.stripe", exchange="integration.webhooks")
    await daemon.probed(
        lambda m: m.routing_key == "stripe.customers.upserted" and body_of(m)["external_id"] == "cus_thin"
    )
    retried = await daemon.pool.fetch(
        "SELECT headers FROM outbox WHERE routing_key = 'webhook.stripe' AND headers ? 'x-retry-attempt'"
    )
    assert [1] == [row["headers"]["x-retry-attempt"] for row in retried]

    daemon.provider.transient_failures = 100
    await daemon.publish(thin_event(), "webhook.stripe", exchange="integration.webhooks")
    dead = await daemon.probed(lambda m: m.exchange == "integration.dead", timeout=30)
    reason = str(dead.headers["x-death-reason"])
    assert reason.startswith(f"gave up after {daemon.settings.retry_max_attempts} attempts")
    assert "network" == dead.headers["x-error-category"]


async def test_a_published_mark_is_written_once_when_a_flush_runs_during_a_publish(
    daemon: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Marks of inline publishes are flushed in bulk while other publishes are in flight: a
    flush that lands during a publish must not bring its already-written marks back (they
    were re-written on every later flush, a list that only grew)."""
    from consumers.publishers import OutboxRelay
    from service.database import outbox as outbox_db

    relay = OutboxRelay(daemon.pool, daemon.publisher)  # its own, not the running loop's
    messages = [
        outbox_db.OutboxMessage("integration.events", "test.mark", b"{}", str(uuid.uuid4())) for _ in range(2)
    ]
    async with daemon.pool.acquire() as conn, conn.transaction():
        first, second = await outbox_db.enqueue(conn, messages)
    await relay.publish_stored([first])
    held = hold_job_results(daemon, monkeypatch, exchange="integration.events")
    publishing = asyncio.ensure_future(relay.publish_stored([second]))
    await asyncio.wait_for(held.entered.wait(), 5)
    await relay.flush_marks()  # writes the first mark while the second publish waits
    marked = await daemon.pool.fetchval("SELECT published_at FROM outbox WHERE id = $1", first.id)
    held.release.set()
    await asyncio.wait_for(publishing, 5)
    await relay.flush_marks()
    rows = await daemon.pool.fetch(
        "SELECT id, published_at FROM outbox WHERE id = ANY($1::bigint[])", [first.id, second.id]
    )
    published = {row["id"]: row["published_at"] for row in rows}
    assert marked is not None and marked == published[first.id]  # not written again
    assert published[second.id] is not None


async def test_a_pull_that_finds_nothing_new_is_stored_finished_with_its_cursor_once(
    daemon: Harness, venue_id: str
) -> None:
    """An incremental pull with nothing changed since its cursor (stored in one statement,
    without a start) ends succeeded with the cursor kept and one job result; sent again it
    is a duplicate."""
    await daemon.credential(venue_id)
    daemon.provider.objects["obj-1"] = {"id": "obj-1", "email": "one@example.com", "updated": 5}
    full = pull_request(venue_id, "full")
    await daemon.request(full)
    await eventually(lambda: daemon.finished(full.job_id))
    nothing = pull_request(venue_id)
    await daemon.request(nothing)
    result = await daemon.probed(
        lambda m: m.routing_key == "job.succeeded" and body_of(m).get("job_id") == nothing.job_id
    )
    assert {"processed": 0, "created": 0, "updated": 0, "skipped": 0, "failed": 0} == body_of(result)["counts"]
    row = await daemon.job(nothing.job_id)
    assert ("succeeded", 1) == (row["status"], row["attempts"])
    assert row["started_at"] <= row["finished_at"]
    assert {"since": 5} == await daemon.pool.fetchval(
        "SELECT cursor FROM pull_cursors WHERE venue_id = $1", venue_id
    )
    await daemon.request(nothing)
    consumed = daemon.metrics.messages_consumed.labels(queue="integration.sync-requests", outcome="duplicate")
    await eventually(lambda: consumed._value.get() == 1, what="the duplicate acknowledged")
    assert 1 == await daemon.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key LIKE 'job.%' AND message_id LIKE $1",
        f"result-{nothing.job_id}-%",
    )


async def test_a_failed_pull_sent_again_that_finds_nothing_starts_clean(daemon: Harness, venue_id: str) -> None:
    """A job_id with a row already (here a failed run with a failed record) is not created
    in one go: it starts as usual, attempts from 1, its failed record outcomes forgotten."""
    await daemon.credential(venue_id)
    pull = pull_request(venue_id, "full")
    await daemon.pool.execute(
        "INSERT INTO sync_jobs (job_id, venue_id, provider, entity, direction, mode, status, attempts, counts)"
        " VALUES ($1, $2, 'stripe', 'customers', 'pull', 'full', 'failed', 3, $3)",
        pull.job_id, venue_id, {"processed": 1, "created": 0, "updated": 0, "skipped": 0, "failed": 1},
    )  # fmt: skip
    await daemon.pool.execute(
        "INSERT INTO sync_record_log (job_id, record_id, operation, outcome) VALUES ($1, 'obj-9', 'pull', 'failed')",
        pull.job_id,
    )
    await daemon.request(pull)

    async def succeeded() -> Any:
        row = await daemon.job(pull.job_id)
        return row if row is not None and row["status"] == "succeeded" else None

    row = await eventually(succeeded)
    assert (0, 1) == (row["counts"]["processed"], row["attempts"])
    assert 0 == await daemon.pool.fetchval("SELECT count(*) FROM sync_record_log WHERE job_id = $1", pull.job_id)


async def test_a_paused_consumer_whose_reattach_fails_tries_again(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database fails one outcome (the consumer pauses and hands the delivery back); the
    probe then passes but the broker refuses the first consume again: the consumer keeps
    trying instead of staying detached, and the handed-back request runs."""
    import aio_pika

    await daemon.credential(venue_id)
    outages = fail_job_creates(monkeypatch, OSError("database away"))
    consume = aio_pika.RobustQueue.consume
    refusals = [aio_pika.exceptions.ChannelInvalidStateError("channel closed")]

    async def refusing_once(self: Any, *args: Any, **kwargs: Any) -> Any:
        if refusals:
            raise refusals.pop()
        return await consume(self, *args, **kwargs)

    monkeypatch.setattr(aio_pika.RobustQueue, "consume", refusing_once)
    await daemon.request(pull_request(venue_id, "full"))
    await eventually(lambda: not outages and not refusals, what="the outage, then the refused consume")
    later = pull_request(venue_id, "full")  # taken only by a consumer attached again
    await daemon.request(later)
    row = await eventually(lambda: daemon.finished(later.job_id), timeout=15, what="a job after the pause")
    assert "succeeded" == row["status"]


async def test_the_queue_depth_gauge_follows_the_queue(daemon: Harness, venue_id: str) -> None:
    """integration_queue_depth_messages asks the broker each time, not the count the queue
    had when the consumer started."""
    consumer = daemon.consumers[0]
    await consumer.stop_consuming()  # nothing takes them: they wait in the queue
    for _ in range(3):
        await daemon.request(pull_request(venue_id))
    stop = asyncio.Event()
    polling = asyncio.ensure_future(consumer.poll_depth(stop, every_s=0.05))
    depth = daemon.metrics.queue_depth.labels(queue=consumer.queue_name)
    try:
        await eventually(lambda: depth._value.get() == 3, what="a depth of 3")
    finally:
        stop.set()
        await polling


@pytest.mark.parametrize("failure", ["deadlock", "command timeout", "admin shutdown"])
async def test_a_passing_database_failure_hands_the_request_back_instead_of_dead_lettering_it(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch, failure: str
) -> None:
    """A deadlock, a statement timeout or a restarting server fails the database, not the
    request: the delivery is handed back and runs once the consumer resumes; nothing is
    dead-lettered and the job ends succeeded."""
    import asyncpg


    errors = {
        "deadlock": asyncpg.DeadlockDetectedError("deadlock detected"),
        "command timeout": TimeoutError(),
        "admin shutdown": asyncpg.AdminShutdownError("terminating connection due to administrator command"),
    }
    await daemon.credential(venue_id)
    failures = fail_job_creates(monkeypatch, errors[failure])
    request = pull_request(venue_id, "full")
    await daemon.request(request)
    row = await eventually(lambda: daemon.finished(request.job_id), timeout=15, what="the job after the failure")
    assert ("succeeded", []) == (row["status"], failures)
    assert 0 == await daemon.pool.fetchval("SELECT count(*) FROM dead_letters WHERE job_id = $1", request.job_id)


async def test_a_job_finished_by_another_delivery_meanwhile_is_not_overwritten_or_announced_again(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two deliveries of one job_id run at once (a publisher's retry, say); the other one
    succeeds while this one pushes. This one's outcome neither overwrites that success nor
    announces a second result: it ends as a duplicate."""
    await daemon.credential(venue_id)
    request = push(venue_id, [customer(1)])
    theirs = {"job_id": request.job_id, "status": "succeeded", "by": "the other delivery"}
    push_batch = daemon.provider.push_batch

    async def finished_meanwhile(*args: Any, **kwargs: Any) -> Any:
        await daemon.pool.execute(
            "UPDATE sync_jobs SET status = 'succeeded', result = $2, finished_at = now() WHERE job_id = $1",
            request.job_id, theirs,
        )  # fmt: skip
        return await push_batch(*args, **kwargs)

    monkeypatch.setattr(daemon.provider, "push_batch", finished_meanwhile)
    await daemon.request(request)
    consumed = daemon.metrics.messages_consumed.labels(queue="integration.sync-requests", outcome="duplicate")
    await eventually(lambda: consumed._value.get() == 1, what="this delivery settled as a duplicate")
    row = await daemon.job(request.job_id)
    assert ("succeeded", theirs) == (row["status"], row["result"])
    assert 0 == await daemon.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key LIKE 'job.%' AND message_id LIKE $1",
        f"result-{request.job_id}-%",
    )


async def test_a_dead_letter_delivered_again_fails_its_job_once(daemon: Harness, venue_id: str) -> None:
    """The same message dead-lettered twice (redelivered before its ack landed) is stored
    once and announces one failed job result, not two."""
    request = pull_request(venue_id)  # no credential: an unknown venue for stripe
    message_id = str(uuid.uuid4())
    dead = daemon.metrics.messages_consumed.labels(queue="integration.sync-requests", outcome="dead_lettered")
    before = dead._value.get()
    for _ in range(2):
        await daemon.request(request, message_id=message_id)
    await eventually(lambda: dead._value.get() == before + 2, what="both deliveries dead-lettered")
    assert 1 == await daemon.pool.fetchval("SELECT count(*) FROM dead_letters WHERE job_id = $1", request.job_id)
    assert 1 == await daemon.pool.fetchval(
        "SELECT count(*) FROM outbox WHERE routing_key = 'job.failed' AND message_id LIKE $1",
        f"result-{request.job_id}-%",
    )


async def test_a_consumer_paused_again_soon_after_resuming_keeps_its_backoff(
    daemon: Harness, venue_id: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A database that answers the probe but fails the outcome again (a read-only failover,
    say) does not make the consumer cycle every half second: the second pause goes on from
    the first one's backoff (its resume counts the earlier probe too)."""
    from structlog.testing import capture_logs

    await daemon.credential(venue_id)
    with capture_logs() as logs:

        def resumes() -> list[int]:
            return [e["probes"] for e in logs if e["event"] == "consumer_resumed"]

        # One pause, then a second one on a later request once the first has resumed (a
        # redelivery can reach the consumer before its first pause detaches it, so the
        # same request cannot be relied on to fail twice in two pauses).
        for pauses in (1, 2):
            fail_job_creates(monkeypatch, OSError("read-only"))
            request = pull_request(venue_id, "full")
            await daemon.request(request)
            await eventually(lambda r=request: daemon.finished(r.job_id), timeout=15, what=f"job {pauses} stored")
            await eventually(lambda n=pauses: len(resumes()) == n, what=f"resume {pauses}")
    assert [1, 2] == resumes()


async def test_deliveries_come_straight_from_aiormq_also_after_a_channel_is_reopened(
    daemon: Harness, venue_id: str
) -> None:
    """The consumer takes deliveries from aiormq without aio-pika's IncomingMessage. A
    channel the broker closed is reopened by the robust channel with aio-pika's consumer
    restored: its first delivery goes through aio-pika and switches the rest back."""
    import aiormq

    await daemon.credential(venue_id)
    consumer = daemon.consumers[0]
    channel = consumer._channel
    underlay = await channel.get_underlay_channel()
    assert underlay.consumers[consumer._tag] == consumer._on_delivered  # type: ignore[attr-defined]
    first = push(venue_id, [customer(1)])
    await daemon.request(first)
    await eventually(lambda: daemon.finished(first.job_id), what="job finished")

    with pytest.raises(aiormq.exceptions.ChannelNotFoundEntity):  # the broker closes the channel
        await underlay.queue_declare(f"absent-{uuid.uuid4().hex}", passive=True)

    async def reopened() -> Any:
        fresh = await channel.get_underlay_channel()
        return fresh if fresh is not underlay and consumer._tag in fresh.consumers else None  # type: ignore[attr-defined]

    fresh = await eventually(reopened, timeout=20, what="the channel reopened with the consumer restored")
    assert fresh.consumers[consumer._tag] != consumer._on_delivered  # aio-pika's wrapper again
    second, third = push(venue_id, [customer(2)]), push(venue_id, [customer(3)])
    await daemon.request(second)
    await eventually(lambda: daemon.finished(second.job_id), timeout=20, what="second job finished")
    assert fresh.consumers[consumer._tag] == consumer._on_delivered  # switched by that delivery
    await daemon.request(third)
    row = await eventually(lambda: daemon.finished(third.job_id), timeout=20, what="third job finished")
    assert "succeeded" == row["status"]
