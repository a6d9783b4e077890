"""The chapter's layers that Keras lacks, and their plain-Keras export equivalents."""

from __future__ import annotations

from typing import Any

import keras
from keras import ops

#: The package netkiln's layers are registered under: a saved model names them
#: ``netkiln>RReLU``, and the builder finds them by a layer spec's ``type``.
PACKAGE = "netkiln"


@keras.saving.register_keras_serializable(package=PACKAGE)
class RReLU(keras.layers.Layer):
    """Randomized leaky ReLU: a fresh uniform slope in [lower, upper] per negative input in
    training, the mean slope at inference."""

    def __init__(
        self, lower: float = 1 / 8, upper: float = 1 / 3, seed: int | None = None, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.lower = lower
        self.upper = upper
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)

    @property
    def mean_slope(self) -> float:
        return (self.lower + self.upper) / 2

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if training:
            slope = keras.random.uniform(
                ops.shape(inputs),
                minval=self.lower,
                maxval=self.upper,
                dtype=inputs.dtype,
                seed=self.seed_generator,
            )
        else:
            slope = ops.cast(self.mean_slope, inputs.dtype)
        return ops.where(inputs >= 0, inputs, inputs * slope)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "lower": self.lower, "upper": self.upper, "seed": self.seed}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MCDropout(keras.layers.Dropout):
    """Dropout that stays active at inference (Monte Carlo dropout)."""

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        return super().call(inputs, training=True)


def netkiln_layer(name: str) -> type[keras.layers.Layer] | None:
    """netkiln's layer class registered as ``name``, if there is one."""
    found = keras.saving.get_registered_object(f"{PACKAGE}>{name}")
    return found if isinstance(found, type) and issubclass(found, keras.layers.Layer) else None


def plain_equivalent(layer: keras.layers.Layer) -> keras.layers.Layer:
    """A float32 layer plain Keras can load, computing what ``layer`` computes at
    inference."""
    common = {"name": layer.name, "trainable": layer.trainable, "dtype": "float32"}
    if isinstance(layer, RReLU):
        return keras.layers.LeakyReLU(negative_slope=layer.mean_slope, **common)
    if isinstance(layer, MCDropout):
        return keras.layers.Dropout(rate=layer.rate, seed=layer.seed, **common)
    return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})


def exportable(model: keras.Model) -> keras.Model:
    """``model`` with netkiln's custom layers swapped for plain-Keras equivalents, and in
    float32 if it trained under a mixed precision policy (fit.precision), so the
    downloaded file loads with ``keras.models.load_model`` and nothing else, computing in
    float32 like any model a user builds. Neither change touches the weights (the custom
    layers hold none; mixed precision keeps its variables in float32), so they carry over
    one for one; the optimizer is re-created from the compile config, without a mixed
    float16 loss scaler (its moments are not carried over)."""
    custom = any(isinstance(layer, RReLU | MCDropout) for layer in model.layers)
    mixed = any(layer.dtype_policy.name != "float32" for layer in model.layers)
    if not custom and not mixed:
        return model
    clone = keras.models.clone_model(model, clone_function=plain_equivalent)
    clone.set_weights(model.get_weights())
    config = model.get_compile_config()
    if config is not None:
        optimizer = config.get("optimizer")
        if isinstance(optimizer, dict) and optimizer.get("class_name") == "LossScaleOptimizer":
            config = {**config, "optimizer": optimizer["config"]["inner_optimizer"]}
        clone.compile_from_config(config)
    return clone
