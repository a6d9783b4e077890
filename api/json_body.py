"""JSON routes check a request body before FastAPI parses it: the content type, the size
(``NETKILN_MAX_REQUEST_BYTES``) and the nesting depth (``NETKILN_MAX_JSON_DEPTH``), so an
odd or hostile body gets a 4xx that says what is wrong, never a 500 or a stuck worker."""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool

from api.auth import authenticate_request
from api.errors import NetkilnError
from core.settings import Settings


class UnsupportedMediaType(NetkilnError):
    status_code = 415
    code = "unsupported_media_type"


class BodyTooLarge(NetkilnError):
    status_code = 413
    code = "body_too_large"


class BodyTooDeep(NetkilnError):
    status_code = 422
    code = "json_too_deep"

    def body(self) -> dict[str, Any]:
        return {"detail": [{"type": self.code, "loc": ["body"], "msg": self.message}]}


class BodyNotJson(NetkilnError):
    status_code = 422
    code = "json_invalid"

    def body(self) -> dict[str, Any]:
        return {"detail": [{"type": self.code, "loc": ["body"], "msg": self.message}]}


class JsonRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler  # no body to check (GET, POST …/cancel)

        async def checked(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            # A stranger learns nothing about what we accept, and sends no body.
            await run_in_threadpool(authenticate_request, settings, request)
            await check_json_body(request, settings)
            return await handler(request)  # reads the body cached on this request

        return checked


async def check_json_body(request: Request, settings: Settings) -> None:
    declared = request.headers.get("content-length", "")
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if media_type != "application/json" and not media_type.endswith("+json"):
        raise UnsupportedMediaType(
            f"send the body as JSON with 'Content-Type: application/json', not "
            f"{media_type or 'no content type'}"
        )
    limit = settings.max_request_bytes
    if declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(f"the body exceeds {limit:,} bytes (NETKILN_MAX_REQUEST_BYTES)")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(f"the body exceeds {limit:,} bytes (NETKILN_MAX_REQUEST_BYTES)")
    request._body = bytes(body)  # Starlette's cache: FastAPI reads the body from here
    try:
        document = json.loads(body)
    except RecursionError:
        raise BodyTooDeep(f"the JSON nests deeper than {settings.max_json_depth} levels") from None
    except UnicodeDecodeError as exc:
        # FastAPI would answer a body it cannot decode with a bare 400.
        raise BodyNotJson(
            f"the body is not {exc.encoding} text ({exc.reason} at byte {exc.start})"
        ) from None
    except ValueError:
        return  # not JSON: FastAPI's own 422 points at the position
    if nesting_depth(document) > settings.max_json_depth:
        raise BodyTooDeep(f"the JSON nests deeper than {settings.max_json_depth} levels")


def nesting_depth(document: Any) -> int:
    """Levels of arrays and objects, counted without recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(document, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            value = list(value.values())
        if isinstance(value, list):
            deepest = max(deepest, depth)
            stack.extend((item, depth + 1) for item in value)
    return deepest
