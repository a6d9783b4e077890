"""Transfer: a clone of the base's kept layers under a new head, and the trainable set of
each phase."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import keras

from models.spec.transfer import Phase, TransferJobSpec
from models.spec.transfer_lint import trainable_base_layers
from uploads.archives import MAX_EXPANDED_BYTES, InvalidUpload
from uploads.model_files import ModelFormat, inspect_model_file
from worker.build.model import build_layer, count_params, keras_name
from worker.errors import JobError


def build_transfer_model(spec: TransferJobSpec, base_path: Path) -> tuple[keras.Model, int]:
    """The new model and how many leading layers came from the base. The base file is
    only read; the clone owns copies of its weights."""
    base = load_base(base_path)
    clone = keras.models.clone_model(base)
    clone.set_weights(base.get_weights())
    layers = [layer for layer in clone.layers if not isinstance(layer, keras.layers.InputLayer)]
    try:
        kept = spec.cut.kept([layer.name for layer in layers])
    except ValueError as exc:
        raise JobError("invalid_data", f"cut: {exc}") from exc
    model = keras.Sequential(
        [
            keras.Input(shape=tuple(base.input_shape[1:])),
            *layers[:kept],
            *(build_layer(layer) for layer in spec.head_layers),
        ],
        name=keras_name(spec.name),
    )
    return model, kept


def load_base(path: Path) -> keras.Model:
    """The base model, checked again as an upload is checked (a file stored under older
    rules, or by a job, must pass today's allow-list whatever Keras is installed), then
    loaded in Keras's safe mode, which refuses code it would otherwise deserialize."""
    format: ModelFormat = "h5" if path.suffix == ".h5" else "keras"
    with tempfile.TemporaryDirectory() as workdir:
        try:
            inspect_model_file(path, format, Path(workdir), MAX_EXPANDED_BYTES)
        except InvalidUpload as exc:
            raise JobError("invalid_data", f"the base model is not accepted: {exc}") from exc
    return keras.models.load_model(path, compile=False, safe_mode=True)


def apply_phase(model: keras.Model, kept: int, phase: Phase) -> dict[str, Any]:
    """Set every layer's ``trainable`` for ``phase``; what the job records about it.
    Frozen BatchNormalization layers run in inference mode (Keras 3 semantics)."""
    base_names = [layer.name for layer in model.layers[:kept]]
    trained = trainable_base_layers(phase, base_names)
    for index, layer in enumerate(model.layers):
        layer.trainable = index >= kept or layer.name in trained
    total, trainable, non_trainable = count_params(model)
    return {
        "name": phase.name,
        "epochs": phase.epochs,
        "trainable_layers": [layer.name for layer in model.layers if layer.trainable],
        "frozen_layers": [layer.name for layer in model.layers if not layer.trainable],
        "params": {"total": total, "trainable": trainable, "non_trainable": non_trainable},
    }
