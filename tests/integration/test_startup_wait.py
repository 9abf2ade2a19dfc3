"""The daemon waits, with backoff, for services that are still starting."""

from __future__ import annotations

import asyncio
import socket
from typing import Any

import pytest

from service.errors import NetworkError
from service.lifecycle import wait_for_services


async def test_waits_for_a_database_that_comes_up(settings_factory: Any, services: Any) -> None:
    """PostgreSQL reachable only after a while: migrate succeeds once it answers."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = services.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{port}")
    calls = []

    async def forward(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        upstream_r, upstream_w = await asyncio.open_connection("127.0.0.1", 5432)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, upstream_w), pipe(upstream_r, writer), return_exceptions=True)

    async def open_later() -> asyncio.AbstractServer:
        await asyncio.sleep(1.5)  # the "database" comes up after the daemon started
        calls.append("up")
        return await asyncio.start_server(forward, "127.0.0.1", port)

    opener = asyncio.create_task(open_later())
    await wait_for_services(settings_factory(database_url=url), timeout_s=30)
    server = await opener
    server.close()
    await server.wait_closed()
    assert ["up"] == calls


async def test_gives_up_after_the_timeout_with_a_network_error(settings_factory: Any) -> None:
    """Nothing listening for the whole wait: one NetworkError naming the database."""
    settings = settings_factory(database_url="postgresql://postgres@127.0.0.1:9/nowhere")
    with pytest.raises(NetworkError, match="127.0.0.1:9"):
        await wait_for_services(settings, timeout_s=1.5)
