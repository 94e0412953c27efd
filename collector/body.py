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


async def read_body(request: Request, settings: CollectorSettings) -> bytes:
    """The request body, decompressed (gzip or deflate), or BodyError 413/415/400."""
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > settings.max_body_bytes:
        raise BodyError(413, f"body of {declared} bytes is over the limit of {settings.max_body_bytes}")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > settings.max_body_bytes:
            raise BodyError(413, f"body is over the limit of {settings.max_body_bytes} bytes")
        chunks.append(chunk)
    body = b"".join(chunks)
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
