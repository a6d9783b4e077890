"""/v1/jobs: submit, list, read, metrics, model download."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Literal

import anyio
from fastapi import APIRouter, Body, Depends, Header, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from fastapi.security import HTTPAuthorizationCredentials
from sqlalchemy import select
from sse_starlette import EventSourceResponse, ServerSentEvent

from api import documents
from api.auth import (
    authenticate,
    authenticate_briefly,
    bearer,
    bearer_key,
    remembered_caller,
)
from api.cache import JobDocument, ReadCache
from api.deps import CallerDep, CeleryDep, JobDep, SessionDep, SettingsDep, StoreDep
from api.errors import UNAUTHORIZED, Conflict, NotFound, Unauthorized, error_responses
from api.event_feeds import EventFeeds
from api.json_body import JsonRoute
from api.read_lane import ReadLane
from api.schemas import (
    BINARY,
    DryRunOut,
    EpochRow,
    JobOut,
    JobPage,
    LogLine,
    LogPage,
    MetricsOut,
    SweepDryRunOut,
    TrialsOut,
)
from api.services import deletion, sweeps
from api.services import jobs as service
from core.settings import Settings
from models.db import reader_factory, session_factory
from models.queueing import queue_state
from models.spec import SubmittedSpec, SweepJobSpec
from models.spec.examples import BN_AFTER_ACTIVATION
from models.spec.job import PRINTABLE
from models.tables import Artifact, EpochMetrics, Job, JobStatus
from models.tenancy import Caller

#: Event ids are 64-bit signed integers in the database.
MAX_EVENT_ID = 2**63 - 1
# Every route authenticates: through ``CallerDep`` (``JobDep`` includes it), JsonRoute
# for bodies, and get_job by hand, so that its hot path needs no thread-pool hop.
router = APIRouter(prefix="/v1/jobs", tags=["jobs"], route_class=JsonRoute, responses=UNAUTHORIZED)
#: Every route of one job: an unknown id, or another tenant's.
NO_JOB = error_responses({404: "No such job."})

MEDIA_TYPES = {
    "keras": "application/zip",
    "h5": "application/x-hdf5",
    "checkpoint": "application/zip",
    "best": "application/zip",
}
SUFFIXES = {"keras": "keras", "h5": "h5", "checkpoint": "checkpoint.keras", "best": "best.keras"}
#: What a job has before it ends; the trained model formats exist once it succeeded.
WHILE_TRAINING = {"checkpoint", "best"}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut | DryRunOut | SweepDryRunOut,
    responses={
        200: {
            "model": DryRunOut | SweepDryRunOut,
            "description": "dry_run=true: the expanded model (a sweep: its trials), nothing queued",
        },
        202: {"model": JobOut, "description": "The job, queued"},
        **error_responses(
            {
                409: "The Idempotency-Key was used before with another spec.",
                413: "The body exceeds NETKILN_MAX_REQUEST_BYTES.",
                415: "The body is not sent as application/json.",
                429: "The tenant's max_queued_jobs are waiting already.",
            }
        ),
    },
)
def submit_job(
    spec: Annotated[
        SubmittedSpec,
        Body(openapi_examples={"bn_after_activation": {"value": BN_AFTER_ACTIVATION}}),
    ],
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    caller: CallerDep,
    response: Response,
    dry_run: Annotated[
        bool, Query(description="Validate and summarize the model; store and queue nothing.")
    ] = False,
    idempotency_key: Annotated[
        str | None,
        Header(
            max_length=255,
            pattern=PRINTABLE,
            description="A retried POST with the same key returns the job the first created.",
        ),
    ] = None,
) -> JobOut | DryRunOut | SweepDryRunOut:
    if isinstance(spec, SweepJobSpec):
        if dry_run:
            response.status_code = status.HTTP_200_OK
            return sweeps.dry_run(session, spec, caller)
        submitted = sweeps.submit(session, celery, settings, spec, caller, idempotency_key)
    else:
        if dry_run:
            response.status_code = status.HTTP_200_OK
            return service.dry_run(session, settings, spec, caller)
        submitted = service.submit(session, celery, settings, spec, caller, idempotency_key)
    if not submitted.created:
        response.status_code = status.HTTP_200_OK
    response.headers["Location"] = f"/v1/jobs/{submitted.job.id}"
    return JobOut.from_row(submitted.job)


@router.get(
    "",
    response_model=JobPage,
    responses=error_responses({400: "A cursor this API did not issue."}),
)
async def list_jobs(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    status: JobStatus | None = None,
    kind: Annotated[str | None, Query(pattern=r"^[a-z_]{1,32}$")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> Response:
    """Newest first. Items are the jobs' status documents without their specs (read a job
    for its spec and layer summary): the list is what pages and dashboards poll, so it is
    read in one hop to the read lane (authentication, query and JSON together) rather than
    one per dependency."""
    key = credentials.credentials if credentials else None
    lane: ReadLane = request.app.state.read_lane
    body = await lane.run(
        _list_page,
        request.app.state.settings,
        request.app.state.read_cache,
        key,
        status,
        kind,
        limit,
        cursor,
    )
    return Response(body, media_type="application/json")


def _list_page(
    settings: Settings,
    cache: ReadCache,
    key: str | None,
    status: JobStatus | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> bytes:
    with reader_factory(settings.resolved_database_url)() as session:
        caller = authenticate(settings, session, key, cache)
        rows, next_cursor = service.list_jobs(
            session, caller.tenant, status=status, kind=kind, limit=limit, cursor=cursor
        )
    return documents.page_json(rows, next_cursor)


@router.get("/{job_id:uuid}", response_model=JobOut, responses=NO_JOB)
async def get_job(
    job_id: uuid.UUID,
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
) -> Response:
    """The job's status document: the API's hottest read, since clients poll it. Served
    from the read cache when it can be (no thread hop, no query), else read in one hop to
    the read lane with one session."""
    settings: Settings = request.app.state.settings
    cache: ReadCache = request.app.state.read_cache
    key = credentials.credentials if credentials else None
    remembered = remembered_caller(settings, key, cache)
    document = cache.job(job_id)
    if remembered is None or document is None:
        lane: ReadLane = request.app.state.read_lane
        caller, document = await lane.shared(
            (key, job_id), _read_job_document, settings, cache, key, job_id
        )
    else:
        caller = remembered
    if document is None or document.tenant != caller.tenant:
        raise NotFound(f"no job {job_id}")
    return Response(document.body, media_type="application/json")


def _read_job_document(
    settings: Settings,
    cache: ReadCache,
    key: str | None,
    job_id: uuid.UUID,
) -> tuple[Caller, JobDocument | None]:
    with session_factory(settings.resolved_database_url)() as session:
        caller = authenticate(settings, session, key, cache)
        # Requests with other keys that missed the cache together take the lane one after
        # another (one key's share a read): the first fills the cache for the others.
        document = cache.job(job_id)
        if document is not None:
            return caller, document
        job = session.get(Job, job_id)
        if job is None:
            return caller, None
        artifacts = list(session.scalars(select(Artifact).where(Artifact.job_id == job.id)))
        queue = queue_state(session, job, settings.default_limits, settings.reconcile_interval)
        document_out = JobOut.from_row(job, artifacts, detailed=True, queue=queue)
        body = document_out.model_dump_json().encode()
    document = JobDocument(job.tenant_id, body, finished=JobStatus(job.status).is_terminal)
    cache.remember_job(job_id, document)
    return caller, document


@router.post(
    "/{job_id:uuid}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut,
    responses={**NO_JOB, **error_responses({409: "The job has already ended."})},
)
def cancel_job(job: JobDep, session: SessionDep, request: Request) -> JobOut:
    """A queued job ends ``cancelled`` at once; a running one stops within a batch of its
    worker noticing (about a second) and keeps its checkpoint and metrics so far."""
    stop = sweeps.cancel if job.kind == "sweep" else service.cancel
    cancelled = JobOut.from_row(stop(session, job))
    # Committed before answering, and forgotten by the read cache after the commit, so
    # that a status read right after this answer shows the cancel.
    session.commit()
    request.app.state.read_cache.forget_job(job.id)
    return cancelled


@router.delete(
    "/{job_id:uuid}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses={
        **NO_JOB,
        **error_responses(
            {409: "The job (or a child) has not ended, or a waiting job builds on its model."}
        ),
    },
)
def delete_job(job: JobDep, session: SessionDep, store: StoreDep, request: Request) -> Response:
    """An ended job: its metrics, events and artifacts, its child jobs' too, and its
    stored models and checkpoint. Cancel a queued or running job first."""
    for deleted in deletion.delete_job(session, store, job):
        request.app.state.read_cache.forget_job(deleted)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/{job_id:uuid}/trials",
    response_model=TrialsOut,
    responses={**NO_JOB, **error_responses({409: "The job is not a sweep."})},
)
def get_trials(job: JobDep, session: SessionDep) -> TrialsOut:
    """A sweep's trials, best objective first: each one's parameters, seed, state, epochs
    trained, objective and (ASHA) the value at each rung it reached."""
    if job.kind != "sweep":
        raise Conflict(f"job {job.id} is a {job.kind} job, not a sweep: it has no trials")
    return sweeps.trials(session, job)


@router.get("/{job_id:uuid}/logs", response_model=LogPage, responses=NO_JOB)
def get_logs(
    job: JobDep, session: SessionDep, after: Annotated[int, Query(ge=0, le=MAX_EVENT_ID)] = 0
) -> LogPage:
    rows = service.events_after(session, job.id, after, kinds=("log",))
    return LogPage(
        job_id=job.id,
        lines=[
            LogLine(
                id=row.id, time=row.created_at, level=row.data["level"], message=row.data["message"]
            )
            for row in rows
        ],
        next_after=rows[-1].id if rows else after,
    )


@router.get(
    "/{job_id:uuid}/events",
    response_class=EventSourceResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "Server-sent events"},
        **NO_JOB,
    },
)
async def stream_events(
    job_id: uuid.UUID,
    request: Request,
    settings: SettingsDep,
    # Read by authenticate_briefly; declared here so the schema shows the bearer scheme.
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    last_event_id: Annotated[str | None, Header()] = None,
    after: Annotated[
        int | None, Query(ge=0, le=MAX_EVENT_ID, description="Resume after this event id.")
    ] = None,
) -> EventSourceResponse:
    """Status changes, epoch ends (metrics, learning rate) and log lines as server-sent
    events; the stream ends once the job has ended and every event was sent. Reconnect with
    ``Last-Event-ID`` (browsers do) to continue where the stream broke off."""
    caller = await authenticate_briefly(request)
    if not await anyio.to_thread.run_sync(_owns_job, settings, caller, job_id):
        raise NotFound(f"no job {job_id}")
    feeds: EventFeeds = request.app.state.event_feeds
    key = bearer_key(request)
    # A revoked key's streams end within the read cache's time (or a second).
    recheck_every = max(settings.read_cache_seconds, 1.0)

    async def events() -> AsyncIterator[ServerSentEvent]:
        recheck_at = anyio.current_time() + recheck_every
        async for batch in feeds.follow(job_id, after or _event_id(last_event_id)):
            for event in batch.events:
                yield ServerSentEvent(id=str(event.id), event=event.kind, data=event.data)
            if batch.ended:
                # This process's next status read shows the end the stream just told.
                request.app.state.read_cache.forget_job(job_id)
                return
            if anyio.current_time() >= recheck_at:
                recheck_at = anyio.current_time() + recheck_every
                if not await anyio.to_thread.run_sync(_still_allowed, settings, request, key):
                    return

    return EventSourceResponse(events(), ping=15)


def _owns_job(settings: Settings, caller: Caller, job_id: uuid.UUID) -> bool:
    with session_factory(settings.resolved_database_url)() as session:
        tenant = session.scalar(select(Job.tenant_id).where(Job.id == job_id))
    return tenant == caller.tenant


def _still_allowed(settings: Settings, request: Request, key: str | None) -> bool:
    with session_factory(settings.resolved_database_url)() as session:
        try:
            authenticate(settings, session, key, request.app.state.read_cache)
        except Unauthorized:
            return False
    return True


def _event_id(header: str | None) -> int:
    """A browser's ``Last-Event-ID``; past every id there can be, it means "nothing new"."""
    try:
        return min(max(int(header or 0), 0), MAX_EVENT_ID)
    except ValueError:
        return 0


