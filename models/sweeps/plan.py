"""A sweep's trials, decided when it is submitted: the grid's combinations, or the
configurations Optuna's RandomSampler draws from the sweep's seed (random and ASHA). Every
trial's spec is the base with the space's fields set and a seed of its own, validated and
preflighted like any job at submit, so a bad corner of the space is a 422 then, not a failed
trial an hour later."""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import optuna
from pydantic import ValidationError
from sqlalchemy.orm import Session

from models import kinds
from models.kinds.base import Inspection, SpecError
from models.preflight import METRIC_ALIASES
from models.spec import AnyJobSpec, job_spec_adapter
from models.spec.sweep import (
    MAX_TRIALS,
    MAX_VALUES,
    AshaStrategy,
    Choice,
    IntRange,
    LogUniform,
    Param,
    SweepJobSpec,
    Uniform,
    set_path,
)

#: Trials a random or ASHA sweep draws unless max_trials says otherwise.
DEFAULT_DRAWS = 16


@dataclass(frozen=True)
class PlannedTrial:
    number: int
    #: The space's values, by path.
    params: dict[str, Any]
    seed: int
    spec: AnyJobSpec


@dataclass(frozen=True)
class SweepPlan:
    trials: list[PlannedTrial]
    #: ASHA: the epochs at which trials are compared (the last is max_epochs); else empty.
    rungs: list[int]
    #: Epochs if every trial trained all its epochs.
    max_epochs_total: int
    #: Epochs ASHA trains if each rung keeps 1/reduction_factor (grid and random: the max).
    expected_epochs_total: int


def plan(spec: SweepJobSpec) -> SweepPlan:
    """The trials (specs validated, not yet preflighted: :func:`preflight_trials`)."""
    draws = CONFIGURATIONS[spec.strategy.configurations](spec)
    if isinstance(spec.strategy, AshaStrategy) and spec.strategy.configurations == "grid":
        # Asynchronous halving compares a trial with those that reached the rung before
        # it: in the grid's order, the first rows would be promoted on little evidence.
        order = np.random.default_rng(spec.seed).permutation(len(draws))
        draws = [draws[index] for index in order]
    trials = [_trial(spec, number, params) for number, params in enumerate(draws, start=1)]
    epochs = [trial.spec.total_epochs for trial in trials]
    if not isinstance(spec.strategy, AshaStrategy):
        return SweepPlan(trials, [], sum(epochs), sum(epochs))
    max_epochs = epochs[0]
    rungs = asha_rungs(spec.strategy, max_epochs)
    return SweepPlan(
        trials,
        rungs,
        sum(epochs),
        _asha_expected(len(trials), rungs, spec.strategy.reduction_factor),
    )


def asha_rungs(strategy: AshaStrategy, max_epochs: int) -> list[int]:
    """Epochs where trials are compared: min_epochs × reduction_factor^k below max_epochs,
    then max_epochs (Optuna's SuccessiveHalvingPruner's rungs)."""
    rungs = []
    epoch = strategy.min_epochs
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= strategy.reduction_factor
    return [*rungs, max_epochs]


def _asha_expected(trials: int, rungs: list[int], factor: int) -> int:
    total, alive, reached = 0, trials, 0
    for rung in rungs:
        total += alive * (rung - reached)
        reached = rung
        alive = max(1, math.ceil(alive / factor))
    return total


def trial_seed(sweep_seed: int, params: dict[str, Any]) -> int:
    """A trial's own seed, derived from the sweep's and the trial's values (NumPy's
    SeedSequence: independent streams): the same configuration gets the same seed in any
    order and under any strategy, so a grid and an ASHA sweep of one seed train the same
    trials, and trials differ only by their values."""
    digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode()).digest()
    words = [int.from_bytes(digest[i : i + 4], "little") for i in range(0, 16, 4)]
    return int(np.random.SeedSequence([sweep_seed, *words]).generate_state(1)[0] % 2**31)


