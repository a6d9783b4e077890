"""Domain errors carry their HTTP status; one handler renders them."""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from http import HTTPStatus
from typing import Any

from fastapi import Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.utils import is_body_allowed_for_status_code
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException

log = logging.getLogger(__name__)


class NetkilnError(Exception):
    status_code = 400
    code = "bad_request"
    headers: dict[str, str] | None = None

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


class Unauthorized(NetkilnError):
    status_code = 401
    code = "unauthorized"
    headers = {"WWW-Authenticate": "Bearer"}  # noqa: RUF012 - read-only class constant


class LimitExceeded(NetkilnError):
    """A tenant limit: 429 for too many jobs, 413 for too large an upload, 422 for too
    large a model or too much training (then pointing at the field, like other 422s)."""

    code = "limit_exceeded"

    def __init__(
        self,
        limit: str,
        allowed: int,
        requested: int,
        message: str,
        *,
        status_code: int,
        loc: list[str | int] | None = None,
    ) -> None:
        super().__init__(f"{message} (limit {limit} is {allowed:,}; this asks for {requested:,})")
        self.status_code = status_code
        self.limit, self.allowed, self.requested, self.loc = limit, allowed, requested, loc

    def body(self) -> dict[str, Any]:
        context = {"limit": self.limit, "allowed": self.allowed, "requested": self.requested}
        if self.status_code == 422:
            loc = ["body", *(self.loc or [])]
            return {
                "detail": [{"type": self.code, "loc": loc, "msg": self.message, "ctx": context}]
            }
        return {"detail": self.message, "code": self.code, **context}


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


class ErrorOut(BaseModel):
    """The body of every error answer but a 422 (whose ``detail`` lists the fields)."""

    detail: str = Field(description="What went wrong, readably.")
    code: str = Field(description="Stable: not_found, conflict, limit_exceeded, …")
    limit: str | None = Field(default=None, description="Limit errors: the limit's name.")
    allowed: int | None = Field(default=None, description="Limit errors: what it allows.")
    requested: int | None = Field(default=None, description="Limit errors: what was asked.")


Responses = dict[int | str, dict[str, Any]]


def error_responses(descriptions: dict[int, str]) -> Responses:
    """OpenAPI ``responses=`` for error answers, with their body (:class:`ErrorOut`)."""
    return {
        status: {"model": ErrorOut, "description": description}
        for status, description in descriptions.items()
    }


#: Every /v1 router: a missing, unknown or revoked API key.
UNAUTHORIZED = error_responses({401: "No API key, or an unknown or revoked one."})


async def netkiln_error_handler(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, NetkilnError)
    return JSONResponse(status_code=exc.status_code, content=exc.body(), headers=exc.headers)


async def storage_unavailable_handler(_: Request, exc: Exception) -> JSONResponse:
    """The artifact store stayed unreachable through its retries (an upload, a download, a
    delete): a 503 the client may retry, not a 500."""
    log.warning("artifact store unavailable: %s", exc)
    content = {
        "detail": f"the artifact store is unavailable, try again shortly: {exc}",
        "code": "storage_unavailable",
    }
    return JSONResponse(status_code=503, content=content, headers={"Retry-After": "30"})


async def http_error_handler(_: Request, exc: Exception) -> Response:
    """Starlette's and FastAPI's own errors (a form that cannot be parsed, an unknown path,
    a wrong method) in the shape of ours: the detail and a stable code."""
    assert isinstance(exc, HTTPException)
    if not is_body_allowed_for_status_code(exc.status_code):
        return Response(status_code=exc.status_code, headers=exc.headers)
    try:
        code = HTTPStatus(exc.status_code).phrase.lower().replace(" ", "_").replace("-", "_")
    except ValueError:
        code = "error"
    content = {"detail": jsonable_encoder(exc.detail), "code": code}
    return JSONResponse(status_code=exc.status_code, content=content, headers=exc.headers)


#: Set on an exception :func:`unexpected_error_handler` logged, for :class:`_AlreadyLogged`.
_LOGGED = "_netkiln_logged"


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Anything else: logged here with its traceback and the request it broke, answered as
    a 500 in the shape of our other errors (Starlette's ServerErrorMiddleware calls this)."""
    log.error("unhandled error in %s %s", request.method, request.url.path, exc_info=exc)
    # The middleware re-raises it after this answer, and uvicorn would log it again.
    setattr(exc, _LOGGED, True)
    content = {
        "detail": "internal error: the server could not answer this request; "
        "its log has the details",
        "code": "internal",
    }
    return JSONResponse(status_code=500, content=content)


class _AlreadyLogged(logging.Filter):
    """Drops the server's copy of a traceback :func:`unexpected_error_handler` logged
    (uvicorn's "Exception in ASGI application")."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.exc_info and getattr(record.exc_info[1], _LOGGED, False))


logging.getLogger("uvicorn.error").addFilter(_AlreadyLogged())


async def request_validation_handler(_: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own 422 body, except that NaN and infinities echoed from the request
    (Python's JSON parser accepts them) are spelled as strings instead of failing the
    response with a 500."""
    assert isinstance(exc, RequestValidationError)
    errors = [
        {**error, "loc": _without_branches(_without_kind_tag(error["loc"]))}
        for error in _meant_branches(exc.errors())
    ]
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


#: The names pydantic gives the branches of a union in an error's path, e.g.
#: ``constrained-float`` or ``tagged-union[PowerSchedule,…]``: none is a spec field.
_BRANCH = re.compile(r"^(?:[a-z]+-[a-z]+(?:\[.*\])?|(?:tagged-)?union\[.*\]|[a-z]+\[.*\])$")
#: Error types that only say "this input is not of that branch's type".
_WRONG_BRANCH = frozenset(
    {
        "float_type",
        "int_type",
        "bool_type",
        "string_type",
        "list_type",
        "dict_type",
        "model_type",
        "model_attributes_type",
        "float_parsing",
        "int_parsing",
    }
)


def _meant_branches(errors: Sequence[Any]) -> list[Any]:
    """For a field whose value may take several forms (a number or a schedule object),
    pydantic reports every form's complaint; keep those of the form the client sent, by
    dropping "not of this type" errors where another form of the same field has others."""
    by_field: dict[tuple[Any, ...], list[Any]] = {}
    for error in errors:
        by_field.setdefault(_field_of(error["loc"]), []).append(error)
    kept = []
    for group in by_field.values():
        meant = [error for error in group if error["type"] not in _WRONG_BRANCH]
        kept += meant if meant and len(meant) < len(group) else group
    return kept


def _field_of(loc: Sequence[Any]) -> tuple[Any, ...]:
    """The path up to the first union branch (the field that holds the union)."""
    for index, part in enumerate(loc):
        if isinstance(part, str) and _BRANCH.match(part):
            return tuple(loc[:index])
    return tuple(loc)


def _without_branches(loc: Sequence[Any]) -> tuple[Any, ...]:
    return tuple(part for part in loc if not (isinstance(part, str) and _BRANCH.match(part)))


def _finite_or_str(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)
