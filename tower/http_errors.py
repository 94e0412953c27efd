"""Error answers the whole HTTP app shares.

FastAPI's own handler of request validation errors echoes each invalid input, and fails with a
UnicodeDecodeError (a 500, and a dropped connection) when that input is a body that is not UTF-8
(any route with a JSON body, sent bytes under another content type). This handler answers the same
422 `{"detail": [...]}`, with such bytes decoded with replacement characters.

A store that cannot take a write now (closed, its disk under TOWER_STORE_MIN_FREE_MIB, out of room) is a 503 with
Retry-After saying so, not a 500: the caller may try again.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

from kernel.store import StoreUnavailable

RETRY_AFTER_SECONDS = 30


def _text(value: bytes) -> str:
    return value.decode("utf-8", "replace")


def _encodable(value: str) -> str:
    """A text as UTF-8 can hold it: a lone surrogate (a JSON body's `"\\ud800"`, half an emoji cut by a UTF-16
    client) is shown as its escape; the answer could not be encoded (a 500 and a dropped connection)."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


async def validation_error(request: Request, exc: Exception) -> JSONResponse:
    """422 with FastAPI's body shape; undecodable inputs are shown decoded with replacement characters, lone
    surrogates as their escapes."""
    errors = exc.errors() if isinstance(exc, RequestValidationError) else []
    detail = jsonable_encoder(errors, custom_encoder={bytes: _text, str: _encodable})
    return JSONResponse({"detail": detail}, status_code=status.HTTP_422_UNPROCESSABLE_CONTENT)


async def store_unavailable(request: Request, exc: Exception) -> JSONResponse:
    """503 + Retry-After with the store's reason."""
    return JSONResponse(
        {"detail": f"the store cannot take this now: {exc}"},
        status_code=status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(RETRY_AFTER_SECONDS)},
    )


def install_error_handlers(app: FastAPI) -> None:
    """Register the app-wide error handlers."""
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(StoreUnavailable, store_unavailable)
