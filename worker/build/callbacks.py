"""Callbacks built from the spec: learning-rate schedules and early stopping.

Keras's ``EarlyStopping`` and ``ReduceLROnPlateau`` count epochs without improvement and
remember the best value (and early stopping the best weights); a retry that resumed from a
checkpoint with fresh ones would forget all of it, and stop (or lower the rate) later than
an uninterrupted run. The :class:`Resumable` versions here report that state with each
checkpoint and take it back when a retry resumes.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Protocol, runtime_checkable

import keras
import numpy as np

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


def sets_rate_every_step(callbacks: list[keras.callbacks.Callback]) -> bool:
    """Whether a callback sets the learning rate before every step: it must then see every
    step, so a fit runs one step per execution (worker/execution.py)."""
    return any(
        isinstance(callback, ScheduleCallback) and callback.per == "step" for callback in callbacks
    )


@runtime_checkable
class Resumable(Protocol):
    """A callback whose counters a checkpoint carries (``jobs.callback_state``)."""

    state_key: ClassVar[str]

    def state(self) -> dict[str, Any]: ...


@runtime_checkable
class KeepsBestModel(Protocol):
    """Early stopping that restores the best weights: the best epoch's model is stored
    beside the checkpoint (``ArtifactFormat.BEST``) whenever it changes."""

    def best_is(self, epoch: int) -> bool: ...


class _Counters:
    """Copy named attributes out as JSON (numbers; infinities as null) and back in after
    Keras's own ``on_train_begin`` has reset them."""

    COUNTERS: ClassVar[tuple[str, ...]]

    def __init__(self, resumed: dict[str, Any] | None) -> None:
        self._resumed = resumed

    def state(self) -> dict[str, Any]:
        return {name: _plain(getattr(self, name)) for name in self.COUNTERS}

    def _restore(self) -> None:
        if self._resumed is None:
            return
        for name in self.COUNTERS:
            value = self._resumed.get(name)
            if value is not None:  # null: keep the reset value (an infinity, or None)
                setattr(self, name, value)
        self._resumed = None  # only the fit that resumes, not a later stage's


def _plain(value: Any) -> int | float | None:
    if value is None:
        return None
    number = float(np.asarray(value))
    if not math.isfinite(number):
        return None
    return int(number) if isinstance(value, int | np.integer) else number


class ResumableEarlyStopping(_Counters, keras.callbacks.EarlyStopping):
    state_key = "early_stopping"
    COUNTERS = ("wait", "stopped_epoch", "best", "best_epoch")

    def __init__(
        self,
        *,
        resumed: dict[str, Any] | None = None,
        best_weights: list[np.ndarray] | None = None,
        **kwargs: Any,
    ) -> None:
        keras.callbacks.EarlyStopping.__init__(self, **kwargs)
        _Counters.__init__(self, resumed)
        self._resumed_weights = best_weights

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        if self._resumed is not None and self._resumed_weights is not None:
            self.best_weights = self._resumed_weights
        self._resumed_weights = None
        self._restore()

    def best_is(self, epoch: int) -> bool:
        """Whether the model after ``epoch`` (0-based) is now the best one kept."""
        return bool(
            self.restore_best_weights and self.best_weights is not None and self.best_epoch == epoch
        )


class ResumableReduceLROnPlateau(_Counters, keras.callbacks.ReduceLROnPlateau):
    state_key = "reduce_lr_on_plateau"
    COUNTERS = ("wait", "cooldown_counter", "best")

    def __init__(self, *, resumed: dict[str, Any] | None = None, **kwargs: Any) -> None:
        keras.callbacks.ReduceLROnPlateau.__init__(self, **kwargs)
        _Counters.__init__(self, resumed)

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        super().on_train_begin(logs)
        self._restore()


def build_callbacks(
    optimizer: OptimizerSpec,
    early_stopping: EarlyStoppingSpec | None = None,
    resumed: dict[str, Any] | None = None,
    best_weights: list[np.ndarray] | None = None,
) -> list[keras.callbacks.Callback]:
    """``resumed`` (a checkpoint's ``callback_state``) and ``best_weights``: where a
    retry resumes this stage midway."""
    resumed = resumed or {}
    callbacks: list[keras.callbacks.Callback] = []
    schedule = optimizer.schedule
    if isinstance(schedule, ReduceOnPlateauSchedule):
        callbacks.append(
            ResumableReduceLROnPlateau(
                monitor=schedule.monitor,
                factor=schedule.factor,
                patience=schedule.patience,
                min_delta=schedule.min_delta,
                min_lr=schedule.min_lr,
                resumed=resumed.get(ResumableReduceLROnPlateau.state_key),
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
            ResumableEarlyStopping(
                monitor=stop.monitor,
                patience=stop.patience,
                min_delta=stop.min_delta,
                restore_best_weights=stop.restore_best_weights,
                resumed=resumed.get(ResumableEarlyStopping.state_key),
                best_weights=best_weights,
            )
        )
    return callbacks
