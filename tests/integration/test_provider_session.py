"""The HTTP session every provider call shares keeps no cookies: one venue's call must never
carry a cookie a provider set on another venue's call."""

from __future__ import annotations

import aiohttp
from aiohttp import web
from aiohttp.test_utils import TestServer

from providers.http import provider_session


def cookie_setting_app() -> web.Application:
    async def answer(request: web.Request) -> web.Response:
        reply = web.json_response({"cookie": request.headers.get("Cookie")})
        reply.set_cookie("session", "venue-a-session")  # as a provider's edge might
        return reply

    app = web.Application()
    app.router.add_get("/v1/things", answer)
    return app


async def test_a_cookie_set_for_one_call_is_not_sent_with_the_next() -> None:
    async with TestServer(cookie_setting_app(), host="127.0.0.1") as server:
        url = str(server.make_url("/v1/things"))
        # What a plain session does for a provider's host name (its jar skips bare IPs unless unsafe):
        async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as default:
            await (await default.get(url)).json()
            assert "session=venue-a-session" == (await (await default.get(url)).json())["cookie"]
        async with provider_session() as shared:
            await (await shared.get(url)).json()
            assert None is (await (await shared.get(url)).json())["cookie"]
