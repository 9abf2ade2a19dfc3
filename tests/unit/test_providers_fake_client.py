"""The in-memory FakeProvider the engine's tests use behaves like a provider."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest

from providers.auth import StaticAuth
from providers.base import PushItem
from providers.fake import FakeProvider
from service.errors import DataError, NetworkError, ValidationError
from service.messages import VerifiedWebhook

AUTH = StaticAuth(provider="stripe", secret="k")


async def test_writes_are_idempotent_per_key() -> None:
    """The same idempotency key twice makes one object."""
    fake = FakeProvider()
    item = PushItem("r1", {"email": "a@example.com"}, "key-1")
    first = await fake.push_batch(AUTH, "customers", [item], options={})
    again = await fake.push_batch(AUTH, "customers", [item], options={})
    assert first[0].external_id == again[0].external_id
    assert 1 == len(fake.objects["customers"])


async def test_record_failure_fails_alone_and_transient_errors_raise_once() -> None:
    """A configured record fails alone; a transient error is raised by the next call only."""
    fake = FakeProvider(record_failures={"bad": ValidationError("email is invalid")})
    fake.fail_next()
    with pytest.raises(NetworkError):
        await fake.push_batch(AUTH, "customers", [], options={})
    results = await fake.push_batch(
        AUTH, "customers", [PushItem("bad", {}, "k1"), PushItem("ok", {}, "k2")], options={}
    )
    assert ["failed", "created"] == [r.outcome for r in results]


async def test_pages_and_incremental_resume() -> None:
    """Pulls page by page_size and resume from the last change."""
    fake = FakeProvider(page_size=2)
    for i in range(3):
        fake.put("customers", {"id": f"c{i}"})
    first = await fake.pull_page(AUTH, "customers", cursor=None, resume=None, options={})
    second = await fake.pull_page(AUTH, "customers", cursor=first.next_cursor, resume=None, options={})
    fake.put("customers", {"id": "c1", "name": "changed"})
    later = await fake.pull_page(AUTH, "customers", cursor=None, resume=second.resume_cursor, options={})
    assert (["c0", "c1"], ["c2"], ["c1"]) == (
        [r.external_id for r in first.records],
        [r.external_id for r in second.records],
        [r.external_id for r in later.records],
    )


def test_webhook_parsing() -> None:
    """A fake event parses to one change; garbage is a DataError."""
    fake = FakeProvider()
    body = json.dumps({"id": "evt1", "entity": "customers", "object": {"id": "c1"}}).encode()
    hook = VerifiedWebhook(
        provider="stripe",
        venue_id="v",
        received_at=datetime.now(UTC),
        headers={},
        body=base64.b64encode(body).decode(),
    )
    parsed = fake.parse_webhook(hook, body)
    assert [("customers", "c1", "upserted")] == [(c.entity, c.external_id, c.op) for c in parsed.changes]
    with pytest.raises(DataError):
        fake.parse_webhook(hook, b"<html>")
