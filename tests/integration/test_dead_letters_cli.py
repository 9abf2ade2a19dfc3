"""`dead-letters list/replay` and `jobs` against a running in-process daemon."""

from __future__ import annotations

import asyncio
import json
import uuid
from typing import Any

import pytest

from service.messages import SyncRequest
from tests.daemon_harness import Harness, running_daemon
from tests.helpers import eventually

CLI = ".venv/bin/integration-service"


async def cli(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        CLI, *args, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), timeout=60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def daemon(settings: Any, request: Any) -> Any:
    async with running_daemon(settings, name=request.node.name) as harness:
        yield harness


async def test_unknown_venue_is_dead_lettered_then_replayed_after_the_fix(
    daemon: Harness, service_env: dict[str, str], venue_id: str
) -> None:
    """A request for a venue without credentials dead-letters; after `credentials set`, replay runs it."""
    request = SyncRequest(
        job_id=str(uuid.uuid4()),
        venue_id=venue_id,
        provider="stripe",
        entity="customers",
        direction="push",
        records=[{"id": "c1", "email": "c1@example.com"}],
    )
    await daemon.request(request)
    failed = await eventually(lambda: daemon.finished(request.job_id))
    assert "failed" == failed["status"]
    code, out, _ = await cli(service_env, "dead-letters", "list", "--json")
    rows = [json.loads(line) for line in out.splitlines()]
    mine = [r for r in rows if r["job_id"] == request.job_id]
    assert 0 == code and 1 == len(mine)
    assert {
        "id",
        "message_id",
        "job_id",
        "routing_key",
        "reason",
        "category",
        "dead_lettered_at",
        "replayed_at",
    } <= set(mine[0])
    assert ("validation", None) == (mine[0]["category"], mine[0]["replayed_at"])
    assert venue_id in mine[0]["reason"]
    await daemon.credential(venue_id)
    code, out, err = await cli(service_env, "dead-letters", "replay", "--id", str(mine[0]["id"]))
    assert 0 == code, err
    row = await eventually(
        lambda: _status(daemon, request.job_id, "succeeded"), what="replayed job succeeded"
    )
    assert 1 == row["counts"]["created"]
    code, out, _ = await cli(service_env, "dead-letters", "list", "--json")
    replayed = [json.loads(line) for line in out.splitlines() if json.loads(line)["id"] == mine[0]["id"]]
    assert replayed[0]["replayed_at"] is not None
    code, out, _ = await cli(service_env, "jobs", "--venue", venue_id, "--json")
    jobs = [json.loads(line) for line in out.splitlines()]
    assert [(request.job_id, "succeeded")] == [(j["job_id"], j["status"]) for j in jobs]
    assert {
        "job_id",
        "venue_id",
        "provider",
        "entity",
        "direction",
        "status",
        "counts",
        "started_at",
        "finished_at",
    } <= set(jobs[0])


async def _status(daemon: Harness, job_id: str, status: str) -> Any:
    row = await daemon.job(job_id)
    return row if row is not None and row["status"] == status else None


async def test_bad_replay_arguments_exit_2(service_env: dict[str, str]) -> None:
    """An unknown dead-letter id, or neither --id nor --all, is bad input: exit 2, one line."""
    for args in (("--id", "987654321"), ()):
        code, _, err = await cli(service_env, "dead-letters", "replay", *args)
        assert 2 == code and 1 == len(err.strip().splitlines()), err
        assert "Traceback" not in err


async def test_list_shows_the_newest_dead_letters_oldest_of_them_first(pool: Any, service_env: dict[str, str]) -> None:
    """Past --limit rows the list showed the oldest ones, so no new dead letter ever appeared."""
    from service.database import outbox as outbox_db

    tag = uuid.uuid4().hex
    for n in range(3):
        async with pool.acquire() as conn:
            await outbox_db.store_dead_letter(
                conn, message_id=f"{tag}-{n}", job_id=None, exchange="integration.commands",
                routing_key="sync.stripe.customers", body=b"{}", headers={}, properties={},
                reason="test", category="validation", severity="low",
            )
    code, out, _ = await cli(service_env, "dead-letters", "list", "--json", "--limit", "2")
    assert 0 == code
    assert [f"{tag}-1", f"{tag}-2"] == [json.loads(line)["message_id"] for line in out.splitlines()]


async def test_a_replay_that_fails_part_way_keeps_the_marks_of_what_went_out(
    pool: Any, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All marks were in one transaction with the publishes: a failure at the second row
    rolled back the first row's mark although it was published, and a second run published
    it again."""
    from consumers.publishers import AmqpPublisher
    from service.cli.deadletters import _replay
    from service.database import outbox as outbox_db
    from service.errors import NetworkError

    tag = uuid.uuid4().hex
    ids = []
    for n in range(3):  # to the default exchange: always there, confirmed even if unroutable
        async with pool.acquire() as conn:
            ids.append(await outbox_db.store_dead_letter(
                conn, message_id=f"{tag}-{n}", job_id=None, exchange="", routing_key=f"nowhere-{tag}",
                body=b"{}", headers={}, properties={}, reason="test", category="validation", severity="low",
            ))
    publish, calls = AmqpPublisher.publish, 0

    async def second_fails(self: Any, message: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise NetworkError("no publisher confirm within 5s")
        await publish(self, message, **kwargs)

    monkeypatch.setattr(AmqpPublisher, "publish", second_fails)
    with pytest.raises(NetworkError):
        await _replay(settings, ids)
    marked = await pool.fetch("SELECT id, replayed_at FROM dead_letters WHERE id = ANY($1::bigint[]) ORDER BY id", ids)
    assert [True, False, False] == [row["replayed_at"] is not None for row in marked]
    assert 2 == await _replay(settings, ids[1:])  # the rest go on a second run
