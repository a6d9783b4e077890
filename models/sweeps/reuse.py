"""The reuse rule: a sweep's trial whose effective spec (the seed included, the name not),
data and library versions equal a job of the same tenant that succeeded takes that job's
result instead of training again — so re-running a cancelled sweep, or a sweep over a space
that overlaps an earlier one, costs only what is missing. Data is part of the spec: a
built-in by name and selection, an upload by its id (uploads never change). The library
versions are known only where the trial would train, so the worker that claims the trial
applies the rule (``worker/runner.py``), before it loads anything."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from models.spec.sweep import AshaStrategy, SweepJobSpec
from models.sweeps.plan import asha_rungs
from models.tables import EpochMetrics, Job, JobStatus, SweepTrial


def spec_digest(spec: Mapping[str, Any]) -> str:
    """What two jobs must share to train the same thing: their spec, but for its name."""
    canonical = json.dumps(_effective(spec), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def _effective(spec: Mapping[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in spec.items() if key != "name"}


def reuse_allowed(session: Session, job: Job) -> bool:
    """Whether ``job`` is a trial of a sweep that reuses results (``reuse``, the default)."""
    if job.parent_id is None:
        return False
    sweep = session.get(Job, job.parent_id)
    return bool(sweep and sweep.kind == "sweep" and sweep.spec.get("reuse", True))


def reusable(session: Session, job: Job, versions: Mapping[str, str]) -> Job | None:
    """The newest succeeded job of the tenant with ``job``'s effective spec, trained with
    ``versions``; None if there is none."""
    if job.spec_digest is None:
        return None
    candidates = session.scalars(
        select(Job)
        .where(
            Job.tenant_id == job.tenant_id,
            Job.spec_digest == job.spec_digest,
            Job.status == JobStatus.SUCCEEDED,
            Job.id != job.id,
        )
        .order_by(Job.finished_at.desc())
    )
    wanted = _effective(job.spec)
    for candidate in candidates:
        # The digest found it; the specs themselves decide (no trust in a hash alone).
        if _effective(candidate.spec) == wanted and dict(candidate.versions or {}) == dict(
            versions
        ):
            return candidate
    return None


def mark_reused(session: Session, job: Job, source: Job) -> None:
    """The trial row says whose result it took; an ASHA trial's rungs are the values the
    source reached at them, so later trials compare against it."""
    trial = session.scalar(select(SweepTrial).where(SweepTrial.job_id == job.id))
    if trial is None:
        return
    trial.reused_from = source.id
    sweep = session.get(Job, trial.sweep_id)
    if sweep is None:
        return
    spec = SweepJobSpec.model_validate(sweep.spec)
    if not isinstance(spec.strategy, AshaStrategy):
        return
    values = {
        row.epoch: row.values.get(spec.objective.metric)
        for row in session.scalars(select(EpochMetrics).where(EpochMetrics.job_id == job.id))
    }
    rungs = asha_rungs(spec.strategy, job.epochs_total)[:-1]
    reached = {index: values.get(epoch) for index, epoch in enumerate(rungs)}
    trial.rungs = {
        str(index): float(value) for index, value in reached.items() if value is not None
    }
