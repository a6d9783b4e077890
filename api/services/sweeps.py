"""Sweeps on the API side: submit (every trial planned, validated, preflighted and checked
against the tenant's limits before anything is stored), the dry run's trial list, the
trials table, cancel, and which job's model a sweep's download is."""

from __future__ import annotations

import uuid

from celery import Celery
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.errors import Conflict, InvalidSpec
from api.schemas import SweepDryRunOut, TrialOut, TrialsOut
from api.services.jobs import Submitted, concurrent_submit, find_by_idempotency_key
from api.services.limits import check_job_limits
from core.queue import dispatch_queued
from core.settings import Settings
from models.events import add_status_event
from models.kinds import SpecError
from models.spec.sweep import SweepJobSpec
from models.sweeps import plan as planning
from models.sweeps.schedule import advance, best_trial, ranked, stop_trials
from models.tables import Job, JobStatus, SweepTrial, utcnow
from models.tenancy import Caller


def _planned(session: Session, spec: SweepJobSpec, caller: Caller) -> planning.SweepPlan:
    try:
        plan = planning.plan(spec)
        checked = planning.preflight_trials(session, plan, caller.tenant)
    except SpecError as exc:
        raise InvalidSpec(exc.message, exc.loc) from exc
    for trial, inspection in checked:
        check_job_limits(trial.spec, caller, inspection)
    return plan


def dry_run(session: Session, spec: SweepJobSpec, caller: Caller) -> SweepDryRunOut:
    plan = _planned(session, spec, caller)
    return SweepDryRunOut(
        spec=spec.model_dump(mode="json"),
        trials=[
            TrialOut(
                number=trial.number,
                params=trial.params,
                seed=trial.seed,
                epochs=0,
                max_epochs=trial.spec.total_epochs,
                state="pending",
            )
            for trial in plan.trials
        ],
        rungs=plan.rungs,
        max_epochs_total=plan.max_epochs_total,
        expected_epochs_total=plan.expected_epochs_total,
    )


def submit(
    session: Session,
    celery: Celery,
    settings: Settings,
    spec: SweepJobSpec,
    caller: Caller,
    idempotency_key: str | None = None,
) -> Submitted:
    """Store the sweep (running from now: it trains nothing itself) and its planned trials,
    queue the first ``parallelism`` of them, and send their messages after the commit; or,
    for a retried POST, the sweep the first one created."""
    if idempotency_key is not None:
        existing = find_by_idempotency_key(session, caller.tenant, idempotency_key, spec)
        if existing is not None:
            return Submitted(existing, created=False)
    plan = _planned(session, spec, caller)
    now = utcnow()
    sweep = Job(
        tenant_id=caller.tenant,
        idempotency_key=idempotency_key,
        name=spec.name,
        kind="sweep",
        status=JobStatus.RUNNING,
        spec=spec.model_dump(mode="json"),
        started_at=now,
        heartbeat_at=now,
        max_attempts=1,
        epochs_total=plan.max_epochs_total,
    )
    session.add(sweep)
    try:
        session.flush()
    except IntegrityError as error:
        return concurrent_submit(session, caller.tenant, idempotency_key, spec, error)
    add_status_event(session, sweep)
    for trial in plan.trials:
        session.add(
            SweepTrial(sweep_id=sweep.id, number=trial.number, params=trial.params, seed=trial.seed)
        )
    session.flush()
    scheduled = advance(session, sweep.id, settings.max_attempts, settings.default_limits)
    session.commit()
    dispatch_queued(celery, settings.resolved_database_url, scheduled)
    return Submitted(sweep, created=True)


def cancel(session: Session, sweep: Job) -> Job:
    """The sweep ends cancelled at once: queued trials with it, running ones stop within a
    batch; the best trial so far stays the sweep's result."""
    if JobStatus(sweep.status).is_terminal:
        raise Conflict(f"sweep {sweep.id} already ended {sweep.status}; nothing to cancel")
    trials = list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == sweep.id)))
    stop_trials(session, trials, "the sweep was cancelled")
    sweep.status = JobStatus.CANCELLED
    sweep.cancel_requested_at = sweep.finished_at = utcnow()
    add_status_event(session, sweep, reason="cancelled")
    return sweep


def trials(session: Session, sweep: Job) -> TrialsOut:
    spec = SweepJobSpec.model_validate(sweep.spec)
    rows = list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == sweep.id)))
    best = best_trial(spec, rows)
    epochs = {
        job.id: job.epochs_total
        for job in session.scalars(
            select(Job).where(Job.id.in_([row.job_id for row in rows if row.job_id]))
        )
    }
    ordered = ranked(spec, rows)
    top = [str(row.job_id) for row in ordered if row.objective is not None and row.job_id][:5]
    links = {"sweep": f"/v1/jobs/{sweep.id}/sweep.png"}
    if top:
        links["compare"] = (
            f"/v1/jobs/compare.png?ids={','.join(top)}&metric={spec.objective.metric}"
        )
    return TrialsOut(
        links=links,
        sweep_id=sweep.id,
        status=JobStatus(sweep.status),
        metric=spec.objective.metric,
        direction=spec.objective.direction,
        best=best.number if best else None,
        trials=[
            TrialOut(
                number=row.number,
                params=row.params,
                seed=row.seed,
                job_id=row.job_id,
                state=row.state,
                objective=row.objective,
                epochs=row.epochs,
                max_epochs=epochs.get(row.job_id) if row.job_id else None,
                rung=len(row.rungs) if row.rungs else None,
                rungs={int(k): v for k, v in row.rungs.items()},
                reused_from=row.reused_from,
            )
            for row in ordered
        ],
    )


def model_job(session: Session, job: Job) -> uuid.UUID:
    """Whose artifacts a download of ``job`` serves: its own, or a sweep's best trial's."""
    if job.kind != "sweep":
        return job.id
    spec = SweepJobSpec.model_validate(job.spec)
    best = best_trial(
        spec, list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == job.id)))
    )
    return best.job_id if best and best.job_id else job.id
