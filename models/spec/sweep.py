"""A sweep: one job that trains a base spec many times over a search space, as the chapter
compares initializers, activations, optimizers and schedules. Each trial is the base spec
with the space's fields set (by path: ``compile.optimizer.learning_rate``,
``model.layers[2].activation``); the trials are child jobs (``models/sweeps/``)."""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, JsonValue, field_validator, model_validator

from models.spec.base import StrictModel
from models.spec.job import PRINTABLE

#: A field of the base spec: dotted names and ``[index]`` into lists.
PATH = r"^[a-z_][a-z0-9_]*(\[[0-9]{1,3}\]|\.[a-z_][a-z0-9_]*)*$"
MAX_TRIALS = 1000
MAX_VALUES = 100


class Choice(StrictModel):
    """Any of ``values`` (numbers, names, or whole objects such as an optimizer); a grid
    tries each."""

    type: Literal["choice", "grid"]
    values: list[JsonValue] = Field(min_length=1, max_length=MAX_VALUES)


class Uniform(StrictModel):
    """A float drawn uniformly from [low, high] (random and ASHA; not a grid)."""

    type: Literal["uniform"]
    low: float
    high: float

    @model_validator(mode="after")
    def _ordered(self) -> Uniform:
        if not self.low < self.high:
            raise ValueError("low must be less than high")
        return self


class LogUniform(Uniform):
    """A float drawn uniformly on a log scale: learning rates."""

    type: Literal["loguniform"]  # type: ignore[assignment]

    @field_validator("low")
    @classmethod
    def _positive(cls, low: float) -> float:
        if low <= 0:
            raise ValueError("a log-uniform range starts above 0")
        return low


class IntRange(StrictModel):
    """An integer from low to high (inclusive) in steps of ``step``: units, batch sizes."""

    type: Literal["int"]
    low: int
    high: int
    step: int = Field(default=1, ge=1)

    @model_validator(mode="after")
    def _ordered(self) -> IntRange:
        if not self.low <= self.high:
            raise ValueError("low must not exceed high")
        return self

    @property
    def count(self) -> int:
        return (self.high - self.low) // self.step + 1

    @property
    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


Param = Annotated[Choice | Uniform | LogUniform | IntRange, Field(discriminator="type")]


class Objective(StrictModel):
    metric: str = Field(
        default="val_loss",
        pattern=r"^val_[a-z_0-9]+$",
        description="A validation metric the trials log (val_loss, val_accuracy, …).",
    )
    direction: Literal["min", "max"] = "min"


class GridStrategy(StrictModel):
    """Every combination of the space's values."""

    type: Literal["grid"]

    @property
    def configurations(self) -> Literal["grid"]:
        return "grid"


class RandomStrategy(StrictModel):
    """``max_trials`` configurations drawn by Optuna's RandomSampler from the sweep's seed."""

    type: Literal["random"]

    @property
    def configurations(self) -> Literal["random"]:
        return "random"


class AshaStrategy(StrictModel):
    """Asynchronous successive halving (Li et al. 2018) with Optuna's
    SuccessiveHalvingPruner: every trial trains ``min_epochs``; at each rung (min_epochs ×
    reduction_factor^k epochs) only the best 1/reduction_factor of the trials that reached
    it so far train on, the others stop there."""

    type: Literal["asha"]
    min_epochs: int = Field(default=1, ge=1, le=1000)
    max_epochs: int | None = Field(
        default=None, ge=1, le=10_000, description="Default: the base spec's fit.epochs."
    )
    reduction_factor: int = Field(default=3, ge=2, le=10)
    configurations: Literal["random", "grid"] = Field(
        default="random",
        description="random: max_trials draws from the space (Optuna's RandomSampler); "
        "grid: every combination of its listed values, in an order drawn from the seed.",
    )


Strategy = Annotated[GridStrategy | RandomStrategy | AshaStrategy, Field(discriminator="type")]


class Budget(StrictModel):
    epochs: int | None = Field(
        default=None, gt=0, description="Epochs of all trials together; no new trial past it."
    )
    seconds: float | None = Field(
        default=None, gt=0, description="Wall time from submit; past it trials stop."
    )


class SweepJobSpec(StrictModel):
    kind: Literal["sweep"]
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=PRINTABLE)
    seed: int = Field(
        default=0, ge=0, le=2**31 - 1, description="Derives each trial's seed and the draws."
    )
    base: dict[str, JsonValue] = Field(
        description="A train or transfer job spec: what every trial trains, the space's fields set."
    )
    space: dict[str, Param] = Field(
        min_length=1,
        max_length=16,
        description='Fields of the base spec by path ("compile.optimizer.learning_rate", '
        '"model.layers[2].activation") and what each may be.',
    )
    objective: Objective = Field(default_factory=Objective)
    strategy: Strategy = Field(default_factory=lambda: GridStrategy(type="grid"))
    max_trials: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRIALS,
        description="Trials at most (default: the whole grid; 16 for random and ASHA).",
    )
    parallelism: int = Field(default=2, ge=1, le=64, description="Trials queued or running.")
    budget: Budget | None = None
    reuse: bool = Field(
        default=True,
        description="A trial equal to a job of the tenant that succeeded (spec, data, seed, "
        "library versions) takes that job's result instead of training again.",
    )

    @field_validator("space")
    @classmethod
    def _paths(cls, space: dict[str, Param]) -> dict[str, Param]:
        for path in space:
            if not re.match(PATH, path):
                raise ValueError(
                    f"{path!r} is not a field path: names joined by dots, list items by "
                    '[index], as "model.layers[2].activation"'
                )
            if path.split(".")[0].split("[")[0] in ("kind", "seed"):
                raise ValueError(f"{path}: a sweep sets each trial's kind and seed itself")
        return space

    @field_validator("base")
    @classmethod
    def _trainable_base(cls, base: dict[str, Any]) -> dict[str, Any]:
        if base.get("kind", "train") not in ("train", "transfer"):
            raise ValueError('the base of a sweep is a "train" or "transfer" spec')
        return base


def parse_path(path: str) -> list[str | int]:
    """``model.layers[2].activation`` → ``["model", "layers", 2, "activation"]``."""
    parts: list[str | int] = []
    for name, index in re.findall(r"([a-z_][a-z0-9_]*)|\[([0-9]+)\]", path):
        parts.append(name if name else int(index))
    return parts


def set_path(spec: dict[str, Any], path: str, value: Any) -> None:
    """Set ``path`` in ``spec`` (a JSON document, changed in place). List items must exist;
    object fields the base left out are created (``fit.early_stopping.patience``)."""
    parts = parse_path(path)
    node: Any = spec
    for depth, part in enumerate(parts[:-1]):
        if isinstance(part, int):
            if not isinstance(node, list) or part >= len(node):
                raise KeyError(f"{_shown(parts[: depth + 1])} is not in the base spec")
            node = node[part]
        else:
            if not isinstance(node, dict):
                raise KeyError(f"{_shown(parts[:depth])} has no field {part}")
            node = node.setdefault(part, {})
    last = parts[-1]
    if isinstance(last, int):
        if not isinstance(node, list) or last >= len(node):
            raise KeyError(f"{_shown(parts)} is not in the base spec")
        node[last] = value
    elif isinstance(node, dict):
        node[last] = value
    else:
        raise KeyError(f"{_shown(parts[:-1])} has no field {last}")


def _shown(parts: list[str | int]) -> str:
    text = ""
    for part in parts:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text
