"""Job queries and commands below the routes: they flush, the request owns the commit."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from api.errors import InvalidSpec, NetkilnError
from models.spec import JobSpec
from models.spec.lint import SpecWarning, lint
from models.summary import InvalidLayerError, ModelSummary, summarize
from models.tables import Job, JobStatus


class BadCursor(NetkilnError):
    status_code = 400
    code = "bad_cursor"


@dataclass(frozen=True)
class Inspection:
    summary: ModelSummary
    warnings: list[SpecWarning]


def inspect(spec: JobSpec) -> Inspection:
    """The dry run: shapes, parameter counts and warnings, without TensorFlow."""
    try:
        summary = summarize(spec.model, batch_size=spec.fit.batch_size)
    except InvalidLayerError as exc:
        raise InvalidSpec(
            f"{exc.layer_type}: {exc.reason}", ["model", "layers", exc.index]
        ) from exc
    return Inspection(summary, lint(spec))


def submit(session: Session, spec: JobSpec, max_attempts: int) -> Job:
    inspection = inspect(spec)
    job = Job(
        name=spec.name,
        kind=spec.kind,
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        max_attempts=max_attempts,
        epochs_total=spec.fit.epochs,
        params_total=inspection.summary.total,
        params_trainable=inspection.summary.trainable,
        params_non_trainable=inspection.summary.non_trainable,
        warnings=[warning.model_dump() for warning in inspection.warnings],
    )
    session.add(job)
    session.flush()
    return job


def list_jobs(
    session: Session,
    *,
    status: JobStatus | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable while
    new jobs arrive."""
    query: Select[Job] = select(Job).order_by(Job.created_at.desc(), Job.id.desc())
    if status is not None:
        query = query.where(Job.status == status)
    if kind is not None:
        query = query.where(Job.kind == kind)
    if cursor is not None:
        created_at, job_id = decode_cursor(cursor)
        query = query.where(
            or_(Job.created_at < created_at, and_(Job.created_at == created_at, Job.id < job_id))
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.created_at, last.id)


def encode_cursor(created_at: datetime, job_id: uuid.UUID) -> str:
    raw = json.dumps([created_at.isoformat(), str(job_id)]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, uuid.UUID]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, job_id = json.loads(raw)
        when = datetime.fromisoformat(created_at)
        if when.tzinfo is None or not isinstance(job_id, str):
            raise ValueError("not a (UTC timestamp, id) pair")
        return when, uuid.UUID(job_id)
    except (binascii.Error, ValueError, TypeError) as exc:
        raise BadCursor("cursor is not one this API returned") from exc
