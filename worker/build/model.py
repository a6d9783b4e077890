"""Build, compile and count a Keras model from a validated spec."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import keras

from models.spec import ModelSpec, OptimizerSpec
from models.spec.layers import PrimitiveLayerSpec
from worker.build.custom_layers import netkiln_layer


def build_layer(spec: PrimitiveLayerSpec) -> keras.layers.Layer:
    """The Keras layer ``spec.type`` names: netkiln's, or else ``keras.layers.<type>``."""
    layer_class = netkiln_layer(spec.type) or getattr(keras.layers, spec.type)
    return layer_class(**spec.keras_kwargs())


def build_model(spec: ModelSpec, name: str | None = None) -> keras.Sequential:
    layers: list[keras.layers.Layer] = [keras.Input(shape=tuple(spec.input_shape))]
    layers.extend(build_layer(layer) for layer in spec.expanded_layers)
    return keras.Sequential(layers, name=keras_name(name))


def build_optimizer(spec: OptimizerSpec) -> keras.optimizers.Optimizer:
    return keras.optimizers.get(spec.to_keras())


#: Keras's short names save into .h5 as ``keras.metrics.mse``, which Keras then cannot
#: load; the long names round-trip.
CANONICAL_NAMES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}


def compile_model(
    model: keras.Model,
    loss: str,
    optimizer: OptimizerSpec,
    metrics: Sequence[str] = (),
    jit_compile: Literal["auto"] | bool = "auto",
) -> None:
    """Under a mixed_float16 policy Keras wraps the optimizer in a LossScaleOptimizer."""
    model.compile(
        loss=CANONICAL_NAMES.get(loss, loss),
        optimizer=build_optimizer(optimizer),
        metrics=[CANONICAL_NAMES.get(name, name) for name in metrics],
        jit_compile=jit_compile,
    )


def count_params(model: keras.Model) -> tuple[int, int, int]:
    """(total, trainable, non-trainable), as ``model.summary()`` reports them."""
    trainable = sum(int(keras.ops.size(w)) for w in model.trainable_weights)
    non_trainable = sum(int(keras.ops.size(w)) for w in model.non_trainable_weights)
    return trainable + non_trainable, trainable, non_trainable


def keras_name(name: str | None) -> str | None:
    """A job's name (any printable text) as a model name every backend accepts as a scope
    name: ASCII letters, digits, ``_`` and ``-``, starting with a letter or digit, so
    ``étude #1`` becomes ``tude__1``. None where nothing is left; Keras then names the
    model itself."""
    if not name:
        return None
    cleaned = "".join(ch if ch.isascii() and (ch.isalnum() or ch in "_-") else "_" for ch in name)
    return cleaned.lstrip("_-")[:64] or None
