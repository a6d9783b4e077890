"""Job queries and commands below the routes: they flush, the request owns the commit."""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from datetime import datetime

from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from api.errors import Conflict, NetkilnError
from api.services.inspection import inspect
from api.services.limits import check_limits
from models.events import add_event, add_status_event
from models.spec import AnyJobSpec
from models.tables import Job, JobEvent, JobStatus, utcnow
from models.tenancy import Caller


class BadCursor(NetkilnError):
    status_code = 400
    code = "bad_cursor"


class IdempotencyConflict(NetkilnError):
    status_code = 409
    code = "idempotency_key_reused"


def find_by_idempotency_key(
    session: Session, tenant: str, key: str, spec: AnyJobSpec
) -> Job | None:
    """The job an earlier POST of this tenant with this key created; 409 if that POST had
    another spec."""
    job = session.scalars(
        select(Job).where(Job.tenant_id == tenant, Job.idempotency_key == key)
    ).one_or_none()
    if job is not None and job.spec != spec.model_dump(mode="json"):
        raise IdempotencyConflict(
            f"Idempotency-Key {key!r} was used for job {job.id} with a different spec"
        )
    return job


def submit(
    session: Session,
    spec: AnyJobSpec,
    caller: Caller,
    max_attempts: int,
    idempotency_key: str | None = None,
) -> Job:
    """Store a queued job, after checking it against the caller's limits."""
    inspection = inspect(session, spec, caller.tenant)
    summary = inspection.summary
    check_limits(session, spec, caller, summary)
    job = Job(
        tenant_id=caller.tenant,
        idempotency_key=idempotency_key,
        name=spec.name,
        kind=spec.kind,
        status=JobStatus.QUEUED,
        spec=spec.model_dump(mode="json"),
        max_attempts=max_attempts,
        epochs_total=spec.total_epochs,
        summary=summary.model_dump(mode="json") if summary else None,
        params_total=summary.total if summary else None,
        params_trainable=summary.trainable if summary else None,
        params_non_trainable=summary.non_trainable if summary else None,
        warnings=[warning.model_dump() for warning in inspection.warnings],
    )
    session.add(job)
    session.flush()
    add_status_event(session, job)
    return job


def cancel(session: Session, job: Job) -> Job:
    """A queued job ends at once (its message finds it cancelled and does nothing); a
    running one is flagged, and its worker stops it within a batch of noticing."""
    status = JobStatus(job.status)
    if status.is_terminal:
        raise Conflict(f"job {job.id} already ended {status.value}; there is nothing to cancel")
    now = utcnow()
    job.cancel_requested_at = job.cancel_requested_at or now
    if status == JobStatus.QUEUED:
        job.status = JobStatus.CANCELLED
        job.finished_at = now
        add_status_event(session, job, reason="cancelled while queued")
    else:
        add_event(session, job.id, "log", {"level": "info", "message": "cancel requested"})
    session.flush()
    return job


def events_after(
    session: Session, job_id: uuid.UUID, after: int, kinds: tuple[str, ...] | None = None
) -> list[JobEvent]:
    query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
    if kinds is not None:
        query = query.where(JobEvent.kind.in_(kinds))
    return list(session.scalars(query.order_by(JobEvent.id).limit(500)))


def list_jobs(
    session: Session,
    tenant: str,
    *,
    status: JobStatus | None,
    kind: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[Job], str | None]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable while
    new jobs arrive."""
    query: Select[Job] = (
        select(Job).where(Job.tenant_id == tenant).order_by(Job.created_at.desc(), Job.id.desc())
    )
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
