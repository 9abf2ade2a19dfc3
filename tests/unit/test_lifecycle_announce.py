"""A running job's mid-job events: published now while the broker is up, else left to the relay."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from service.lifecycle import _announce_if_connected


async def test_mid_job_events_wait_for_the_relay_while_the_broker_is_away() -> None:
    published: list[Any] = []

    async def publish_stored(stored: list[Any]) -> None:
        published.append(stored)

    connected = asyncio.Event()
    app: Any = SimpleNamespace(connection=SimpleNamespace(connected=connected),
                               relay=SimpleNamespace(publish_stored=publish_stored))
    await _announce_if_connected(app, ["page one"])  # away: no confirm to wait out per page
    connected.set()
    await _announce_if_connected(app, ["page two"])
    assert [["page two"]] == published
