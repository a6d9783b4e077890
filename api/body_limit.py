"""Upload routes authenticate first, then refuse an oversized request body before it is
read: at once when its Content-Length says so, or as soon as more bytes than that arrive."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import Message

from api.auth import authenticate_request
from api.services.uploads import PayloadTooLarge, upload_limit
from core.settings import Settings
from uploads.archives import UploadTooLarge

#: Room for the multipart framing and the form's other fields around the file.
FORM_OVERHEAD_BYTES = 64 * 1024


class UploadRoute(APIRoute):
    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def limited(request: Request) -> Response:
            settings: Settings = request.app.state.settings
            # Who is uploading decides how much they may send, and a stranger may send
            # nothing: authenticate before reading a byte of the body.
            caller = await run_in_threadpool(authenticate_request, settings, request)
            allowed = upload_limit(settings, caller)
            too_large = PayloadTooLarge(str(UploadTooLarge(allowed)), allowed)
            limit = allowed + FORM_OVERHEAD_BYTES
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise too_large
            received = 0

            async def receive() -> Message:
                nonlocal received
                message = await request.receive()
                received += len(message.get("body", b""))
                if received > limit:
                    raise too_large
                return message

            try:
                return await handler(Request(request.scope, receive))
            except HTTPException as exc:
                # FastAPI reports any failure while reading the form as a 400.
                if exc.__cause__ is too_large:
                    raise too_large from None
                raise

        return limited
