"""Job events: appended in the same transaction as the state change they describe, so the
stream and the row never disagree."""

from __future__ import annotations

import uuid
from typing import Any, Literal

from sqlalchemy.orm import Session

from models.tables import Job, JobEvent, JobStatus

EventKind = Literal["status", "epoch", "log", "progress"]


def add_event(session: Session, job_id: uuid.UUID, kind: EventKind, data: dict[str, Any]) -> None:
    session.add(JobEvent(job_id=job_id, kind=kind, data=data))


def add_status_event(session: Session, job: Job, reason: str | None = None) -> None:
    data: dict[str, Any] = {"status": JobStatus(job.status).value, "attempt": job.attempt}
    if job.error_code:
        data["error"] = {"code": job.error_code, "message": job.error_message}
    if reason:
        data["reason"] = reason
    add_event(session, job.id, "status", data)
