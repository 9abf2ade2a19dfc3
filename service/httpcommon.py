"""/healthz, /readyz and /metrics for any aiohttp app of the service (CONTRACT section 6).

- ``/healthz``: 200 while the event loop runs (a heartbeat task proves it ticks), else 503.
- ``/readyz``: runs every readiness check concurrently, each bounded by a timeout; 200 when
  all pass, else 503; the body is ``{"status": ..., "checks": {name: "ok" | "<why>"}}``.
- ``/metrics``: the Prometheus text of the app's ``Metrics`` registry.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aiohttp import web

from service.logs import redact_text
from service.metrics import Metrics

ReadinessCheck = Callable[[], Awaitable[object]]
CHECK_TIMEOUT_S = 2.0
HEARTBEAT_S = 1.0
HEARTBEAT_STALE_S = 10.0
# The classic text format generate_latest() writes; every Prometheus version reads it.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _Heartbeat:
    def __init__(self) -> None:
        self.last = time.monotonic()
        self.task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        while True:
            self.last = time.monotonic()
            await asyncio.sleep(HEARTBEAT_S)

    def alive(self) -> bool:
        running = self.task is not None and not self.task.done()
        return running and time.monotonic() - self.last < HEARTBEAT_STALE_S


CHECKS_KEY = web.AppKey("readiness_checks", dict[str, ReadinessCheck])
METRICS_KEY = web.AppKey("metrics", Metrics)
HEARTBEAT_KEY = web.AppKey("heartbeat", _Heartbeat)


async def _heartbeat_ctx(app: web.Application) -> AsyncIterator[None]:
    beat = app[HEARTBEAT_KEY]
    beat.task = asyncio.create_task(beat.run(), name="healthz-heartbeat")
    yield
    beat.task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await beat.task


def add_health_routes(
    app: web.Application, *, metrics: Metrics, checks: Mapping[str, ReadinessCheck],
) -> None:
    """Serve /healthz, /readyz and /metrics from ``app``."""
    app[METRICS_KEY] = metrics
    app[CHECKS_KEY] = dict(checks)
    app[HEARTBEAT_KEY] = _Heartbeat()
    app.cleanup_ctx.append(_heartbeat_ctx)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    app.router.add_get("/metrics", metrics_text)


async def healthz(request: web.Request) -> web.Response:
    alive = request.app[HEARTBEAT_KEY].alive()
    return web.json_response({"status": "ok" if alive else "stalled"}, status=200 if alive else 503)


async def _run_check(check: ReadinessCheck) -> str:
    try:
        async with asyncio.timeout(CHECK_TIMEOUT_S):
            await check()
    except TimeoutError:
        return f"no answer within {CHECK_TIMEOUT_S:g} s"
    except Exception as exc:  # any failure means not ready; say which, never a secret
        return redact_text(f"{exc.__class__.__name__}: {exc}".splitlines()[0])[:200]
    return "ok"


async def readiness(checks: Mapping[str, ReadinessCheck]) -> tuple[bool, dict[str, str]]:
    """(all ok, {name: "ok" or why not}) of every check, run concurrently."""
    names = list(checks)
    results = await asyncio.gather(*(_run_check(checks[n]) for n in names))
    outcome = dict(zip(names, results, strict=True))
    return all(r == "ok" for r in results), outcome


async def readyz(request: web.Request) -> web.Response:
    checks: dict[str, ReadinessCheck] = request.app[CHECKS_KEY]
    ready, outcome = await readiness(checks)
    body = {"status": "ready" if ready else "unavailable", "checks": outcome}
    return web.json_response(body, status=200 if ready else 503)


async def metrics_text(request: web.Request) -> web.Response:
    body = request.app[METRICS_KEY].render()
    return web.Response(body=body, headers={"Content-Type": METRICS_CONTENT_TYPE})
