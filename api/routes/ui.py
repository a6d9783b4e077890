"""The read-only web page at ``/``: a job table with live status and learning curves.

Plain HTML, CSS and JavaScript from ``api/static`` (no build step). The page calls the
public ``/v1`` API from the browser with the visitor's API key, so it needs no access of
its own and shows exactly what that key may read."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Response, status
from fastapi.responses import FileResponse

from api.errors import NotFound

STATIC = Path(__file__).resolve().parent.parent / "static"

#: The only files served: a fixed list, so no request path ever reaches the filesystem.
ASSETS = {
    "netkiln.css": "text/css; charset=utf-8",
    "netkiln.js": "text/javascript; charset=utf-8",
}

#: Scripts, styles and requests from this origin only; images also from blob: URLs (the
#: curves are fetched with the key and shown as object URLs).
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob:; "
    "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
)

router = APIRouter(include_in_schema=False)


@router.get("/", response_class=FileResponse)
def index() -> FileResponse:
    return FileResponse(
        STATIC / "index.html",
        media_type="text/html; charset=utf-8",
        headers={
            "Cache-Control": "no-cache",
            "Content-Security-Policy": CSP,
            "Referrer-Policy": "no-referrer",
            "X-Content-Type-Options": "nosniff",
        },
    )


@router.get("/static/{name}", response_class=FileResponse)
def asset(name: str) -> FileResponse:
    media_type = ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"no static file {name}")
    return FileResponse(
        STATIC / name,
        media_type=media_type,
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get("/favicon.ico")
def favicon() -> Response:
    """No icon, said without an error: browsers ask for one with every page."""
    return Response(status_code=status.HTTP_204_NO_CONTENT)
