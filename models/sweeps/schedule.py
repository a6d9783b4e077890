"""A sweep moves on when one of its trials ends (the worker that ran it calls
:func:`advance`) and on every reconciler sweep (a backstop after a crash): trials' states
and objectives are read from their jobs, the next planned trials are queued within
``parallelism`` and the budget, and once every trial is accounted for the sweep ends with
its best trial. Each call locks the sweep's row, so two workers never schedule the same
trial; the caller sends the returned jobs' messages after its commit."""

from __future__ import annotations

import uuid
from datetime import timedelta
from typing import NamedTuple

from sqlalchemy import select
from sqlalchemy.orm import Session

from models import kinds
from models.events import add_status_event
from models.limits import Limits
from models.spec import job_spec_adapter
from models.spec.sweep import SweepJobSpec
from models.submission import new_job
from models.tables import EpochMetrics, Job, JobStatus, SweepTrial, Tenant, utcnow
from models.tenancy import count_jobs

#: Trial states once nothing more will happen to it.
FINISHED = frozenset({"succeeded", "failed", "cancelled", "pruned", "skipped"})
#: Trial states that hold a place within ``parallelism``.
ACTIVE = frozenset({"queued", "running"})


class Scheduled(NamedTuple):
    """A trial job queued by :func:`advance`, to dispatch: its id and queue."""

    job_id: uuid.UUID
    queue: str


def advance(
    session: Session, sweep_id: uuid.UUID, max_attempts: int, default_limits: Limits
) -> list[Scheduled]:
    """Bring the sweep up to date; the trial jobs it queued, for the caller to dispatch
    after commit. Trials queue within ``parallelism`` and the room the tenant's
    ``max_queued_jobs`` leaves (``default_limits`` under the tenant's own)."""
    sweep = session.get(Job, sweep_id, with_for_update=True)
    if sweep is None or sweep.kind != "sweep":
        return []
    spec = SweepJobSpec.model_validate(sweep.spec)
    trials = list(
        session.scalars(
            select(SweepTrial).where(SweepTrial.sweep_id == sweep_id).order_by(SweepTrial.number)
        )
    )
    _sync(session, spec, trials)
    sweep.epoch = sum(trial.epochs for trial in trials)
    if sweep.status != JobStatus.RUNNING:
        return []
    sweep.heartbeat_at = utcnow()
    scheduled: list[Scheduled] = []
    if _over_budget(spec, sweep, trials):
        stop_trials(session, trials, "the sweep's budget is spent")
    else:
        active = sum(trial.state in ACTIVE for trial in trials)
        room = _queue_room(session, sweep.tenant_id, default_limits)
        for trial in trials:
            if active >= spec.parallelism or room <= 0:
                break
            if trial.state != "pending":
                continue
            job = _trial_job(session, sweep, spec, trial, max_attempts)
            trial.job_id, trial.state = job.id, "queued"
            scheduled.append(Scheduled(job.id, job.queue))
            active += 1
            room -= 1
    if all(trial.state in FINISHED for trial in trials):
        _end(session, sweep, spec, trials)
    return scheduled


def stop_trials(session: Session, trials: list[SweepTrial], reason: str) -> None:
    """Queued trials end at once, running ones are asked to stop (their workers stop them
    within a batch), pending ones are skipped."""
    now = utcnow()
    for trial in trials:
        if trial.state == "pending":
            trial.state = "skipped"
            continue
        if trial.state not in ACTIVE or trial.job_id is None:
            continue
        job = session.get(Job, trial.job_id)
        if job is None:
            continue
        job.cancel_requested_at = job.cancel_requested_at or now
        if job.status == JobStatus.QUEUED:
            job.status = JobStatus.CANCELLED
            job.finished_at = now
            trial.state = "cancelled"
            add_status_event(session, job, reason=reason)


