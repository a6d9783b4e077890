"""Job queries and commands below the routes. They flush and the request owns the commit,
except :func:`submit`, which commits before it enqueues (see there)."""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from celery import Celery
from sqlalchemy import BindParameter, Row, Select, and_, bindparam, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api import documents
from api.errors import Conflict, InvalidSpec, NetkilnError
from api.schemas import DryRunOut, EpochEstimateOut
from api.services.limits import check_job_limits, check_queue_room
from core.queue import dispatch_queued, queue_for
from core.settings import Settings
from models import kinds, workers
from models.events import add_event, add_status_event
from models.spec import AnyJobSpec, SweepJobSpec
from models.submission import new_job
from models.tables import Job, JobEvent, JobStatus, utcnow
from models.tenancy import Caller, lock_tenant

log = logging.getLogger(__name__)


class BadCursor(NetkilnError):
    status_code = 400
    code = "bad_cursor"


class IdempotencyConflict(NetkilnError):
    status_code = 409
    code = "idempotency_key_reused"


def find_by_idempotency_key(
    session: Session, tenant: str, key: str, spec: AnyJobSpec | SweepJobSpec
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


@dataclass(frozen=True)
class Submitted:
    job: Job
    #: False: an earlier POST with the same Idempotency-Key created ``job``.
    created: bool


def concurrent_submit(
    session: Session,
    tenant: str,
    key: str | None,
    spec: AnyJobSpec | SweepJobSpec,
    error: IntegrityError,
) -> Submitted:
    """After an insert failed on a unique key: the job a concurrent retry with the same
    Idempotency-Key inserted first; ``error`` again if that is not what happened."""
    session.rollback()
    existing = find_by_idempotency_key(session, tenant, key, spec) if key is not None else None
    if existing is None:
        raise error
    return Submitted(existing, created=False)


def dry_run(session: Session, settings: Settings, spec: AnyJobSpec, caller: Caller) -> DryRunOut:
    """What the job would be, checked against the caller's limits on the job itself (not
    on the queue it would join), with an epoch's time on the fastest running worker;
    nothing is stored."""
    inspection = _inspect(session, spec, caller)
    check_job_limits(spec, caller, inspection)
    estimate = workers.estimate_epoch(
        workers.serving(session, queue_for(spec.resources), settings.reconcile_interval),
        inspection.summary.trainable,
        spec.batch_size,
        inspection.sizes.train,
    )
    return DryRunOut(
        spec=spec.model_dump(mode="json"),
        summary=inspection.summary,
        data=inspection.sizes,
        warnings=inspection.warnings,
        estimate=None
        if estimate is None
        else EpochEstimateOut(
            epoch_seconds=estimate.seconds, steps_per_epoch=estimate.steps, worker=estimate.worker
        ),
    )


def submit(
    session: Session,
    celery: Celery,
    settings: Settings,
    spec: AnyJobSpec,
    caller: Caller,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store a queued job and send its message; or, for a retried POST, the job the first
    one created. Commits itself, because the message must follow the commit (a worker must
    never receive an id it cannot read), and a concurrent retry with the same key shows
    only as the insert's conflict."""
    if idempotency_key is not None:
        existing = find_by_idempotency_key(session, caller.tenant, idempotency_key, spec)
        if existing is not None:
            return Submitted(existing, created=False)
    inspection = _inspect(session, spec, caller)
    check_job_limits(spec, caller, inspection)
    try:
        # Count and insert as one step per tenant, so concurrent submits cannot all take
        # the last free queue slot.
        lock_tenant(session, caller.tenant)
        check_queue_room(session, caller)
        job = _insert(session, spec, caller, inspection, settings.max_attempts, idempotency_key)
        session.commit()
    except IntegrityError as error:
        return concurrent_submit(session, caller.tenant, idempotency_key, spec, error)
    dispatch_queued(celery, settings.resolved_database_url, [(job.id, job.queue)])
    return Submitted(job, created=True)


def _insert(
    session: Session,
    spec: AnyJobSpec,
    caller: Caller,
    inspection: kinds.Inspection,
    max_attempts: int,
    idempotency_key: str | None,
) -> Job:
    """The queued job's row, flushed."""
    return new_job(
        session,
        spec,
        caller.tenant,
        inspection,
        max_attempts,
        idempotency_key=idempotency_key,
    )


def _inspect(session: Session, spec: AnyJobSpec, caller: Caller) -> kinds.Inspection:
    try:
        return kinds.inspect(session, spec, caller.tenant)
    except kinds.SpecError as exc:
        raise InvalidSpec(exc.message, exc.loc) from exc


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
) -> tuple[Sequence[Row[Any]], str | None]:
    """Newest first, keyset-paginated on (created_at, id) so pages stay stable while
    new jobs arrive. Rows hold ``documents.COLUMNS``, read as ``documents.listed_columns``
    reads them."""
    params: dict[str, Any] = {"tenant": tenant, "status": status, "kind": kind, "limit": limit + 1}
    if cursor is not None:
        params["created_at"], params["job_id"] = decode_cursor(cursor)
    query = _listing(status is not None, kind is not None, cursor is not None)
    rows = session.execute(query, params).all()
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(documents.created_at_of(last), documents.job_id_of(last))


@functools.cache
def _listing(by_status: bool, by_kind: bool, after_cursor: bool) -> Select[Any]:
    """The listing's statement for one combination of filters, built once with bound
    parameters: building and cache-keying a statement per request cost as much as running
    it. Core columns: the ORM adds nothing to a row listing."""
    jobs = Job.__table__.c
    query = (
        select(*documents.listed_columns())
        .where(jobs.tenant_id == bindparam("tenant"))
        .order_by(jobs.created_at.desc(), jobs.id.desc())
        .limit(bindparam("limit"))
    )
    if by_status:
        query = query.where(jobs.status == bindparam("status"))
    if by_kind:
        query = query.where(jobs.kind == bindparam("kind"))
    if after_cursor:
        created_at: BindParameter[Any] = bindparam("created_at")
        job_id: BindParameter[Any] = bindparam("job_id")
        query = query.where(
            or_(jobs.created_at < created_at, and_(jobs.created_at == created_at, jobs.id < job_id))
        )
    return query


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
        # A timestamp near year 1 or 9999 in another zone has no UTC equivalent.
        return when.astimezone(UTC), uuid.UUID(job_id)
    except (binascii.Error, ValueError, TypeError, OverflowError) as exc:
        raise BadCursor("cursor is not one this API returned") from exc
