"""Response bodies. Requests are the job-spec models in ``models.spec``."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from models.spec.lint import SpecWarning
from models.summary import ModelSummary
from models.tables import Artifact, Job, JobStatus, utcnow


class JobError(BaseModel):
    code: str = Field(description="Stable: invalid_data, nan_loss, out_of_memory, timeout, …")
    message: str


class Progress(BaseModel):
    epoch: int = Field(description="Epochs completed.")
    epochs: int = Field(description="Epochs planned.")
    batch: int = Field(description="Batches completed in the current epoch.")
    steps_per_epoch: int = Field(description="Batches per epoch (0 until training starts).")
    fraction: float = Field(ge=0, le=1)
    eta_seconds: float | None = Field(
        description="Estimated time left, from this attempt's pace so far; null when unknown."
    )

    @classmethod
    def of(cls, job: Job) -> Progress:
        epochs = max(job.epochs_total, 1)
        if JobStatus(job.status) == JobStatus.SUCCEEDED:
            fraction = 1.0
        else:
            within = job.batch / job.steps_per_epoch if job.steps_per_epoch else 0.0
            fraction = min((job.epoch + within) / epochs, 1.0)
        eta = None
        if JobStatus(job.status) == JobStatus.RUNNING and job.started_at and fraction > 0:
            elapsed = (utcnow() - job.started_at).total_seconds()
            eta = max(elapsed / fraction * (1 - fraction), 0.0)
        return cls(
            epoch=job.epoch,
            epochs=job.epochs_total,
            batch=job.batch,
            steps_per_epoch=job.steps_per_epoch,
            fraction=fraction,
            eta_seconds=eta,
        )


class ParamCounts(BaseModel):
    total: int
    trainable: int
    non_trainable: int


class ArtifactOut(BaseModel):
    format: str
    size: int
    sha256: str
    url: str


class JobOut(BaseModel):
    id: uuid.UUID
    name: str | None
    kind: str
    status: JobStatus
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    heartbeat_at: datetime | None
    attempt: int
    max_attempts: int
    worker_host: str | None
    error: JobError | None
    progress: Progress
    cancel_requested: bool
    checkpoint_epoch: int | None = Field(description="Epochs held by the newest checkpoint.")
    params: ParamCounts | None
    last_metrics: dict[str, float] | None
    test_metrics: dict[str, float] | None
    versions: dict[str, str] | None
    warnings: list[SpecWarning] = Field(
        description="Valid but suspicious choices in the spec (stable codes), e.g. SELU "
        "without standardized inputs."
    )
    phases: list[dict[str, Any]] | None = Field(
        description="Transfer jobs: per phase, the layers it trained and the counts."
    )
    summary: ModelSummary | None = Field(
        default=None, description="Single-job reads: the model's layers, shapes and counts."
    )
    artifacts: list[ArtifactOut] | None = Field(
        default=None, description="Present on single-job reads of finished jobs."
    )
    spec: dict[str, Any] | None = Field(
        description="The spec with every default filled in; null in listings (read the job)."
    )
    links: dict[str, str]

    @classmethod
    def from_row(
        cls,
        job: Job,
        artifacts: list[Artifact] | None = None,
        detailed: bool = False,
        listed: bool = False,
    ) -> JobOut:
        """``detailed``: with the layer summary (single-job reads); ``listed``: without
        the spec (listings, whose query does not load it)."""
        base = f"/v1/jobs/{job.id}"
        done = JobStatus(job.status) == JobStatus.SUCCEEDED
        return cls(
            id=job.id,
            name=job.name,
            kind=job.kind,
            status=job.status,
            created_at=job.created_at,
            started_at=job.started_at,
            finished_at=job.finished_at,
            heartbeat_at=job.heartbeat_at,
            attempt=job.attempt,
            max_attempts=job.max_attempts,
            worker_host=job.worker_host,
            error=JobError(code=job.error_code, message=job.error_message or "")
            if job.error_code
            else None,
            progress=Progress.of(job),
            cancel_requested=job.cancel_requested_at is not None,
            checkpoint_epoch=job.checkpoint_epoch,
            params=ParamCounts(
                total=job.params_total,
                trainable=job.params_trainable or 0,
                non_trainable=job.params_non_trainable or 0,
            )
            if job.params_total is not None
            else None,
            last_metrics=job.last_metrics,
            test_metrics=job.test_metrics,
            versions=job.versions,
            warnings=[SpecWarning.model_validate(item) for item in job.warnings],
            phases=job.phases,
            summary=ModelSummary.model_validate(job.summary) if detailed and job.summary else None,
            artifacts=[
                ArtifactOut(
                    format=item.format,
                    size=item.size,
                    sha256=item.sha256,
                    url=f"{base}/model?format={item.format}",
                )
                for item in artifacts
            ]
            if artifacts is not None
            else None,
            spec=None if listed else job.spec,
            links={
                "self": base,
                "metrics": f"{base}/metrics",
                "events": f"{base}/events",
                "logs": f"{base}/logs",
                "cancel": f"{base}/cancel",
            }
            | ({"model": f"{base}/model?format=keras"} if done else {}),
        )


class DryRunOut(BaseModel):
    """What ``POST /v1/jobs?dry_run=true`` returns: nothing is stored or queued."""

    spec: dict[str, Any] = Field(description="The spec with every default filled in.")
    summary: ModelSummary | None = Field(
        description="Layers, shapes and parameter counts; null for a transfer from an "
        "uploaded model whose shapes could not be read."
    )
    warnings: list[SpecWarning]


class LogLine(BaseModel):
    id: int
    time: datetime
    level: str
    message: str


class LogPage(BaseModel):
    job_id: uuid.UUID
    lines: list[LogLine]
    next_after: int = Field(description="Pass as ?after= to read only newer lines.")


class JobPage(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class EpochRow(BaseModel):
    epoch: int
    values: dict[str, float]


class MetricsOut(BaseModel):
    job_id: uuid.UUID
    epochs: list[EpochRow]
    test: dict[str, float] | None