def ranked(spec: SweepJobSpec, trials: list[SweepTrial]) -> list[SweepTrial]:
    """Best objective first (ties by number), trials without one last."""
    sign = 1.0 if spec.objective.direction == "min" else -1.0
    return sorted(
        trials,
        key=lambda trial: (trial.objective is None, sign * (trial.objective or 0.0), trial.number),
    )


def best_trial(spec: SweepJobSpec, trials: list[SweepTrial]) -> SweepTrial | None:
    """The trial with the best objective among those that trained to the end (ASHA's
    stopped trials compare at fewer epochs, so they never win)."""
    done = [t for t in ranked(spec, trials) if t.objective is not None and t.state == "succeeded"]
    return done[0] if done else None


def _sync(session: Session, spec: SweepJobSpec, trials: list[SweepTrial]) -> None:
    ids = [trial.job_id for trial in trials if trial.job_id is not None]
    jobs = {job.id: job for job in session.scalars(select(Job).where(Job.id.in_(ids)))}
    for trial in trials:
        job = jobs.get(trial.job_id) if trial.job_id else None
        if job is None:
            continue
        trial.epochs = job.epoch
        if trial.state != "pruned":
            trial.state = JobStatus(job.status).value
        if JobStatus(job.status).is_terminal and trial.objective is None:
            trial.objective = objective_of(session, job.id, spec)


def objective_of(session: Session, job_id: uuid.UUID, spec: SweepJobSpec) -> float | None:
    """The best value of the objective's metric over the trial's epochs."""
    values = [
        row.values.get(spec.objective.metric)
        for row in session.scalars(select(EpochMetrics).where(EpochMetrics.job_id == job_id))
    ]
    present = [float(value) for value in values if value is not None]
    if not present:
        return None
    return min(present) if spec.objective.direction == "min" else max(present)


def _queue_room(session: Session, tenant_id: str, default_limits: Limits) -> float:
    """How many more jobs the tenant may have waiting (its trials wait like any job)."""
    tenant = session.get(Tenant, tenant_id)
    limit = default_limits.over(tenant.limits if tenant else {}).max_queued_jobs
    if limit is None:
        return float("inf")
    return limit - count_jobs(session, tenant_id, JobStatus.QUEUED)


def _over_budget(spec: SweepJobSpec, sweep: Job, trials: list[SweepTrial]) -> bool:
    budget = spec.budget
    if budget is None:
        return False
    if budget.epochs is not None and sum(trial.epochs for trial in trials) >= budget.epochs:
        return True
    started = sweep.started_at or sweep.created_at
    return budget.seconds is not None and utcnow() - started >= timedelta(seconds=budget.seconds)


def _trial_job(
    session: Session, sweep: Job, spec: SweepJobSpec, trial: SweepTrial, max_attempts: int
) -> Job:
    from models.sweeps.plan import trial_spec

    document = trial_spec(spec, trial.number, trial.params)
    validated = job_spec_adapter.validate_python(document)
    inspection = kinds.inspect(session, validated, sweep.tenant_id)
    return new_job(
        session, validated, sweep.tenant_id, inspection, max_attempts, parent_id=sweep.id
    )


def _end(session: Session, sweep: Job, spec: SweepJobSpec, trials: list[SweepTrial]) -> None:
    best = best_trial(spec, trials)
    now = utcnow()
    sweep.finished_at = now
    if best is None:
        sweep.status = JobStatus.FAILED
        sweep.error_code = "no_trial_succeeded"
        counts = {state: sum(t.state == state for t in trials) for state in FINISHED}
        sweep.error_message = (
            f"no trial trained to the end with {spec.objective.metric}: "
            + ", ".join(f"{n} {state}" for state, n in counts.items() if n)
        )
    else:
        sweep.status = JobStatus.SUCCEEDED
        sweep.last_metrics = {spec.objective.metric: best.objective, "trial": best.number}
        best_job = session.get(Job, best.job_id) if best.job_id else None
        sweep.test_metrics = best_job.test_metrics if best_job else None
    add_status_event(session, sweep)
