"""Learning-rate schedules, decay and gradient clipping, checked inside real Keras fits."""

from __future__ import annotations

from itertools import pairwise
from typing import Any

import keras
import numpy as np
import pytest

from models.spec import CompileSpec, FitSpec
from models.spec.optimizers import SGD
from models.spec.schedules import OneCycleSchedule
from worker.build.callbacks import build_callbacks
from worker.build.model import build_optimizer

STEPS_PER_EPOCH = 4  # 32 samples, batch 8


class RateRecorder(keras.callbacks.Callback):
    """The learning rate each step actually trains with (after the schedule set it)."""

    def __init__(self) -> None:
        super().__init__()
        self.rates: list[float] = []

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        self.rates.append(float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)))


def fit_with(optimizer_spec: dict[str, Any], epochs: int = 3, **fit: Any) -> list[float]:
    keras.backend.clear_session()
    compile_spec = CompileSpec.model_validate({"loss": "mse", "optimizer": optimizer_spec})
    fit_spec = FitSpec.model_validate({"epochs": epochs, **fit})
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(loss="mse", optimizer=build_optimizer(compile_spec.optimizer))
    recorder = RateRecorder()
    callbacks = [*build_callbacks(compile_spec.optimizer, fit_spec.early_stopping), recorder]
    x = np.linspace(-1, 1, 64, dtype="float32").reshape(32, 2)
    model.fit(x, x[:, :1], epochs=epochs, batch_size=8, callbacks=callbacks, verbose=0)
    return recorder.rates


class TestFormulaSchedules:
    def test_power_per_step(self) -> None:
        rates = fit_with(
            {
                "type": "SGD",
                "learning_rate": {
                    "type": "power",
                    "initial_learning_rate": 0.1,
                    "steps": 3,
                    "power": 2,
                    "per": "step",
                },
            }
        )
        expected = [0.1 / (1 + t / 3) ** 2 for t in range(3 * STEPS_PER_EPOCH)]
        np.testing.assert_allclose(rates, expected, rtol=1e-6)

    def test_exponential_per_epoch(self) -> None:
        rates = fit_with(
            {
                "type": "SGD",
                "learning_rate": {
                    "type": "exponential",
                    "initial_learning_rate": 0.01,
                    "steps": 20,
                    "per": "epoch",
                },
            }
        )
        expected = [0.01 * 0.1 ** (epoch / 20) for epoch in range(3) for _ in range(4)]
        np.testing.assert_allclose(rates, expected, rtol=1e-6)

    def test_exponential_per_step(self) -> None:
        rates = fit_with(
            {
                "type": "Adam",
                "learning_rate": {
                    "type": "exponential",
                    "initial_learning_rate": 0.01,
                    "steps": 5,
                    "per": "step",
                },
            }
        )
        np.testing.assert_allclose(rates, [0.01 * 0.1 ** (t / 5) for t in range(12)], rtol=1e-6)

    def test_piecewise_constant_per_epoch(self) -> None:
        rates = fit_with(
            {
                "type": "SGD",
                "learning_rate": {
                    "type": "piecewise_constant",
                    "boundaries": [1, 2],
                    "values": [0.1, 0.05, 0.01],
                },
            }
        )
        np.testing.assert_allclose(rates, [0.1] * 4 + [0.05] * 4 + [0.01] * 4, rtol=1e-6)

    def test_one_cycle_rises_to_max_then_anneals(self) -> None:
        spec = {"type": "one_cycle", "max_learning_rate": 0.1, "pct_start": 0.25}
        rates = fit_with({"type": "SGD", "learning_rate": spec}, epochs=4)
        schedule = OneCycleSchedule.model_validate(spec)
        total = 4 * STEPS_PER_EPOCH
        np.testing.assert_allclose(
            rates, [schedule.rate_at(t, total) for t in range(total)], rtol=1e-6
        )
        peak = int(np.argmax(rates))
        assert rates[peak] == pytest.approx(0.1)
        assert rates[0] == pytest.approx(0.01)
        assert all(a <= b for a, b in pairwise(rates[: peak + 1]))
        assert all(a >= b for a, b in pairwise(rates[peak:]))
        assert rates[-1] < 0.01


def test_reduce_on_plateau_multiplies_by_factor_each_stalled_epoch() -> None:
    # Epoch 1 sets the baseline; with min_delta larger than any improvement every later
    # epoch is a plateau, so the rate halves after epochs 2 and 3.
    rates = fit_with(
        {
            "type": "SGD",
            "learning_rate": {
                "type": "reduce_on_plateau",
                "initial_learning_rate": 0.1,
                "monitor": "loss",
                "factor": 0.5,
                "patience": 0,
                "min_delta": 1e9,
            },
        },
        epochs=4,
    )
    np.testing.assert_allclose(rates, [0.1] * 8 + [0.05] * 4 + [0.025] * 4, rtol=1e-6)


def test_keras2_decay_is_lr_over_one_plus_decay_times_iteration() -> None:
    rates = fit_with({"type": "SGD", "lr": 0.01, "decay": 1e-1})
    np.testing.assert_allclose(rates, [0.01 / (1 + 0.1 * t) for t in range(12)], rtol=1e-6)


def test_early_stopping_stops_and_restores() -> None:
    fit_spec = FitSpec.model_validate(
        {"epochs": 50, "early_stopping": {"monitor": "loss", "patience": 0, "min_delta": 1e9}}
    )
    optimizer = SGD(type="SGD")
    [stopper] = build_callbacks(optimizer, fit_spec.early_stopping)
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(loss="mse", optimizer="sgd")
    history = model.fit(np.ones((8, 1)), np.ones((8, 1)), epochs=50, callbacks=[stopper], verbose=0)
    assert len(history.history["loss"]) == 2  # epoch 1 sets the baseline, epoch 2 stalls
    assert isinstance(stopper, keras.callbacks.EarlyStopping)
    assert stopper.restore_best_weights


class TestGradientClipping:
    """One SGD step (lr 1) on w·x with x = 100: the raw gradient is huge, the step is not."""

    @staticmethod
    def step(**clipping: float) -> float:
        keras.backend.clear_session()
        spec = CompileSpec.model_validate(
            {"loss": "mse", "optimizer": {"type": "SGD", "learning_rate": 1.0, **clipping}}
        )
        model = keras.Sequential(
            [keras.Input((1,)), keras.layers.Dense(1, use_bias=False, kernel_initializer="ones")]
        )
        model.compile(loss="mse", optimizer=build_optimizer(spec.optimizer))
        model.fit(np.array([[100.0]]), np.array([[0.0]]), epochs=1, batch_size=1, verbose=0)
        return float(model.layers[0].kernel.numpy()[0, 0])

    def test_clipvalue(self) -> None:
        assert self.step(clipvalue=0.1) == pytest.approx(0.9)

    def test_clipnorm(self) -> None:
        assert self.step(clipnorm=0.5) == pytest.approx(0.5)

    def test_global_clipnorm(self) -> None:
        assert self.step(global_clipnorm=0.25) == pytest.approx(0.75)

    def test_unclipped_step_is_huge(self) -> None:
        assert self.step() < -1000
