"""Every write the worker makes to a job row. Each call is one short transaction, and
every write after the claim is fenced on (status, attempt): a worker whose job was taken
over by another attempt cannot overwrite the newer attempt's state."""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import delete
from sqlalchemy.orm import Session

from models.db import transaction
from models.tables import Artifact, EpochMetrics, Job, JobStatus, utcnow
from worker.artifacts import StoredArtifact
from worker.errors import JobError


class JobStore:
    def __init__(self, database_url: str, job_id: uuid.UUID) -> None:
        self.database_url = database_url
        self.job_id = job_id
        self.attempt = 0

    def claim(self, host: str) -> dict[str, Any] | None:
        """Move a queued job to running; returns its spec, or None if it is not queued."""
        now = utcnow()
        with transaction(self.database_url) as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is None or job.status != JobStatus.QUEUED:
                return None
            job.status = JobStatus.RUNNING
            job.attempt += 1
            job.started_at = job.started_at or now
            job.heartbeat_at = now
            job.worker_host = host
            job.error_code = job.error_message = None
            self.attempt = job.attempt
            return dict(job.spec)

    def record_model(
        self, params: tuple[int, int, int], versions: Mapping[str, str], epochs: int
    ) -> None:
        with self._owned() as (_, job):
            job.params_total, job.params_trainable, job.params_non_trainable = params
            job.versions = dict(versions)
            job.epochs_total = epochs

    def record_epoch(self, epoch: int, values: Mapping[str, float]) -> None:
        """``epoch`` is 1-based. Re-recording an epoch (after a resume) replaces the row."""
        with self._owned() as (session, job):
            session.execute(
                delete(EpochMetrics).where(
                    EpochMetrics.job_id == self.job_id, EpochMetrics.epoch >= epoch
                )
            )
            session.add(EpochMetrics(job_id=self.job_id, epoch=epoch, values=dict(values)))
            job.epoch = epoch
            job.last_metrics = dict(values)
            job.heartbeat_at = utcnow()

    def heartbeat(self) -> None:
        with self._owned() as (_, job):
            job.heartbeat_at = utcnow()

    def succeed(self, test_metrics: Mapping[str, float], artifacts: list[StoredArtifact]) -> None:
        with self._owned() as (session, job):
            session.execute(delete(Artifact).where(Artifact.job_id == self.job_id))
            session.add_all(
                Artifact(
                    job_id=self.job_id,
                    format=item.format.value,
                    uri=item.uri,
                    size=item.size,
                    sha256=item.sha256,
                )
                for item in artifacts
            )
            job.test_metrics = dict(test_metrics)
            self._end(job, JobStatus.SUCCEEDED)

    def fail(self, error: JobError) -> None:
        with self._owned() as (_, job):
            job.error_code = error.code
            job.error_message = error.message
            self._end(job, JobStatus.FAILED)

    @staticmethod
    def _end(job: Job, status: JobStatus) -> None:
        now: datetime = utcnow()
        job.status = status
        job.finished_at = now
        job.heartbeat_at = now

    @contextmanager
    def _owned(self) -> Iterator[tuple[Session, Job]]:
        """The job row, locked, while this attempt still owns it; else LostOwnership."""
        with transaction(self.database_url) as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is None or job.status != JobStatus.RUNNING or job.attempt != self.attempt:
                raise LostOwnership(self.job_id)
            yield session, job


class LostOwnership(Exception):
    """The job row moved on (cancelled, or re-queued to another attempt) under this worker."""

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"job {job_id} is no longer owned by this attempt")
        self.job_id = job_id
