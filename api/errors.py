"""Domain errors carry their HTTP status; one handler renders them."""

from __future__ import annotations

import math
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse


class NetkilnError(Exception):
    status_code = 400
    code = "bad_request"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> dict[str, Any]:
        return {"detail": self.message, "code": self.code}


class NotFound(NetkilnError):
    status_code = 404
    code = "not_found"


class Conflict(NetkilnError):
    status_code = 409
    code = "conflict"


class InvalidSpec(NetkilnError):
    """A spec that validates field by field but cannot be built as a whole (a layer that
    cannot take its input's shape): a 422 shaped like pydantic's, pointing at the field."""

    status_code = 422
    code = "invalid_spec"

    def __init__(self, message: str, loc: list[str | int]) -> None:
        super().__init__(message)
        self.loc = loc

    def body(self) -> dict[str, Any]:
        return {"detail": [{"type": self.code, "loc": ["body", *self.loc], "msg": self.message}]}


async def netkiln_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NetkilnError)
    return JSONResponse(status_code=exc.status_code, content=exc.body())


async def request_validation_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 body, except that NaN and infinities echoed from the request
    (Python's JSON parser accepts them) are spelled as strings instead of failing the
    response with a 500."""
    assert isinstance(exc, RequestValidationError)
    errors = [{**error, "loc": _without_kind_tag(error["loc"])} for error in exc.errors()]
    detail = jsonable_encoder(errors, custom_encoder={float: _finite_or_str})
    return JSONResponse(status_code=422, content={"detail": detail})


#: The job-spec union's tags, which pydantic puts in an error's path after "body".
JOB_KINDS = frozenset({"train", "transfer", "pretrain"})


def _without_kind_tag(loc: tuple[str | int, ...]) -> tuple[str | int, ...]:
    """``("body", "train", "fit", "epochs")`` → ``("body", "fit", "epochs")``: the field's
    path in the document the client sent."""
    if len(loc) > 1 and loc[0] == "body" and loc[1] in JOB_KINDS:
        return (loc[0], *loc[2:])
    return loc


def _finite_or_str(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
