"""The FastAPI application factory."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from api.cache import ReadCache
from api.errors import (
    NetkilnError,
    http_error_handler,
    netkiln_error_handler,
    request_validation_handler,
    storage_unavailable_handler,
    unexpected_error_handler,
)
from api.event_feeds import EventFeeds
from api.read_lane import ReadLane
from api.routes import base_models, curves, datasets, docs, health, jobs, metrics, ui
from api.telemetry import make_registry
from core.queue import make_celery
from core.settings import Settings, get_settings
from core.storage import StorageUnavailable, open_store


def operation_id(route: APIRoute) -> str:
    """Short, stable operation ids (``jobs-submit``, ``models-list``): the names of a
    generated client's functions. The route's tag, then its function's name without the
    words that repeat the tag."""
    if not route.tags:
        return route.name
    tag = str(route.tags[0])
    words = [word for word in route.name.split("_") if word not in {tag, tag.rstrip("s")}]
    return "-".join([tag, *words]) if words else f"{tag}-{route.name}"


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    settings.ensure_dirs()
    app = FastAPI(
        generate_unique_id_function=operation_id,
        # /docs is served from this process (api/routes/docs.py); ReDoc would need a CDN.
        docs_url=None,
        redoc_url=None,
        title="netkiln",
        version="0.1.0",
        summary="Train Keras deep neural networks as jobs: POST a spec, poll, download.",
    )
    app.state.settings = settings
    app.state.celery = make_celery(settings)
    app.state.store = open_store(settings)
    # Uploads cut short by a killed API process left their staging folders behind.
    app.state.store.clean_staging()
    app.state.read_lane = ReadLane(settings.api_read_threads)
    app.state.metrics = make_registry(settings.resolved_database_url, app.state.read_lane)
    app.state.read_cache = ReadCache(settings.read_cache_seconds)
    app.state.event_feeds = EventFeeds(settings.resolved_database_url, app.state.read_lane)
    app.add_exception_handler(NetkilnError, netkiln_error_handler)
    app.add_exception_handler(StorageUnavailable, storage_unavailable_handler)
    app.add_exception_handler(RequestValidationError, request_validation_handler)
    app.add_exception_handler(HTTPException, http_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(curves.router)
    app.include_router(metrics.router)
    app.include_router(base_models.router)
    app.include_router(datasets.router)
    app.include_router(docs.router)
    app.include_router(ui.router)  # the web page at /, outside the OpenAPI schema
    return app
