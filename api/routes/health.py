"""Liveness and readiness."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from api.deps import CeleryDep, SessionDep, SettingsDep
from models.migrate import connection_schema_state

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    responses={
        503: {
            "description": "The database or broker is unreachable, or the database's schema "
            "is not the one this version needs (the check says what to run)."
        }
    },
)
def readyz(session: SessionDep, celery: CeleryDep, settings: SettingsDep) -> JSONResponse:
    checks: dict[str, Any] = {}
    try:
        # Reachable is not enough: every request would fail on tables it lacks.
        checks["database"] = connection_schema_state(session.connection()).problem or "ok"
    except Exception as exc:
        checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        with celery.connection_for_write() as connection:
            connection.ensure_connection(max_retries=1, timeout=2)
        checks["broker"] = "ok"
    except Exception as exc:
        checks["broker"] = f"unreachable: {type(exc).__name__}"
    ready = all(value == "ok" for value in checks.values())
    return JSONResponse(
        status_code=200 if ready else 503,
        content={"status": "ready" if ready else "not ready", "checks": checks},
    )
