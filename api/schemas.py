"""Response bodies. Requests are the job-spec models in ``models.spec``."""

from __future__ import annotations

import uuid
from dataclasses import asdict
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from api.documents import job_document, values_of
from models.queueing import QueueState
from models.spec.lint import SpecWarning
from models.summary import DataSizes, ModelSummary
from models.tables import Artifact, Job, JobStatus

#: A response body that is a file (a model, a PNG): typed so generated clients keep it.
BINARY: dict[str, str] = {"type": "string", "format": "binary"}


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
        description="Estimated seconds left: from this attempt's pace so far; before its "
        "first batch, from the epoch time its worker estimated from the speed it measured "
        "(execution); null when unknown."
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


class QueueOut(BaseModel):
    queue: str
    position: int = Field(description="1: the next job of its queue a free worker takes.")
    reason: Literal["waiting_for_worker", "no_worker_for_resources", "tenant_running_limit"]
    message: str


class EpochEstimateOut(BaseModel):
    epoch_seconds: float = Field(
        description="An epoch's seconds on the fastest running worker, from the model's "
        "arithmetic and the speed that worker measured at start-up."
    )
    steps_per_epoch: int
    worker: str


class ExecutionOut(BaseModel):
    steps_per_execution: int
    reason: str
    backend: str
    devices: list[str] = Field(description='What the stage trained on, e.g. ["gpu:0"].')
    input_pipeline: str = Field(
        default="", description="How the in-memory arrays become batches on this backend."
    )
    precision: str
    jit_compile: bool
    step_seconds: float | None = Field(description="The estimated seconds of one train step.")
    device_gflops: float | None = Field(
        default=None, description="Dense float32 matmul GFLOP/s the worker measured at start-up."
    )
    step_overhead_s: float | None = Field(
        default=None, description="Seconds of a trivial train step on the worker: the fixed cost."
    )


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
    queue: QueueOut | None = Field(
        default=None, description="Single reads of a queued job: where it stands and why."
    )
    execution: list[ExecutionOut] | None = Field(
        default=None,
        description="Per training stage, how the worker ran it: steps per execution (sized "
        "for about two progress reports a second from the speed the worker measured), "
        "backend, devices, precision, and why.",
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
        queue: QueueState | None = None,
    ) -> JobOut:
        """``detailed``: with the layer summary (single-job reads); ``listed``: without
        the spec (listings read ``documents.page_json`` instead; this is its reference)."""
        document = job_document(values_of(job))
        if detailed and job.summary:
            document["summary"] = job.summary
        if artifacts is not None:
            document["artifacts"] = [
                {
                    "format": item.format,
                    "size": item.size,
                    "sha256": item.sha256,
                    "url": f"/v1/jobs/{job.id}/model?format={item.format}",
                }
                for item in artifacts
            ]
        if not listed:
            document["spec"] = job.spec
        if queue is not None:
            document["queue"] = asdict(queue)
        return cls.model_validate(document)


class DryRunOut(BaseModel):
    """What ``POST /v1/jobs?dry_run=true`` returns: nothing is stored or queued."""

    spec: dict[str, Any] = Field(description="The spec with every default filled in.")
    summary: ModelSummary = Field(description="Layers, shapes and parameter counts.")
    data: DataSizes = Field(description="Examples to train, validate and test on.")
    warnings: list[SpecWarning]
    estimate: EpochEstimateOut | None = Field(
        default=None, description="None until a running worker has measured its speed."
    )


class TrialOut(BaseModel):
    number: int = Field(description="1, 2, … in the order planned.")
    params: dict[str, Any] = Field(description="The space's values, by field path.")
    seed: int
    job_id: uuid.UUID | None = Field(default=None, description="Once scheduled.")
    state: str = Field(
        description="pending, queued, running, succeeded, failed, cancelled, pruned "
        "(stopped at a rung by ASHA) or skipped (the budget ran out first)."
    )
    objective: float | None = Field(
        default=None, description="The best value of the objective's metric over its epochs."
    )
    epochs: int = Field(description="Epochs trained.")
    max_epochs: int | None = None
    rung: int | None = Field(default=None, description="ASHA: rungs reached.")
    rungs: dict[int, float] = Field(
        default_factory=dict, description="ASHA: the objective at each rung reached."
    )
    reused_from: uuid.UUID | None = Field(
        default=None,
        description="The succeeded job whose result it took instead of training (reuse).",
    )


class TrialsOut(BaseModel):
    sweep_id: uuid.UUID
    status: JobStatus
    metric: str
    direction: Literal["min", "max"]
    best: int | None = Field(description="The best trial's number: its model is the sweep's.")
    trials: list[TrialOut] = Field(description="Best objective first; untrained ones last.")
    links: dict[str, str] = Field(
        default_factory=dict,
        description="sweep: sweep.png; compare: compare.png of the (up to) five best trials.",
    )


class SweepDryRunOut(BaseModel):
    """``POST /v1/jobs?dry_run=true`` of a sweep: its trials (grid and random: each one;
    ASHA: the configurations it starts from) and the epochs they may take."""

    spec: dict[str, Any]
    trials: list[TrialOut]
    rungs: list[int] = Field(description="ASHA: the epochs where trials are compared.")
    max_epochs_total: int = Field(description="Epochs if every trial trained to the end.")
    expected_epochs_total: int = Field(
        description="ASHA: epochs if each rung keeps 1/reduction_factor; else the max."
    )


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
