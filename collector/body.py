"""Reading request bodies within limits: size as sent, and size after decompression.

A gzip bomb costs at most `max_decompressed_bytes` of memory and the CPU to inflate that
much: inflation stops at the limit.
"""

from __future__ import annotations

import zlib

from fastapi import Request

from kernel.settings import CollectorSettings


class BodyError(Exception):
    """A body the door cannot read; `status` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


async def read_raw(request: Request, limit: int) -> bytes:
    """The body as sent, or BodyError 413 past `limit` bytes (checked while streaming)."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise BodyError(413, f"body of {declared} bytes is over the limit of {limit} bytes")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyError(413, f"body is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_body(request: Request, settings: CollectorSettings) -> bytes:
    """The request body, decompressed (gzip or deflate), or BodyError 413/415/400."""
    body = await read_raw(request, settings.max_body_bytes)
    encoding = request.headers.get("content-encoding", "identity").strip().lower()
    return decompress(body, encoding, settings.max_decompressed_bytes)


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate `body` per Content-Encoding, refusing more than `limit` bytes of output."""
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif encoding == "deflate":
        wbits = zlib.MAX_WBITS
    else:
        raise BodyError(415, f"Content-Encoding {encoding!r} is not supported (use gzip or identity)")
    inflater = zlib.decompressobj(wbits)
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as exc:
        raise BodyError(400, f"body is not valid {encoding}: {exc}") from exc
    if len(out) > limit or inflater.unconsumed_tail:
        raise BodyError(413, f"body inflates past the limit of {limit} bytes")
    if not inflater.eof:
        raise BodyError(400, f"body is truncated {encoding}")
    return out
