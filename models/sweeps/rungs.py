"""ASHA's decision at a rung, taken by the trial's own worker when the epoch that ends the
rung ends (no trial waits for a controller, none trains past its rung undecided): Optuna's
SuccessiveHalvingPruner, given the values every trial of the sweep reached at each rung,
says whether this one is among the best 1/reduction_factor so far — it trains on to the
next rung in the same process, without a restart — or stops there. The values live in
``sweep_trials.rungs``; Optuna's study is rebuilt from them for each decision, in memory,
under the sweep's row lock, so decisions never race."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import optuna
from sqlalchemy import select
from sqlalchemy.orm import Session

from models.spec.sweep import AshaStrategy, SweepJobSpec
from models.sweeps.plan import asha_rungs
from models.tables import Job, SweepTrial


@dataclass(frozen=True)
class AshaTrial:
    """What a trial's worker needs to stop at its rungs."""

    sweep_id: uuid.UUID
    number: int
    metric: str
    #: Epochs that end a rung, the last (max_epochs) excluded: no decision there.
    rung_epochs: list[int]


def asha_trial(session: Session, job: Job) -> AshaTrial | None:
    """None unless ``job`` is a trial of an ASHA sweep."""
    if job.parent_id is None:
        return None
    sweep = session.get(Job, job.parent_id)
    if sweep is None or sweep.kind != "sweep":
        return None
    spec = SweepJobSpec.model_validate(sweep.spec)
    if not isinstance(spec.strategy, AshaStrategy):
        return None
    trial = session.scalar(select(SweepTrial).where(SweepTrial.job_id == job.id))
    if trial is None:
        return None
    rungs = asha_rungs(spec.strategy, job.epochs_total)
    return AshaTrial(sweep.id, trial.number, spec.objective.metric, rungs[:-1])


def continues(session: Session, asha: AshaTrial, epoch: int, value: float) -> bool:
    """Record ``value`` (the objective after ``epoch``, a rung's last) and decide: True to
    train on, False to stop here (the trial is marked pruned)."""
    sweep = session.get(Job, asha.sweep_id, with_for_update=True)
    assert sweep is not None
    spec = SweepJobSpec.model_validate(sweep.spec)
    assert isinstance(spec.strategy, AshaStrategy)
    trials = list(session.scalars(select(SweepTrial).where(SweepTrial.sweep_id == sweep.id)))
    this = next(trial for trial in trials if trial.number == asha.number)
    rung = asha.rung_epochs.index(epoch)
    # A retried attempt (after kill -9) may reach a rung it decided before: same answer.
    if str(rung) in this.rungs:
        return this.state != "pruned"

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="minimize" if spec.objective.direction == "min" else "maximize",
        pruner=optuna.pruners.SuccessiveHalvingPruner(
            min_resource=spec.strategy.min_epochs,
            reduction_factor=spec.strategy.reduction_factor,
        ),
    )
    for other in trials:
        if other.number == asha.number or not other.rungs:
            continue
        study.add_trial(
            optuna.trial.create_trial(
                state=optuna.trial.TrialState.PRUNED,
                intermediate_values={asha.rung_epochs[int(k)]: v for k, v in other.rungs.items()},
                system_attrs={f"completed_rung_{k}": v for k, v in other.rungs.items()},
            )
        )
    study.add_trial(
        optuna.trial.create_trial(
            state=optuna.trial.TrialState.RUNNING,
            intermediate_values={epoch: value},
            system_attrs={f"completed_rung_{k}": v for k, v in this.rungs.items()},
        )
    )
    pruned = study.pruner.prune(study, study.trials[-1])
    this.rungs = {**this.rungs, str(rung): value}
    if pruned:
        this.state = "pruned"
    return not pruned