def _grid(spec: SweepJobSpec) -> list[dict[str, Any]]:
    axes: dict[str, list[Any]] = {}
    for path, param in spec.space.items():
        if isinstance(param, IntRange) and param.count > MAX_VALUES:
            raise SpecError(
                f"a grid tries each of its {param.count:,} values; use at most {MAX_VALUES} "
                "(a larger step), or the random or asha strategy",
                ["space", path],
            )
        if isinstance(param, Choice | IntRange):
            axes[path] = list(param.values)
        else:
            raise SpecError(
                f"a grid tries listed values; {param.type} draws them: use "
                '{"type": "choice", "values": [...]} or {"type": "int", …}, or the random '
                "or asha strategy",
                ["space", path, "type"],
            )
    size = math.prod(len(values) for values in axes.values())
    limit = spec.max_trials or MAX_TRIALS
    if size > limit:
        raise SpecError(
            f"the grid has {size:,} combinations, more than max_trials ({limit}): "
            + ("raise max_trials, " if limit < MAX_TRIALS else "")
            + "narrow the space, or use the random strategy",
            ["max_trials"],
        )
    paths = list(axes)
    return [dict(zip(paths, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _draw(spec: SweepJobSpec, count: int) -> list[dict[str, Any]]:
    """``count`` configurations by Optuna's RandomSampler, seeded by the sweep: the same
    sweep draws the same trials."""
    distributions = {path: _distribution(param) for path, param in spec.space.items()}
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=spec.seed))
    draws = []
    for _ in range(count):
        trial = study.ask(distributions)
        draws.append(
            {path: _value(param, trial.params[path]) for path, param in spec.space.items()}
        )
        study.tell(trial, state=optuna.trial.TrialState.PRUNED)  # drawn, not run here
    return draws


#: How a strategy's configurations are chosen (its ``configurations``).
CONFIGURATIONS: dict[str, Callable[[SweepJobSpec], list[dict[str, Any]]]] = {
    "grid": _grid,
    "random": lambda spec: _draw(spec, spec.max_trials or DEFAULT_DRAWS),
}


def _distribution(param: Param) -> optuna.distributions.BaseDistribution:
    if isinstance(param, Choice):
        # By index: values may be objects (an optimizer, a schedule) Optuna cannot hold.
        return optuna.distributions.CategoricalDistribution(list(range(len(param.values))))
    if isinstance(param, IntRange):
        return optuna.distributions.IntDistribution(param.low, param.high, step=param.step)
    return optuna.distributions.FloatDistribution(
        param.low, param.high, log=isinstance(param, LogUniform)
    )


def _value(param: Param, drawn: Any) -> Any:
    if isinstance(param, Choice):
        return param.values[drawn]
    if isinstance(param, Uniform):
        return float(drawn)
    return int(drawn)


def trial_spec(spec: SweepJobSpec, number: int, params: dict[str, Any]) -> dict[str, Any]:
    """Trial ``number``'s spec document: the base with ``params`` set, its own seed and
    name (and ASHA's max_epochs)."""
    document = copy.deepcopy(spec.base)
    for path, value in params.items():
        try:
            set_path(document, path, copy.deepcopy(value))
        except KeyError as exc:
            raise SpecError(f"{exc.args[0]}: set it in the base spec", ["space", path]) from exc
    document["seed"] = trial_seed(spec.seed, params)
    base_name = spec.base.get("name") or spec.name or "sweep"
    document["name"] = f"{base_name} #{number}"[:200]
    if isinstance(spec.strategy, AshaStrategy) and spec.strategy.max_epochs is not None:
        if document.get("kind", "train") != "train":
            raise SpecError(
                "max_epochs sets fit.epochs of a train base; a transfer base's epochs are "
                "its phases': set them there",
                ["strategy", "max_epochs"],
            )
        fit = document.setdefault("fit", {})
        assert isinstance(fit, dict)
        fit["epochs"] = spec.strategy.max_epochs
    return document


def _trial(spec: SweepJobSpec, number: int, params: dict[str, Any]) -> PlannedTrial:
    document = trial_spec(spec, number, params)
    try:
        validated = job_spec_adapter.validate_python(document)
    except ValidationError as exc:
        error = exc.errors()[0]
        loc = [part for part in error["loc"] if not _is_union_tag(part)]
        raise SpecError(
            f"trial {number} ({_shown(params)}): {error['msg']}", ["base", *loc]
        ) from exc
    _check_objective(spec, validated)
    return PlannedTrial(number, params, int(document["seed"]), validated)


def _check_objective(spec: SweepJobSpec, trial: AnyJobSpec) -> None:
    """The objective is a validation metric the trials log."""
    plan = kinds.kind_of(trial).fit_plan(trial)
    name = spec.objective.metric.removeprefix("val_")
    logged = {"loss", *plan.metrics, *(METRIC_ALIASES.get(m, m) for m in plan.metrics)}
    if name not in logged:
        raise SpecError(
            f"the trials log {sorted(logged)} (with val_ when they validate); pick one of "
            "them, or add the metric to the base's compile.metrics",
            ["objective", "metric"],
        )
    if not trial.fit.validates:
        raise SpecError(
            f"{spec.objective.metric} needs validation data: set the base's "
            "fit.validation_split (e.g. 0.1) or fit.validation",
            ["objective", "metric"],
        )


def preflight_trials(
    session: Session, plan: SweepPlan, tenant: str
) -> list[tuple[PlannedTrial, Inspection]]:
    """Every trial checked against its data and the tenant's ids, as a submit checks a job
    (equal specs once); a failure names the trial and its parameters. Returns each checked
    trial's inspection, for the caller's limits."""
    checked: dict[str, tuple[PlannedTrial, Inspection]] = {}
    for trial in plan.trials:
        key = trial.spec.model_dump_json(exclude={"seed", "name"})
        if key in checked:
            continue
        try:
            checked[key] = (trial, kinds.inspect(session, trial.spec, tenant))
        except SpecError as exc:
            raise SpecError(
                f"trial {trial.number} ({_shown(trial.params)}): {exc.message}",
                ["base", *exc.loc],
            ) from exc
    return list(checked.values())


def _shown(params: dict[str, Any]) -> str:
    return ", ".join(f"{path}={_short(value)}" for path, value in params.items())


def _short(value: Any) -> str:
    text = repr(value) if not isinstance(value, dict | list) else str(value)
    return text if len(text) <= 60 else text[:57] + "…"


def _is_union_tag(part: Any) -> bool:
    # pydantic's discriminated-union branch names in a location ("train", "Dense").
    return isinstance(part, str) and part in ("train", "transfer", "pretrain")
