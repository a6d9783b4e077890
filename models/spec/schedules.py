"""Learning-rate schedules, as pure functions of the step or epoch count.

One Keras callback (``worker/build/schedules.py``) sets the optimizer's learning rate from
``rate_at`` before each step or epoch, so the saved model's optimizer holds a plain float
and the downloaded file loads in plain Keras. ``reduce_on_plateau`` is the exception: it
reacts to a metric, so it maps to Keras's ``ReduceLROnPlateau`` callback.
"""

from __future__ import annotations

import math
from typing import Annotated, Literal

from pydantic import Field, model_validator

from models.spec.base import StrictModel

PositiveRate = Annotated[float, Field(gt=0, le=10)]
Per = Literal["step", "epoch"]


class PowerSchedule(StrictModel):
    """η(t) = η0 / (1 + t/s)^c — Géron's power scheduling (Keras 2's ``decay`` is c=1)."""

    type: Literal["power"]
    initial_learning_rate: PositiveRate
    steps: float = Field(gt=0, description="s: after s steps (or epochs) η is η0 / 2^c.")
    power: float = Field(default=1.0, gt=0, description="c")
    per: Per = "step"

    def rate_at(self, t: int) -> float:
        return self.initial_learning_rate / (1 + t / self.steps) ** self.power


class ExponentialSchedule(StrictModel):
    """η(t) = η0 · 0.1^(t/s): divided by 10 every s steps (or epochs)."""

    type: Literal["exponential"]
    initial_learning_rate: PositiveRate
    steps: float = Field(gt=0, description="s: η drops tenfold every s steps (or epochs).")
    per: Per = "epoch"

    def rate_at(self, t: int) -> float:
        return self.initial_learning_rate * 0.1 ** (t / self.steps)


class PiecewiseConstantSchedule(StrictModel):
    """``values[i]`` while t < ``boundaries[i]``; ``values[-1]`` after the last boundary."""

    type: Literal["piecewise_constant"]
    boundaries: list[Annotated[int, Field(ge=0)]] = Field(min_length=1, max_length=64)
    values: list[PositiveRate] = Field(min_length=2, max_length=65)
    per: Per = "epoch"

    @model_validator(mode="after")
    def _shape(self) -> PiecewiseConstantSchedule:
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError("values needs exactly one more entry than boundaries")
        if sorted(set(self.boundaries)) != list(self.boundaries):
            raise ValueError("boundaries must be strictly increasing")
        return self

    @property
    def initial_learning_rate(self) -> float:
        return self.values[0]

    def rate_at(self, t: int) -> float:
        for boundary, value in zip(self.boundaries, self.values, strict=False):
            if t < boundary:
                return value
        return self.values[-1]


class OneCycleSchedule(StrictModel):
    """1cycle (Smith 2018): linear warm-up from ``max/div_factor`` to ``max_learning_rate``
    over the first ``pct_start`` of all steps, linearly back down over as many, then on to
    ``max/final_div_factor`` for the rest. Always per step; the worker supplies the total."""

    type: Literal["one_cycle"]
    max_learning_rate: PositiveRate
    pct_start: float = Field(default=0.45, gt=0, lt=0.5)
    div_factor: float = Field(default=10.0, ge=1)
    final_div_factor: float = Field(default=1000.0, ge=1)
    per: Literal["step"] = "step"

    @property
    def initial_learning_rate(self) -> float:
        return self.max_learning_rate / self.div_factor

    def rate_at(self, t: int, total_steps: int) -> float:
        peak, low = self.max_learning_rate, self.initial_learning_rate
        final = low / self.final_div_factor
        rise = max(1, math.floor(self.pct_start * total_steps))
        if t < rise:
            return low + (peak - low) * t / rise
        if t < 2 * rise:
            return peak - (peak - low) * (t - rise) / rise
        tail = max(1, total_steps - 2 * rise)
        return low - (low - final) * min(1.0, (t - 2 * rise) / tail)


class ReduceOnPlateauSchedule(StrictModel):
    """Performance scheduling: multiply η by ``factor`` when ``monitor`` stops improving for
    ``patience`` epochs (Keras's ``ReduceLROnPlateau``)."""

    type: Literal["reduce_on_plateau"]
    initial_learning_rate: PositiveRate
    monitor: str = Field(default="val_loss", pattern=r"^(val_)?[a-z_0-9]+$")
    factor: float = Field(default=0.5, gt=0, lt=1)
    patience: int = Field(default=5, ge=0)
    min_delta: float = Field(default=1e-4, ge=0)
    min_lr: float = Field(default=0.0, ge=0)
    per: Literal["epoch"] = "epoch"


FormulaSchedule = PowerSchedule | ExponentialSchedule | PiecewiseConstantSchedule
ScheduleSpec = Annotated[
    PowerSchedule
    | ExponentialSchedule
    | PiecewiseConstantSchedule
    | OneCycleSchedule
    | ReduceOnPlateauSchedule,
    Field(discriminator="type"),
]
