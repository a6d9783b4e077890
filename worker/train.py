"""The fit loop: seed, load data, build (or resume), compile, fit with progress,
checkpoint and schedule callbacks, evaluate."""

from __future__ import annotations

import math
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from typing import Any

import keras

from models.spec import TrainJobSpec
from worker.artifacts import ArtifactStore
from worker.build.callbacks import build_callbacks
from worker.build.model import build_model, compile_model, count_params
from worker.control import Control
from worker.data import load_dataset
from worker.errors import JobError
from worker.jobstore import JobStore


@dataclass(frozen=True)
class TrainResult:
    model: keras.Model
    test_metrics: dict[str, float]


class ProgressCallback(keras.callbacks.Callback):
    """Writes one metrics row per epoch (with the learning rate the epoch started with and
    its wall time), feeds batch progress to the control thread, turns a non-finite loss
    into ``nan_loss``, and stops within one batch once the control thread says so."""

    def __init__(self, store: JobStore, control: Control) -> None:
        super().__init__()
        self.store = store
        self.control = control
        self._epoch_lr = 0.0
        self._epoch_started = time.monotonic()

    def on_train_begin(self, logs: dict[str, Any] | None = None) -> None:
        self.control.progress.steps = int(self.params.get("steps") or 0)
        self.control.raise_if_stopping()

    def on_epoch_begin(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        self.control.progress.epoch = epoch
        self.control.progress.batch = 0
        self._epoch_started = time.monotonic()

    def on_train_batch_begin(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        if batch == 0:
            # The rate the epoch starts with, after any schedule has set it; by on_epoch_end
            # a per-step schedule or decay has moved past it.
            self._epoch_lr = current_learning_rate(self.model.optimizer)

    def on_train_batch_end(self, batch: int, logs: dict[str, Any] | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)):
            raise JobError(
                "nan_loss",
                f"loss became {float(loss)} in epoch {self.control.progress.epoch + 1}, "
                f"batch {batch + 1}; try a lower learning rate or gradient clipping "
                "(clipnorm / clipvalue)",
            )
        self.control.progress.batch = batch + 1
        self.control.raise_if_stopping()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {key: float(value) for key, value in (logs or {}).items()}
        values["learning_rate"] = self._epoch_lr
        if not all(math.isfinite(value) for value in values.values()):
            bad = sorted(key for key, value in values.items() if not math.isfinite(value))
            raise JobError(
                "nan_loss",
                f"{', '.join(bad)} not finite after epoch {epoch + 1}; "
                "try a lower learning rate or gradient clipping (clipnorm / clipvalue)",
            )
        self.store.record_epoch(epoch + 1, values, time.monotonic() - self._epoch_started)
        self.control.progress.epoch = epoch + 1
        self.control.progress.batch = 0


class CheckpointCallback(keras.callbacks.Callback):
    """After every epoch: weights, optimizer state and step count, for a retry to resume."""

    def __init__(self, store: JobStore, artifacts: ArtifactStore) -> None:
        super().__init__()
        self.store = store
        self.artifacts = artifacts

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        checkpoint = self.artifacts.save_checkpoint(self.model, self.store.job_id)
        self.store.record_checkpoint(epoch + 1, checkpoint)


def current_learning_rate(optimizer: keras.optimizers.Optimizer) -> float:
    return float(keras.ops.convert_to_numpy(optimizer.learning_rate))


def library_versions() -> dict[str, str]:
    versions = {"python": platform.python_version(), "keras_backend": keras.backend.backend()}
    for package in ("keras", "tensorflow", "tensorflow-cpu", "jax", "numpy", "netkiln"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return versions


def train(
    spec: TrainJobSpec,
    store: JobStore,
    control: Control,
    artifacts: ArtifactStore,
    resume_after: int | None = None,
) -> TrainResult:
    """Train ``spec``; with ``resume_after`` (epochs done), continue from the checkpoint."""
    if spec.seed is not None:
        keras.utils.set_random_seed(spec.seed)
    data = load_dataset(spec.dataset)
    _check_labels(spec, data.n_classes)

    if resume_after:
        model = artifacts.load_checkpoint(store.job_id)
        store.log("info", f"resuming from the checkpoint after epoch {resume_after}")
    else:
        model = build_model(spec.model, name=spec.name)
        compile_model(model, spec.compile)
    store.record_model(count_params(model), library_versions(), spec.fit.epochs)

    callbacks = [
        *build_callbacks(spec.compile.optimizer, spec.fit),
        CheckpointCallback(store, artifacts),
        # Progress goes last: it reads the learning rate the schedule callbacks just set,
        # and writes an epoch's row only once its checkpoint exists.
        ProgressCallback(store, control),
    ]
    try:
        model.fit(
            data.x_train,
            data.y_train,
            epochs=spec.fit.epochs,
            initial_epoch=resume_after or 0,
            batch_size=spec.fit.batch_size,
            validation_split=spec.fit.validation_split,
            shuffle=spec.fit.shuffle,
            callbacks=callbacks,
            verbose=0,
        )
    except ValueError as exc:
        # Keras checks shapes and dtypes up front and says what is wrong in a ValueError.
        raise JobError("invalid_data", f"the data does not fit the model: {exc}") from exc
    evaluation = model.evaluate(
        data.x_test, data.y_test, batch_size=spec.fit.batch_size, return_dict=True, verbose=0
    )
    return TrainResult(model, {key: float(value) for key, value in evaluation.items()})


def _check_labels(spec: TrainJobSpec, n_classes: int) -> None:
    """A classification head narrower than the label range fails deep inside the
    backend with an opaque message; say what is wrong instead."""
    if spec.compile.loss not in {"sparse_categorical_crossentropy", "categorical_crossentropy"}:
        return
    last_dense = next(
        (layer for layer in reversed(spec.model.expanded_layers) if layer.type == "Dense"), None
    )
    units = getattr(last_dense, "units", None)
    if units is not None and units < n_classes:
        raise JobError(
            "invalid_data",
            f"the dataset has {n_classes} classes but the last Dense layer has {units} units",
        )
