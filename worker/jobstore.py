"""Every write the worker makes to a job row. Each call is one short transaction, and
every write after the claim is fenced on (status, attempt): a worker whose job was taken
over by another attempt cannot overwrite the newer attempt's state."""

from __future__ import annotations

import functools
import logging
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Concatenate, ParamSpec, TypeVar

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from core.storage import StoredObject
from models.db import retrying, transaction
from models.events import add_event, add_status_event
from models.limits import Limits
from models.sweeps.reuse import mark_reused, reusable, reuse_allowed
from models.sweeps.rungs import AshaTrial, asha_trial
from models.tables import (
    MODEL_FORMATS,
    Artifact,
    ArtifactFormat,
    EpochMetrics,
    Job,
    JobStatus,
    Tenant,
    utcnow,
)
from models.tenancy import count_jobs
from worker.errors import JobError
from worker.outcomes import judge

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


def _riding_out_outages(
    method: Callable[Concatenate[JobStore, P], T],
) -> Callable[Concatenate[JobStore, P], T]:
    """The write again while the database is unreachable (``retry_seconds``): a restart
    of PostgreSQL pauses the job at its next write instead of failing it. Each of these
    writes may be repeated (an epoch's row is replaced, a fenced update re-checked)."""

    @functools.wraps(method)
    def write(store: JobStore, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return retrying(
            lambda: method(store, *args, **kwargs),
            store.retry_seconds,
            f"job {store.job_id}: {method.__name__}",
        )

    return write


@dataclass(frozen=True)
class Claim:
    tenant: str
    spec: dict[str, Any]
    attempt: int
    checkpoint_epoch: int | None
    #: Where the checkpoint of ``checkpoint_epoch`` is stored.
    checkpoint_uri: str | None
    #: The best epoch's model so far, where early stopping restores the best weights.
    best_uri: str | None = None
    #: What the stateful callbacks knew at the checkpoint.
    callback_state: dict[str, Any] | None = None
    #: The sweep this job is a trial of.
    parent_id: uuid.UUID | None = None
    #: A trial of an ASHA sweep: where its rungs end.
    asha: AshaTrial | None = None
    #: A trial of a sweep that takes an equal job's result where one succeeded.
    reuse: bool = False


@dataclass(frozen=True)
class Reusable:
    """A succeeded job whose result a trial may take: its id and model objects."""

    job_id: uuid.UUID
    uris: dict[ArtifactFormat, str]


class JobStore:
    def __init__(self, database_url: str, job_id: uuid.UUID, retry_seconds: float = 0) -> None:
        self.database_url = database_url
        self.job_id = job_id
        self.retry_seconds = retry_seconds
        self.attempt = 0

    @_riding_out_outages
    def claim(self, host: str, default_limits: Limits) -> Claim | None:
        """Move a queued job to running; None if it is not queued (a duplicate message,
        or a job cancelled while it waited), or if its tenant already runs as many jobs
        as it may: then the job stays queued, unsent, and the reconciler sends it again."""
        now = utcnow()
        with transaction(self.database_url) as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is None or job.status != JobStatus.QUEUED:
                return None
            if self._tenant_is_busy(session, job, default_limits):
                job.dispatched_at = None
                return None
            job.status = JobStatus.RUNNING
            job.attempt += 1
            job.started_at = job.started_at or now
            job.heartbeat_at = now
            job.worker_host = host
            job.error_code = job.error_message = None
            job.batch = 0
            self.attempt = job.attempt
            add_status_event(session, job, reason=f"attempt {job.attempt} on {host}")
            rows = session.execute(
                select(Artifact.format, Artifact.uri).where(
                    Artifact.job_id == job.id,
                    Artifact.format.in_(
                        [ArtifactFormat.CHECKPOINT.value, ArtifactFormat.BEST.value]
                    ),
                )
            )
            stored = {fmt: uri for fmt, uri in rows}
            return Claim(
                job.tenant_id,
                dict(job.spec),
                job.attempt,
                job.checkpoint_epoch,
                stored.get(ArtifactFormat.CHECKPOINT.value),
                stored.get(ArtifactFormat.BEST.value),
                job.callback_state,
                job.parent_id,
                asha_trial(session, job),
                reuse_allowed(session, job),
            )

    @staticmethod
    def _tenant_is_busy(session: Session, job: Job, default_limits: Limits) -> bool:
        # Locking the tenant row serializes claims of one tenant's jobs across workers,
        # so two of them cannot both take the last free slot.
        tenant = session.get(Tenant, job.tenant_id, with_for_update=True)
        limits = default_limits.over(tenant.limits if tenant else {})
        if limits.max_running_jobs is None:
            return False
        running = count_jobs(session, job.tenant_id, JobStatus.RUNNING)
        if running < limits.max_running_jobs:
            return False
        log.info(
            "job %s waits: tenant %s runs %d jobs (max_running_jobs %d)",
            job.id,
            job.tenant_id,
            running,
            limits.max_running_jobs,
        )
        return True

    @_riding_out_outages
    def record_model(
        self, params: tuple[int, int, int], versions: Mapping[str, str], epochs: int
    ) -> None:
        with self._owned() as (_, job):
            job.params_total, job.params_trainable, job.params_non_trainable = params
            job.versions = dict(versions)
            job.epochs_total = epochs

    def tick(self, epoch: int, batch: int, steps_per_epoch: int) -> bool:
        """Heartbeat with batch progress; True if a cancel was requested."""
        with self._owned() as (_, job):
            job.heartbeat_at = utcnow()
            job.batch = batch
            job.steps_per_epoch = steps_per_epoch
            return job.cancel_requested_at is not None

    @_riding_out_outages
    def record_epoch(self, epoch: int, values: Mapping[str, float], seconds: float) -> None:
        """``epoch`` is 1-based. Re-recording an epoch (after a resume) replaces the row."""
        with self._owned() as (session, job):
            session.execute(
                delete(EpochMetrics).where(
                    EpochMetrics.job_id == self.job_id, EpochMetrics.epoch >= epoch
                )
            )
            session.add(
                EpochMetrics(job_id=self.job_id, epoch=epoch, values=dict(values), seconds=seconds)
            )
            job.epoch = epoch
            job.batch = 0
            job.last_metrics = dict(values)
            job.heartbeat_at = utcnow()
            add_event(
                session,
                self.job_id,
                "epoch",
                {"epoch": epoch, "epochs": job.epochs_total, "seconds": seconds, **values},
            )
            # The same as one log line, so `netkiln logs` reads as a training log.
            shown = "  ".join(f"{key}={value:.4g}" for key, value in values.items())
            message = f"epoch {epoch}/{job.epochs_total}: {shown} ({seconds:.1f}s)"
            add_event(session, self.job_id, "log", {"level": "info", "message": message})

    @_riding_out_outages
    def record_execution(
        self, index: int, plan: Mapping[str, Any], epoch_seconds: float | None
    ) -> None:
        """How stage ``index`` runs (worker/execution.py), and the epoch time it estimates;
        earlier stages' plans stay."""
        with self._owned() as (_, job):
            plans = list(job.execution or [])
            plans[index:] = [dict(plan)]
            job.execution = plans
            job.epoch_seconds_estimate = epoch_seconds

    @_riding_out_outages
    def record_phase(self, index: int, record: Mapping[str, Any]) -> None:
        """What phase ``index`` trains; earlier phases' records stay."""
        with self._owned() as (session, job):
            phases = list(job.phases or [])
            phases[index:] = [dict(record)]
            job.phases = phases
            add_event(
                session,
                self.job_id,
                "log",
                {
                    "level": "info",
                    "message": f"phase {index + 1}: training {len(record['trainable_layers'])} "
                    f"layers, {record['params']['trainable']} trainable parameters",
                },
            )

    def log(self, level: str, message: str) -> None:
        with transaction(self.database_url) as session:
            add_event(session, self.job_id, "log", {"level": level, "message": message})

    @_riding_out_outages
    def succeed(
        self,
        test_metrics: Mapping[str, float],
        artifacts: Mapping[ArtifactFormat, StoredObject],
        chance: float | None = None,
    ) -> None:
        """``chance``: the accuracy of always answering the most common class, for the
        outcome warnings (``worker/outcomes.py``); None where the targets are no classes."""
        with self._owned() as (session, job):
            self._replace_artifacts(session, artifacts)
            # The best epoch's model is the trained model now (early stopping restored it);
            # its object goes with the next prune.
            session.execute(
                delete(Artifact).where(
                    Artifact.job_id == self.job_id, Artifact.format == ArtifactFormat.BEST.value
                )
            )
            job.callback_state = None
            job.test_metrics = dict(test_metrics)
            epochs = session.scalars(
                select(EpochMetrics.values)
                .where(EpochMetrics.job_id == self.job_id)
                .order_by(EpochMetrics.epoch)
            ).all()
            outcome = judge(epochs, test_metrics, chance)
            if outcome:
                job.warnings = [*job.warnings, *outcome]
            self._end(session, job, JobStatus.SUCCEEDED)

    @_riding_out_outages
    def fail(self, error: JobError) -> None:
        with self._owned() as (session, job):
            job.error_code = error.code
            job.error_message = error.message
            add_event(
                session,
                self.job_id,
                "log",
                {"level": "error", "message": f"failed: {error.code}: {error.message}"},
            )
            self._end(session, job, JobStatus.FAILED)

    @_riding_out_outages
    def cancel(self) -> None:
        with self._owned() as (session, job):
            self._end(session, job, JobStatus.CANCELLED)

    @_riding_out_outages
    def record_checkpoint(
        self,
        epoch: int,
        checkpoint: Mapping[ArtifactFormat, StoredObject],
        callback_state: Mapping[str, Any] | None = None,
    ) -> list[str]:
        """The checkpoint (and best model) after ``epoch`` and what the stateful callbacks
        knew then, in one transaction; the URIs this superseded, to delete."""
        with self._owned() as (session, job):
            superseded = self._replace_artifacts(session, checkpoint)
            job.checkpoint_epoch = epoch
            job.callback_state = dict(callback_state) if callback_state else None
            return superseded

    def reusable(self, versions: Mapping[str, str]) -> Reusable | None:
        """A job whose result this one may take (:mod:`models.sweeps.reuse`)."""
        with transaction(self.database_url) as session:
            job = session.get(Job, self.job_id)
            source = reusable(session, job, versions) if job else None
            if source is None:
                return None
            rows = session.execute(
                select(Artifact.format, Artifact.uri).where(
                    Artifact.job_id == source.id,
                    Artifact.format.in_([fmt.value for fmt in MODEL_FORMATS]),
                )
            )
            uris = {ArtifactFormat(fmt): uri for fmt, uri in rows}
            return Reusable(source.id, uris) if len(uris) == len(MODEL_FORMATS) else None

    @_riding_out_outages
    def take_result(
        self, source_id: uuid.UUID, artifacts: Mapping[ArtifactFormat, StoredObject]
    ) -> None:
        """End this job succeeded with ``source_id``'s result: its epoch rows, metrics,
        counts and versions, and ``artifacts`` (copies of its models, in this job's
        folder: deleting either job leaves the other whole)."""
        with self._owned() as (session, job):
            source = session.get(Job, source_id)
            assert source is not None
            for row in session.scalars(
                select(EpochMetrics).where(EpochMetrics.job_id == source_id)
            ):
                session.add(
                    EpochMetrics(
                        job_id=self.job_id, epoch=row.epoch, values=row.values, seconds=row.seconds
                    )
                )
            job.epoch, job.epochs_total = source.epoch, source.epochs_total
            job.steps_per_epoch = source.steps_per_epoch
            job.params_total = source.params_total
            job.params_trainable = source.params_trainable
            job.params_non_trainable = source.params_non_trainable
            job.versions, job.execution = source.versions, source.execution
            job.last_metrics, job.test_metrics = source.last_metrics, source.test_metrics
            job.warnings = list(source.warnings)
            self._replace_artifacts(session, artifacts)
            session.flush()
            mark_reused(session, job, source)
            add_event(
                session,
                self.job_id,
                "log",
                {
                    "level": "info",
                    "message": f"took the result of job {source_id} (the same spec, data, "
                    "seed and library versions) instead of training again",
                },
            )
            self._end(session, job, JobStatus.SUCCEEDED)

    def artifact_uris(self) -> list[str]:
        """Every stored object the job's rows name (whatever its status)."""
        with transaction(self.database_url) as session:
            return list(session.scalars(select(Artifact.uri).where(Artifact.job_id == self.job_id)))

    def _replace_artifacts(
        self, session: Session, artifacts: Mapping[ArtifactFormat, StoredObject]
    ) -> list[str]:
        """Rows for ``artifacts``, in place of the job's rows of those formats; the URIs
        the replaced rows named that no new row names."""
        formats = [fmt.value for fmt in artifacts]
        mine = (Artifact.job_id == self.job_id, Artifact.format.in_(formats))
        replaced = session.scalars(select(Artifact.uri).where(*mine)).all()
        session.execute(delete(Artifact).where(*mine))
        session.add_all(
            Artifact(
                job_id=self.job_id,
                format=fmt.value,
                uri=item.uri,
                size=item.size,
                sha256=item.sha256,
            )
            for fmt, item in artifacts.items()
        )
        kept = {item.uri for item in artifacts.values()}
        return [uri for uri in replaced if uri not in kept]

    @staticmethod
    def _end(session: Session, job: Job, status: JobStatus) -> None:
        now = utcnow()
        job.status = status
        job.finished_at = now
        job.heartbeat_at = now
        add_status_event(session, job)

    @contextmanager
    def _owned(self) -> Iterator[tuple[Session, Job]]:
        """The job row, locked, while this attempt still owns it; else LostOwnership."""
        with transaction(self.database_url) as session:
            job = session.get(Job, self.job_id, with_for_update=True)
            if job is None or job.status != JobStatus.RUNNING or job.attempt != self.attempt:
                raise LostOwnership(self.job_id)
            yield session, job


class LostOwnership(Exception):
    """The job row moved on (re-queued to another attempt) under this worker."""

    def __init__(self, job_id: uuid.UUID) -> None:
        super().__init__(f"job {job_id} is no longer owned by this attempt")
        self.job_id = job_id
