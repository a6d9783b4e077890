"""Planning a sweep: field paths, the grid's combinations, Optuna's seeded draws, ASHA's
rungs and epoch budget, the trial seeds, and refusals that name the field."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from pydantic import ValidationError

from models.kinds.base import SpecError
from models.spec.examples import DIGITS_SPEC
from models.spec.sweep import AshaStrategy, SweepJobSpec, parse_path, set_path
from models.sweeps.plan import asha_rungs, plan, trial_seed


def sweep(**fields: Any) -> SweepJobSpec:
    document: dict[str, Any] = {
        "kind": "sweep",
        "base": copy.deepcopy(DIGITS_SPEC),
        "space": {"compile.optimizer.learning_rate": {"type": "choice", "values": [0.1, 0.01]}},
        **fields,
    }
    return SweepJobSpec.model_validate(document)


def test_paths_reach_fields_and_list_items() -> None:
    assert parse_path("model.layers[2].activation") == ["model", "layers", 2, "activation"]
    spec = copy.deepcopy(DIGITS_SPEC)
    set_path(spec, "model.layers[1].activation", "selu")
    set_path(spec, "fit.early_stopping.patience", 3)  # a field the base left out
    assert spec["model"]["layers"][1]["activation"] == "selu"
    assert spec["fit"]["early_stopping"] == {"patience": 3}
    with pytest.raises(KeyError, match=r"model\.layers\[9\] is not in the base spec"):
        set_path(spec, "model.layers[9].units", 3)


def test_the_grid_is_every_combination_in_order() -> None:
    planned = plan(
        sweep(
            space={
                "model.layers[1].activation": {"type": "choice", "values": ["relu", "elu"]},
                "fit.batch_size": {"type": "int", "low": 16, "high": 48, "step": 16},
            }
        )
    )
    assert [trial.params for trial in planned.trials] == [
        {"model.layers[1].activation": a, "fit.batch_size": b}
        for a in ("relu", "elu")
        for b in (16, 32, 48)
    ]
    assert [trial.number for trial in planned.trials] == [1, 2, 3, 4, 5, 6]
    assert planned.max_epochs_total == 6 * DIGITS_SPEC["fit"]["epochs"]
    trial = planned.trials[4]
    assert trial.spec.fit.batch_size == 32
    assert trial.spec.seed == trial_seed(0, trial.params)
    assert trial.spec.name == "digits-bn #5"


def test_random_draws_come_from_the_seed_and_stay_in_range() -> None:
    space = {
        "compile.optimizer.learning_rate": {"type": "loguniform", "low": 1e-4, "high": 1.0},
        "model.layers[1].units": {"type": "int", "low": 8, "high": 64},
        "model.layers[1].activation": {"type": "choice", "values": ["relu", "selu"]},
    }
    one = plan(sweep(space=space, strategy={"type": "random"}, max_trials=20, seed=1))
    again = plan(sweep(space=space, strategy={"type": "random"}, max_trials=20, seed=1))
    other = plan(sweep(space=space, strategy={"type": "random"}, max_trials=20, seed=2))
    assert [t.params for t in one.trials] == [t.params for t in again.trials]
    assert [t.params for t in one.trials] != [t.params for t in other.trials]
    rates = [t.params["compile.optimizer.learning_rate"] for t in one.trials]
    assert all(1e-4 <= rate <= 1.0 for rate in rates)
    assert min(rates) < 1e-2 < max(rates)  # log-uniform: small rates are drawn too
    assert {t.params["model.layers[1].units"] for t in one.trials} <= set(range(8, 65))


def test_a_bad_choice_is_refused_naming_the_trial_and_the_field() -> None:
    with pytest.raises(SpecError) as refused:
        plan(sweep(space={"model.layers[1].activation": {"type": "choice", "values": ["nope"]}}))
    assert refused.value.loc[:4] == ["base", "model", "layers", 1]
    assert "trial 1 (model.layers[1].activation='nope')" in refused.value.message


def test_a_grid_larger_than_max_trials_or_over_floats_is_refused() -> None:
    with pytest.raises(SpecError) as refused:
        plan(sweep(max_trials=1))
    assert refused.value.loc == ["max_trials"]
    with pytest.raises(SpecError) as floats:
        plan(sweep(space={"fit.validation_split": {"type": "uniform", "low": 0.1, "high": 0.2}}))
    assert floats.value.loc == ["space", "fit.validation_split", "type"]


def test_the_objective_must_be_a_logged_validation_metric() -> None:
    with pytest.raises(SpecError, match="pick one of them") as refused:
        plan(sweep(objective={"metric": "val_auc"}))
    assert refused.value.loc == ["objective", "metric"]
    base = copy.deepcopy(DIGITS_SPEC)
    base["fit"] = {"epochs": 1}
    with pytest.raises(SpecError, match="needs validation data"):
        plan(sweep(base=base))
    with pytest.raises(ValidationError, match="sets each trial's kind and seed"):
        sweep(space={"seed": {"type": "choice", "values": [1]}})


def test_asha_rungs_and_budget() -> None:
    strategy = AshaStrategy(type="asha", min_epochs=1, reduction_factor=3)
    assert asha_rungs(strategy, 27) == [1, 3, 9, 27]
    assert asha_rungs(strategy, 8) == [1, 3, 8]
    planned = plan(
        sweep(
            space={
                "compile.optimizer.learning_rate": {"type": "loguniform", "low": 0.001, "high": 1}
            },
            strategy={"type": "asha", "min_epochs": 1, "max_epochs": 9, "reduction_factor": 3},
            max_trials=27,
        )
    )
    assert planned.rungs == [1, 3, 9]
    assert all(trial.spec.fit.epochs == 9 for trial in planned.trials)
    assert planned.max_epochs_total == 27 * 9
    # 27 trials × 1 epoch, 9 × 2 more, 3 × 6 more.
    assert planned.expected_epochs_total == 27 + 18 + 18


def test_trial_seeds_differ_by_values_and_repeat() -> None:
    configurations = [{"fit.batch_size": size} for size in range(1, 101)]
    seeds = [trial_seed(7, params) for params in configurations]
    assert len(set(seeds)) == 100
    assert seeds == [trial_seed(7, dict(params)) for params in configurations]
    assert all(0 <= seed < 2**31 for seed in seeds)
    assert trial_seed(8, configurations[0]) != seeds[0]  # and by the sweep's seed


def test_choices_may_be_whole_objects() -> None:
    optimizers = [{"type": "Adam", "learning_rate": 0.01}, {"type": "SGD", "momentum": 0.9}]
    planned = plan(
        sweep(
            space={"compile.optimizer": {"type": "choice", "values": optimizers}},
            strategy={"type": "random"},
            max_trials=8,
        )
    )
    drawn = [trial.params["compile.optimizer"] for trial in planned.trials]
    assert all(value in optimizers for value in drawn)
    assert {trial.spec.compile.optimizer.type for trial in planned.trials} == {"Adam", "SGD"}


def test_asha_may_start_from_the_grid() -> None:
    space = {
        "model.layers[1].activation": {"type": "choice", "values": ["relu", "elu", "selu"]},
        "compile.optimizer.learning_rate": {"type": "choice", "values": [0.1, 0.01, 0.001]},
    }
    grid = plan(sweep(space=space))
    asha = plan(
        sweep(
            space=space,
            strategy={"type": "asha", "max_epochs": 9, "configurations": "grid"},
        )
    )
    shown = [t.params for t in asha.trials]
    assert sorted(map(str, shown)) == sorted(str(t.params) for t in grid.trials)
    assert shown != [t.params for t in grid.trials]  # shuffled: no row goes first by rank
    assert asha.rungs == [1, 3, 9]


def test_huge_grids_are_refused_before_they_are_built() -> None:
    wide = {"model.layers[1].units": {"type": "int", "low": 1, "high": 10**9}}
    with pytest.raises(SpecError, match="tries each of its 1,000,000,000 values") as refused:
        plan(sweep(space=wide))
    assert refused.value.loc == ["space", "model.layers[1].units"]
    many = {
        f"model.layers[{index}].units": {"type": "int", "low": 1, "high": 100} for index in (1, 4)
    } | {"fit.batch_size": {"type": "int", "low": 1, "high": 100}}
    with pytest.raises(SpecError, match="1,000,000 combinations") as refused:
        plan(sweep(space=many))
    assert refused.value.loc == ["max_trials"]
