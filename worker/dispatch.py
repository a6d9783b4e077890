"""Sending a job's task message. Used by the API after its commit and by the reconciler;
both only ever send ids of rows that are already committed."""

from __future__ import annotations

import uuid

from celery import Celery
from sqlalchemy import update

from models.db import transaction
from models.tables import Job, JobStatus, utcnow
from worker.app import RUN_JOB_TASK


def dispatch(celery: Celery, database_url: str, job_id: uuid.UUID) -> None:
    """Send the message, then note when. A duplicate message is harmless: only the
    delivery that claims the queued row trains."""
    celery.send_task(RUN_JOB_TASK, args=[str(job_id)])
    with transaction(database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(dispatched_at=utcnow())
        )
