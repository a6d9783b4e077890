"""A queued job's row, as a submit or a sweep creates it (the message follows the commit,
sent by whoever committed: the API, or the worker that scheduled a sweep's trial)."""

from __future__ import annotations

import uuid

from sqlalchemy.orm import Session

from models.events import add_status_event
from models.kinds import Inspection
from models.spec import AnyJobSpec
from models.spec.resources import queue_for
from models.sweeps.reuse import spec_digest
from models.tables import Job, JobStatus


def new_job(
    session: Session,
    spec: AnyJobSpec,
    tenant: str,
    inspection: Inspection,
    max_attempts: int,
    *,
    idempotency_key: str | None = None,
    parent_id: uuid.UUID | None = None,
) -> Job:
    """The queued job's row, flushed, with its first status event."""
    summary = inspection.summary
    document = spec.model_dump(mode="json")
    job = Job(
        tenant_id=tenant,
        parent_id=parent_id,
        idempotency_key=idempotency_key,
        name=spec.name,
        kind=spec.kind,
        status=JobStatus.QUEUED,
        queue=queue_for(spec.resources),
        spec=document,
        spec_digest=spec_digest(document),
        max_attempts=max_attempts,
        epochs_total=spec.total_epochs,
        summary=summary.model_dump(mode="json"),
        params_total=summary.total,
        params_trainable=summary.trainable,
        params_non_trainable=summary.non_trainable,
        warnings=[warning.model_dump() for warning in inspection.warnings],
    )
    session.add(job)
    session.flush()
    add_status_event(session, job)
    return job