@router.get("/{job_id:uuid}/metrics", response_model=MetricsOut, responses=NO_JOB)
def get_metrics(job: JobDep, session: SessionDep) -> MetricsOut:
    rows = session.scalars(
        select(EpochMetrics).where(EpochMetrics.job_id == job.id).order_by(EpochMetrics.epoch)
    )
    return MetricsOut(
        job_id=job.id,
        epochs=[EpochRow(epoch=row.epoch, values=row.values) for row in rows],
        test=job.test_metrics,
    )


@router.get(
    "/{job_id:uuid}/model",
    response_class=StreamingResponse,
    responses={
        200: {
            "content": {media: {"schema": BINARY} for media in MEDIA_TYPES.values()},
            "description": "The model file",
        },
        304: {"description": "Unchanged since the ETag in If-None-Match."},
        **error_responses(
            {
                404: "No such job, or it has no model of this format.",
                409: "The job has not succeeded (yet).",
            }
        ),
    },
)
def download_model(
    job: JobDep,
    session: SessionDep,
    store: StoreDep,
    format: Annotated[
        Literal["keras", "h5", "checkpoint", "best"],
        Query(
            description="keras/h5: the trained model, once the job succeeded (plain Keras "
            "loads it); checkpoint: the newest end-of-epoch state, also of a cancelled or "
            "failed job; best: with early stopping that restores the best weights, the "
            "best epoch's model so far (until the job succeeded)."
        ),
    ] = "keras",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    if format not in WHILE_TRAINING and job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"job {job.id} is {job.status}; its model exists once it has succeeded")
    # A sweep's model is its best trial's.
    source = sweeps.model_job(session, job)
    artifact = session.scalars(
        select(Artifact).where(Artifact.job_id == source, Artifact.format == format)
    ).one_or_none()
    if artifact is None:
        raise NotFound(f"job {job.id} has no {format} model")
    etag = f'"{artifact.sha256}"'
    if if_none_match is not None and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    try:
        chunks = store.stream(artifact.uri)
    except FileNotFoundError:
        raise NotFound(
            f"the {format} model of job {job.id} is missing from artifact storage"
        ) from None
    stem = job.name or str(job.id)
    safe_stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    return StreamingResponse(
        chunks,
        media_type=MEDIA_TYPES[format],
        headers={
            "ETag": etag,
            "Content-Length": str(artifact.size),
            "Content-Disposition": f'attachment; filename="{safe_stem}.{SUFFIXES[format]}"',
        },
    )
