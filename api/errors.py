"""Domain errors carry their HTTP status; one handler renders them."""

from __future__ import annotations

from fastapi import Request
from fastapi.responses import JSONResponse


class NetkilnError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class NotFound(NetkilnError):
    status_code = 404
    code = "not_found"


class Conflict(NetkilnError):
    status_code = 409
    code = "conflict"


async def netkiln_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NetkilnError)
    return JSONResponse(
        status_code=exc.status_code, content={"detail": exc.message, "code": exc.code}
    )
