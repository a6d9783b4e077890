"""Why a queued job waits, and where it stands: its place in its queue and a typed reason
a client can branch on (the job's ``queue`` on a single read; ``netkiln status``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import Session

from models import workers
from models.limits import Limits
from models.spec.resources import ResourcesSpec
from models.tables import Job, JobStatus, Tenant
from models.tenancy import count_jobs

WaitReason = Literal["waiting_for_worker", "no_worker_for_resources", "tenant_running_limit"]


@dataclass(frozen=True)
class QueueState:
    queue: str
    #: 1: the next job of its queue a free worker takes (tenant limits allowing).
    position: int
    reason: WaitReason
    message: str


def queue_state(
    session: Session, job: Job, default_limits: Limits, sweep_interval: float
) -> QueueState | None:
    """None unless ``job`` is queued."""
    queue = job.queue
    if job.status != JobStatus.QUEUED:
        return None
    ahead = session.scalar(
        select(func.count())
        .select_from(Job)
        .where(
            Job.status == JobStatus.QUEUED,
            Job.queue == queue,
            or_(
                Job.created_at < job.created_at,
                and_(Job.created_at == job.created_at, Job.id < job.id),
            ),
        )
    )
    position = int(ahead or 0) + 1
    serving = workers.serving(session, queue, sweep_interval)
    if not serving:
        return QueueState(
            queue,
            position,
            "no_worker_for_resources",
            f"no running worker serves the queue {queue} ({_needs(job)}): start one that "
            f"can ({_worker_command(job)})",
        )
    tenant = session.get(Tenant, job.tenant_id)
    limits = default_limits.over(tenant.limits if tenant else {})
    running = count_jobs(session, job.tenant_id, JobStatus.RUNNING)
    if limits.max_running_jobs is not None and running >= limits.max_running_jobs:
        return QueueState(
            queue,
            position,
            "tenant_running_limit",
            f"the tenant runs {running} jobs, its max_running_jobs; this one starts when "
            "one of them ends",
        )
    slots = sum(worker.concurrency for worker in serving)
    return QueueState(
        queue,
        position,
        "waiting_for_worker",
        f"{position - 1} jobs ahead of it; {len(serving)} workers ({slots} job slots) serve "
        "the queue",
    )


def _needs(job: Job) -> str:
    resources = ResourcesSpec.model_validate(job.spec.get("resources") or {})
    if resources.accelerator == "cpu":
        return "a CPU"
    kind = f" {resources.gpu_type}" if resources.gpu_type else ""
    return f"{resources.device_count}{kind} GPU{'s' if resources.device_count > 1 else ''}"


def _worker_command(job: Job) -> str:
    resources = ResourcesSpec.model_validate(job.spec.get("resources") or {})
    if resources.accelerator == "cpu":
        return "netkiln worker"
    gpus = ",".join(str(index) for index in range(resources.device_count))
    group = f" --gpus-per-job {resources.device_count}" if resources.device_count > 1 else ""
    kind = f" --gpu-type {resources.gpu_type}" if resources.gpu_type else ""
    return f"netkiln worker --gpus {gpus}{group}{kind}"
