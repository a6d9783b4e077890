"""Dependencies shared by the routers, as ``Annotated`` aliases."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Annotated

from celery import Celery
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy.orm import Session

from api.auth import authenticate, bearer
from api.errors import NotFound
from core.settings import Settings
from core.storage import ArtifactStore
from models.db import session_factory
from models.tables import Job
from models.tenancy import Caller


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


SettingsDep = Annotated[Settings, Depends(get_settings)]


def get_session(settings: SettingsDep) -> Iterator[Session]:
    """One session per request: committed if the handler returns, rolled back if it raises.
    Handlers that must act after the commit (enqueueing) commit explicitly first."""
    with session_factory(settings.resolved_database_url)() as session:
        try:
            yield session
            session.commit()
        except Exception:
            session.rollback()
            raise


SessionDep = Annotated[Session, Depends(get_session)]


def get_celery(request: Request) -> Celery:
    celery: Celery = request.app.state.celery
    return celery


CeleryDep = Annotated[Celery, Depends(get_celery)]


def get_store(request: Request) -> ArtifactStore:
    store: ArtifactStore = request.app.state.store
    return store


StoreDep = Annotated[ArtifactStore, Depends(get_store)]


def get_caller(
    request: Request,
    settings: SettingsDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Caller:
    """The calling tenant; upload routes authenticate before reading the body and leave
    the answer on the request."""
    known: Caller | None = getattr(request.state, "caller", None)
    if known is not None:
        return known
    key = credentials.credentials if credentials else None
    caller = authenticate(settings, session, key, request.app.state.read_cache)
    request.state.caller = caller
    return caller


CallerDep = Annotated[Caller, Depends(get_caller)]


def job_or_404(job_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> Job:
    job = session.get(Job, job_id)
    if job is None or job.tenant_id != caller.tenant:
        raise NotFound(f"no job {job_id}")
    return job


JobDep = Annotated[Job, Depends(job_or_404)]
