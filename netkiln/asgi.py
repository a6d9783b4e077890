"""The API as an import string, for servers that start processes of their own:
``netkiln api --workers N`` (uvicorn spawns fresh interpreters, which cannot be handed an
app object), or ``uvicorn --factory netkiln.asgi:create_app``."""

from __future__ import annotations

from typing import TYPE_CHECKING

from core.settings import get_settings
from netkiln.logs import configure_logging

if TYPE_CHECKING:
    from fastapi import FastAPI


def create_app() -> FastAPI:
    """An API app configured by ``NETKILN_*`` (``netkiln api`` exports what its options
    set), logging the way ``netkiln api`` does in its own process."""
    from api.app import create_app as create_api

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_format)
    return create_api(settings)
