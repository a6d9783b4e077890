"""/v1/jobs: submit, list, read, metrics, model download."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated, Literal
from urllib.parse import unquote, urlparse

from fastapi import APIRouter, Body, Header, Query, Response, status
from fastapi.responses import FileResponse
from sqlalchemy import select

from api.deps import CeleryDep, JobDep, SessionDep, SettingsDep
from api.errors import Conflict, NotFound
from api.schemas import DryRunOut, EpochRow, JobOut, JobPage, MetricsOut
from api.services import jobs as service
from models.spec import JobSpec
from models.spec.examples import BN_AFTER_ACTIVATION
from models.tables import Artifact, EpochMetrics, JobStatus
from worker.dispatch import dispatch

log = logging.getLogger(__name__)
router = APIRouter(prefix="/v1/jobs", tags=["jobs"])

MEDIA_TYPES = {"keras": "application/zip", "h5": "application/x-hdf5"}


@router.post(
    "",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=JobOut | DryRunOut,
    responses={
        200: {
            "model": DryRunOut,
            "description": "dry_run=true: the expanded model, nothing queued",
        },
        202: {"model": JobOut, "description": "The job, queued"},
    },
)
def submit_job(
    spec: Annotated[
        JobSpec,
        Body(openapi_examples={"bn_after_activation": {"value": BN_AFTER_ACTIVATION}}),
    ],
    session: SessionDep,
    celery: CeleryDep,
    settings: SettingsDep,
    response: Response,
    dry_run: Annotated[
        bool, Query(description="Validate and summarize the model; store and queue nothing.")
    ] = False,
) -> JobOut | DryRunOut:
    if dry_run:
        inspection = service.inspect(spec)
        response.status_code = status.HTTP_200_OK
        return DryRunOut(
            spec=spec.model_dump(mode="json"),
            summary=inspection.summary,
            warnings=inspection.warnings,
        )
    job = service.submit(session, spec, settings.max_attempts)
    # Commit before enqueueing: a worker must never receive an id it cannot read.
    session.commit()
    try:
        dispatch(celery, settings.resolved_database_url, job.id)
    except Exception:
        # The row is the source of truth; a queued job without a message is re-sent
        # by the worker's reconciler once the broker is back.
        log.exception("could not enqueue job %s; it stays queued", job.id)
    response.headers["Location"] = f"/v1/jobs/{job.id}"
    return JobOut.from_row(job)


@router.get("", response_model=JobPage)
def list_jobs(
    session: SessionDep,
    status: JobStatus | None = None,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> JobPage:
    rows, next_cursor = service.list_jobs(
        session, status=status, kind=kind, limit=limit, cursor=cursor
    )
    return JobPage(items=[JobOut.from_row(job) for job in rows], next_cursor=next_cursor)


@router.get("/{job_id}", response_model=JobOut)
def get_job(job: JobDep, session: SessionDep) -> JobOut:
    artifacts = list(session.scalars(select(Artifact).where(Artifact.job_id == job.id)))
    return JobOut.from_row(job, artifacts)


@router.get("/{job_id}/metrics", response_model=MetricsOut)
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
    "/{job_id}/model",
    response_class=FileResponse,
    responses={
        200: {"content": {media: {} for media in MEDIA_TYPES.values()}},
        304: {"description": "Unchanged since the ETag in If-None-Match."},
        409: {"description": "The job has not succeeded (yet)."},
    },
)
def download_model(
    job: JobDep,
    session: SessionDep,
    format: Literal["keras", "h5"] = "keras",
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    if job.status != JobStatus.SUCCEEDED:
        raise Conflict(f"job {job.id} is {job.status}; its model exists once it has succeeded")
    artifact = session.scalars(
        select(Artifact).where(Artifact.job_id == job.id, Artifact.format == format)
    ).one_or_none()
    if artifact is None:
        raise NotFound(f"job {job.id} has no {format} model")
    etag = f'"{artifact.sha256}"'
    if if_none_match is not None and etag in {tag.strip() for tag in if_none_match.split(",")}:
        return Response(status_code=status.HTTP_304_NOT_MODIFIED, headers={"ETag": etag})
    path = Path(unquote(urlparse(artifact.uri).path))
    if not path.is_file():
        raise NotFound(f"the {format} model of job {job.id} is missing from artifact storage")
    stem = job.name or str(job.id)
    safe_stem = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in stem)
    return FileResponse(
        path,
        media_type=MEDIA_TYPES[format],
        filename=f"{safe_stem}.{format}",
        headers={"ETag": etag},
    )
