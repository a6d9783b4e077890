"""Early stopping and reduce-on-plateau go on after a resume where they stopped: their
counters and best value (and early stopping's best weights) pass through a checkpoint's
JSON, and a resumed callback acts at the same epoch as one that was never interrupted.
Real Keras callbacks on a real model, fed the epoch logs a fit would give them."""

from __future__ import annotations

import json
from typing import Any

import keras
import numpy as np

from worker.build.callbacks import ResumableEarlyStopping, ResumableReduceLROnPlateau

LOSSES = [1.0, 0.5, 0.6, 0.7, 0.8, 0.9]


def tiny_model() -> keras.Model:
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1), loss="mse")
    return model


def weights_of_epoch(epoch: int) -> list[np.ndarray]:
    """Distinct weights per epoch, as training would leave them."""
    return [np.full((3, 2), float(epoch)), np.full((2,), float(epoch))]


def run_epochs(callback: keras.callbacks.Callback, model: keras.Model, epochs: range) -> None:
    for epoch in epochs:
        model.set_weights(weights_of_epoch(epoch))
        callback.on_epoch_end(epoch, {"val_loss": LOSSES[epoch]})
        if model.stop_training:
            break


def through_json(state: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(json.dumps(state, allow_nan=False))
    return loaded


def early_stopping(**kwargs: Any) -> ResumableEarlyStopping:
    return ResumableEarlyStopping(
        **{"monitor": "val_loss", "patience": 3, "restore_best_weights": True, **kwargs}
    )


def test_early_stopping_resumed_stops_where_an_uninterrupted_one_stops() -> None:
    whole_model = tiny_model()
    whole = early_stopping()
    whole.set_model(whole_model)
    whole.on_train_begin()
    run_epochs(whole, whole_model, range(6))
    whole.on_train_end()
    assert whole.stopped_epoch == 4  # the third epoch without improvement on 0.5

    # The same run, killed after epoch 3 (0-based 2) and resumed from its checkpoint.
    first_model = tiny_model()
    first = early_stopping()
    first.set_model(first_model)
    first.on_train_begin()
    run_epochs(first, first_model, range(3))
    state = through_json(first.state())
    best = first.best_weights
    assert state == {"wait": 1, "stopped_epoch": 0, "best": 0.5, "best_epoch": 1}

    resumed_model = tiny_model()
    resumed = early_stopping(resumed=state, best_weights=best)
    resumed.set_model(resumed_model)
    resumed.on_train_begin()
    run_epochs(resumed, resumed_model, range(3, 6))
    resumed.on_train_end()
    assert resumed.stopped_epoch == whole.stopped_epoch
    # Both end on the best epoch's weights (epoch 1), not the resumed attempt's own best.
    for got, want in zip(resumed_model.get_weights(), weights_of_epoch(1), strict=True):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(whole_model.get_weights(), weights_of_epoch(1), strict=True):
        np.testing.assert_array_equal(got, want)

    # A fresh callback (what a retry had before) would have trained on past it.
    fresh_model = tiny_model()
    fresh = early_stopping()
    fresh.set_model(fresh_model)
    fresh.on_train_begin()
    run_epochs(fresh, fresh_model, range(3, 6))
    assert fresh.stopped_epoch == 0


def test_best_is_the_epoch_whose_model_early_stopping_keeps() -> None:
    model = tiny_model()
    callback = early_stopping()
    callback.set_model(model)
    callback.on_train_begin()
    kept = []
    for epoch in range(4):
        run_epochs(callback, model, range(epoch, epoch + 1))
        kept.append(callback.best_is(epoch))
    assert kept == [True, True, False, False]
    assert not early_stopping(restore_best_weights=False).best_is(0)


def test_reduce_on_plateau_resumed_lowers_the_rate_when_an_uninterrupted_one_does() -> None:
    def plateau(**kwargs: Any) -> ResumableReduceLROnPlateau:
        return ResumableReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=2, **kwargs)

    def rates(
        callback: ResumableReduceLROnPlateau, model: keras.Model, epochs: range
    ) -> list[float]:
        seen = []
        for epoch in epochs:
            callback.on_epoch_end(epoch, {"val_loss": LOSSES[epoch]})
            seen.append(float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)))
        return seen

    whole_model = tiny_model()
    whole = plateau()
    whole.set_model(whole_model)
    whole.on_train_begin()
    uninterrupted = rates(whole, whole_model, range(6))

    first_model = tiny_model()
    first = plateau()
    first.set_model(first_model)
    first.on_train_begin()
    before = rates(first, first_model, range(3))
    state = through_json(first.state())

    resumed_model = tiny_model()
    resumed_model.optimizer.learning_rate = before[-1]  # the checkpoint holds the rate
    resumed = plateau(resumed=state)
    resumed.set_model(resumed_model)
    resumed.on_train_begin()
    after = rates(resumed, resumed_model, range(3, 6))
    assert before + after == uninterrupted
    assert uninterrupted[-1] < uninterrupted[0]


def test_a_state_before_any_improvement_survives_json() -> None:
    """Infinite or unset bests are stored as null and leave Keras's own reset value."""
    callback = ResumableReduceLROnPlateau(monitor="val_loss")
    callback.set_model(tiny_model())
    callback.on_train_begin()
    state = through_json(callback.state())
    assert state["best"] is None
    resumed = ResumableReduceLROnPlateau(monitor="val_loss", resumed=state)
    resumed.set_model(tiny_model())
    resumed.on_train_begin()
    assert resumed.best == callback.best
