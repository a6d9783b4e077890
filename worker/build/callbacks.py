"""Callbacks built from the spec: learning-rate schedules and early stopping."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras

from models.spec import OptimizerSpec
from models.spec.job import EarlyStoppingSpec
from models.spec.schedules import OneCycleSchedule, ReduceOnPlateauSchedule


class ScheduleCallback(keras.callbacks.Callback):
    """Sets the optimizer's learning rate to ``rate_at(t)`` before every step (t = the
    optimizer's iteration count, so a resumed run continues the curve) or every epoch."""

    def __init__(self, rate_at: Callable[[int, int], float], per: str) -> None:
        super().__init__()
        self.rate_at = rate_at
        self.per = per
        self._step = 0
        self._total_steps = 1

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self._step = int(keras.ops.convert_to_numpy(self.model.optimizer.iterations))
        self._total_steps = max(
            1, int(self.params.get("epochs", 1)) * int(self.params.get("steps") or 1)
        )

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        if self.per == "epoch":
            self._set(self.rate_at(epoch, int(self.params.get("epochs", 1))))

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if self.per == "step":
            self._set(self.rate_at(self._step, self._total_steps))

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self._step += 1

    def _set(self, rate: float) -> None:
        self.model.optimizer.learning_rate = rate


def build_callbacks(
    optimizer: OptimizerSpec, early_stopping: EarlyStoppingSpec | None = None
) -> list[keras.callbacks.Callback]:
    callbacks: list[keras.callbacks.Callback] = []
    schedule = optimizer.schedule
    if isinstance(schedule, ReduceOnPlateauSchedule):
        callbacks.append(
            keras.callbacks.ReduceLROnPlateau(
                monitor=schedule.monitor,
                factor=schedule.factor,
                patience=schedule.patience,
                min_delta=schedule.min_delta,
                min_lr=schedule.min_lr,
            )
        )
    elif isinstance(schedule, OneCycleSchedule):
        callbacks.append(ScheduleCallback(schedule.rate_at, "step"))
    elif schedule is not None:
        formula = schedule
        callbacks.append(ScheduleCallback(lambda t, _total: formula.rate_at(t), formula.per))
    if early_stopping is not None:
        stop = early_stopping
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor=stop.monitor,
                patience=stop.patience,
                min_delta=stop.min_delta,
                restore_best_weights=stop.restore_best_weights,
            )
        )
    return callbacks
