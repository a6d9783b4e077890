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

from models.kinds import kind_of
from models.spec import AnyJobSpec
from models.tables import ArtifactFormat
from worker.artifacts import JobArtifacts
from worker.build.callbacks import (
    KeepsBestModel,
    Resumable,
    build_callbacks,
    sets_rate_every_step,
)
from worker.build.model import compile_model, count_params
from worker.control import Control
from worker.data import load_dataset
from worker.errors import JobError
from worker.execution import plan_execution, shards_need_even_splits
from worker.jobstore import JobStore
from worker.kinds import BuildContext, build_for
from worker.outcomes import chance_accuracy
from worker.resolve import Resolver


@dataclass(frozen=True)
class Resume:
    """Where a retry picks up: after ``epoch`` epochs, from the checkpoint at the URI, with
    what the stateful callbacks knew then and the best epoch's model (early stopping)."""

    epoch: int
    checkpoint_uri: str
    best_uri: str | None = None
    callback_state: dict[str, Any] | None = None


@dataclass(frozen=True)
class TrainResult:
    model: keras.Model
    test_metrics: dict[str, float]
    #: Accuracy of always answering the most common class; None where targets are no classes.
    chance: float | None = None


class ProgressCallback(keras.callbacks.Callback):
    """Writes one metrics row per epoch (with the learning rate the epoch started with and
    its wall time), feeds batch progress to the control thread, turns a non-finite loss
    into ``nan_loss``, and stops within one batch once the control thread says so."""

    def __init__(self, store: JobStore, control: Control, phase: int | None = None) -> None:
        super().__init__()
        self.store = store
        self.control = control
        self.phase = phase
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
                f"by batch {batch + 1}; try a lower learning rate or gradient clipping "
                "(clipnorm / clipvalue)",
            )
        # With several steps per execution Keras reports the execution's last step as if
        # it were whole; an epoch's last execution may be cut short.
        steps = self.control.progress.steps
        self.control.progress.batch = min(batch + 1, steps) if steps else batch + 1
        self.control.raise_if_stopping()

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        values = {key: float(value) for key, value in (logs or {}).items()}
        values["learning_rate"] = self._epoch_lr
        if self.phase is not None:
            values["phase"] = float(self.phase + 1)
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
    """After every epoch: weights, optimizer state and step count, and what the stateful
    callbacks (listed before this one) know, for a retry to resume; the best epoch's model
    too, when early stopping keeps one and this epoch is it."""

    def __init__(
        self, store: JobStore, artifacts: JobArtifacts, others: list[keras.callbacks.Callback]
    ) -> None:
        super().__init__()
        self.store = store
        self.artifacts = artifacts
        self.stateful = [callback for callback in others if isinstance(callback, Resumable)]
        self.keeping_best = [
            callback for callback in others if isinstance(callback, KeepsBestModel)
        ]

    def on_epoch_end(self, epoch: int, logs: dict[str, Any] | None = None) -> None:
        formats = [ArtifactFormat.CHECKPOINT]
        if any(callback.best_is(epoch) for callback in self.keeping_best):
            formats.append(ArtifactFormat.BEST)
        stored = self.artifacts.save_epoch_state(self.model, epoch + 1, formats)
        state = {callback.state_key: callback.state() for callback in self.stateful}
        superseded = self.store.record_checkpoint(epoch + 1, stored, state)
        self.artifacts.delete(superseded)


def _steps_per_epoch(examples: int, batch_size: int, validation_split: float) -> int:
    fitted = math.ceil(examples * (1.0 - validation_split))  # as Keras splits
    return max(1, math.ceil(fitted / batch_size))


