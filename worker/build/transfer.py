"""Transfer: a clone of the base's kept layers under a new head, and the trainable set of
each phase."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import keras

from models.spec.transfer import Phase, TransferJobSpec
from models.spec.transfer_lint import trainable_base_layers
from worker.build.model import build_layer, count_params, keras_name
from worker.errors import JobError


def build_transfer_model(spec: TransferJobSpec, base_path: Path) -> tuple[keras.Model, int]:
    """The new model and how many leading layers came from the base. The base file is
    only read; the clone owns copies of its weights."""
    base = keras.models.load_model(base_path, compile=False)
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
