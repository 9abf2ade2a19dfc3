"""Reading a request body with a hard size limit, enforced while reading.

A declared Content-Length over the limit is refused before a byte is read; otherwise the
body is read in bounded chunks and refused as soon as it passes the limit, so a 2 MiB
body is never held whole.
"""

from __future__ import annotations

import asyncio

from aiohttp import web

CHUNK_BYTES = 64 * 1024


class BodyTooLarge(Exception):
    """The body is over the limit (HTTP 413)."""


class BodyTimeout(Exception):
    """The body did not arrive in time."""


async def read_body(request: web.Request, *, limit_bytes: int, timeout_s: float) -> bytes:
    """The whole body, at most ``limit_bytes``; raise BodyTooLarge or BodyTimeout."""
    declared = request.content_length
    if declared is not None and declared > limit_bytes:
        raise BodyTooLarge(f"body of {declared} bytes is over the {limit_bytes}-byte limit")
    content = request.content
    if content.is_eof() and content.exception() is None:
        # Already buffered whole (the usual small webhook): no timer needed. aiohttp stops
        # reading the socket at 128 KiB buffered, so this is bounded too.
        body = content.read_nowait(-1)
        if len(body) > limit_bytes:
            raise BodyTooLarge(f"body is over the {limit_bytes}-byte limit")
        return body
    chunks: list[bytes] = []
    total = 0
    try:
        async with asyncio.timeout(timeout_s):
            while chunk := await content.read(CHUNK_BYTES):
                total += len(chunk)
                if total > limit_bytes:
                    raise BodyTooLarge(f"body is over the {limit_bytes}-byte limit")
                chunks.append(chunk)
    except TimeoutError:
        raise BodyTimeout(f"the body did not arrive within {timeout_s:g} s") from None
    return b"".join(chunks)