def _even(array: Any, devices: int) -> Any:
    """The first examples of ``array``, as many as split evenly over ``devices``."""
    return array[: len(array) - len(array) % devices]


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
    spec: AnyJobSpec,
    store: JobStore,
    control: Control,
    artifacts: JobArtifacts,
    resolver: Resolver,
    resume: Resume | None = None,
    devices: list[str] | None = None,
    *,
    extra_callbacks: list[keras.callbacks.Callback] | None = None,
) -> TrainResult:
    """Train ``spec``; with ``resume``, continue from its checkpoint. Called under the
    spec's dtype policy (:func:`worker.execution.dtype_policy`) and, for several
    ``devices``, their data parallelism (:func:`worker.execution.data_parallel`)."""
    if spec.seed is not None:
        keras.utils.set_random_seed(spec.seed)
    data = load_dataset(spec.dataset, resolver.dataset)
    fit_plan = kind_of(spec).fit_plan(spec)
    resumed = artifacts.load(resume.checkpoint_uri) if resume else None
    best_weights = (
        artifacts.load(resume.best_uri).get_weights() if resume and resume.best_uri else None
    )
    built = build_for(spec, BuildContext(data, resolver, resumed))
    if resume:
        store.log("info", f"resuming from the checkpoint after epoch {resume.epoch}")
    model = built.model
    store.record_model(count_params(built.export(model)), library_versions(), spec.total_epochs)
    x_train, x_test = data.x_train, data.x_test
    y_train, y_test = (x_train, x_test) if fit_plan.reconstruct else (data.y_train, data.y_test)

    # Held-out validation examples by position (fit.validation), fixed for every stage.
    fitted, held = spec.fit.held_out(len(x_train))
    validation_data = None if held is None else (x_train[held], y_train[held])
    x_train, y_train = x_train[fitted], y_train[fitted]
    validation_split = spec.fit.validation_split
    if devices and shards_need_even_splits(len(devices)):
        # Keras's split done here (the last fraction validates), so that both parts can be
        # cut to a multiple of the devices; at most devices − 1 examples of each go unused.
        if validation_split:
            kept = math.floor(len(x_train) * (1 - validation_split))
            validation_data = (x_train[kept:], y_train[kept:])
            x_train, y_train = x_train[:kept], y_train[:kept]
            validation_split = 0.0
        even = len(devices)
        x_train, y_train = _even(x_train, even), _even(y_train, even)
        x_test, y_test = _even(x_test, even), _even(y_test, even)
        if validation_data is not None:
            validation_data = (_even(validation_data[0], even), _even(validation_data[1], even))

    done = resume.epoch if resume else 0
    start = 0
    for index, stage in enumerate(fit_plan.stages):
        end = start + stage.epochs
        if done >= end:
            start = end
            continue
        midway = resume if resume and start < done < end else None
        stage_callbacks = build_callbacks(
            stage.optimizer,
            fit_plan.early_stopping,
            resumed=midway.callback_state if midway else None,
            best_weights=best_weights if midway else None,
        )
        if done <= start:
            # A fresh stage: (un)freeze, then recompile, as Keras needs after a change of
            # trainable flags. A stage resumed midway keeps the checkpoint's compile state.
            record = built.prepare(model, stage) if built.prepare else None
            if record is not None:
                store.record_phase(index, record)
            compile_model(
                model, fit_plan.loss, stage.optimizer, fit_plan.metrics, spec.fit.jit_compile
            )
        steps_per_epoch = _steps_per_epoch(len(x_train), spec.batch_size, validation_split)
        plan = plan_execution(
            count_params(model)[1],
            spec.batch_size,
            steps_per_epoch,
            per_step_callbacks=sets_rate_every_step(stage_callbacks),
            asked=spec.fit.steps_per_execution,
            precision=spec.fit.precision,
            jit_compile=bool(model.jit_compile),
            devices=devices,
        )
        # Set on the compiled model (a resumed one keeps its optimizer state): Keras reads
        # it when fit builds the train function.
        model.steps_per_execution = plan.steps_per_execution
        store.record_execution(
            index,
            plan.record(),
            plan.step_seconds * steps_per_epoch if plan.step_seconds else None,
        )
        callbacks = [
            *stage_callbacks,
            CheckpointCallback(store, artifacts, stage_callbacks),
            # Progress goes last: it reads the learning rate the schedule callbacks just
            # set, and writes an epoch's row only once its checkpoint exists.
            ProgressCallback(store, control, phase=index if len(fit_plan.stages) > 1 else None),
            # After progress: a sweep's rung decision reads the epoch just recorded.
            *(extra_callbacks or []),
        ]
        try:
            model.fit(
                x_train,
                y_train,
                epochs=end,
                initial_epoch=max(start, done),
                batch_size=spec.batch_size,
                validation_split=validation_split,
                validation_data=validation_data,
                shuffle=spec.fit.shuffle,
                callbacks=callbacks,
                verbose=0,
            )
        except ValueError as exc:
            # Keras checks shapes and dtypes up front and says what is wrong in a ValueError.
            raise JobError("invalid_data", f"the data does not fit the model: {exc}") from exc
        start = end
    judged_on = data.y_test if len(data.y_test) else data.y_train
    chance = None if fit_plan.reconstruct else chance_accuracy(judged_on, data.n_classes)
    test_metrics: dict[str, float] = {}
    if len(x_test):
        evaluation = model.evaluate(
            x_test, y_test, batch_size=spec.batch_size, return_dict=True, verbose=0
        )
        test_metrics = {key: float(value) for key, value in evaluation.items()}
        if not all(math.isfinite(value) for value in test_metrics.values()):
            # Training stayed finite, so the test inputs take the model where it overflows.
            bad = sorted(key for key, value in test_metrics.items() if not math.isfinite(value))
            raise JobError(
                "invalid_data",
                f"evaluating on the test split gave non-finite {', '.join(bad)}: its inputs "
                "reach values the trained model overflows on; check their range and "
                "preprocessing (the training split's statistics apply to it)",
            )
    return TrainResult(built.export(model), test_metrics, chance)
