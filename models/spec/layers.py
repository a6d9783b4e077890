"""Layer specs. Field names are Keras's argument names; ``type`` is the Keras class name.

Each class is one entry of a discriminated union, so an unknown ``type`` is rejected with
the list of known ones, and a bad field is reported at ``model.layers.<i>.<Type>.<field>``.
"""

from __future__ import annotations

import re
from typing import Annotated, Any, Literal

from pydantic import Field, field_validator, model_validator

from models.spec.base import (
    MAX_RANK,
    MAX_UNITS,
    ActivationName,
    Constraint,
    Initializer,
    Regularizer,
    StrictModel,
    to_keras_value,
)

LayerName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]


class LayerBase(StrictModel):
    name: LayerName | None = None
    trainable: bool = True

    def keras_kwargs(self) -> dict[str, Any]:
        """Constructor arguments for the Keras class named by ``type``."""
        fields = self.model_dump(exclude={"type"}, exclude_none=True, by_alias=False)
        return {key: to_keras_value(getattr(self, key)) for key in fields}


class Dense(LayerBase):
    type: Literal["Dense"]
    units: int = Field(gt=0, le=MAX_UNITS)
    activation: ActivationName | None = None
    use_bias: bool = True
    kernel_initializer: Initializer = "glorot_uniform"
    bias_initializer: Initializer = "zeros"
    kernel_regularizer: Regularizer | None = None
    bias_regularizer: Regularizer | None = None
    activity_regularizer: Regularizer | None = None
    kernel_constraint: Constraint | None = None
    bias_constraint: Constraint | None = None


class Flatten(LayerBase):
    type: Literal["Flatten"]


class Reshape(LayerBase):
    type: Literal["Reshape"]
    # Bounded rank: TensorFlow aborts the process on a few hundred axes and hangs on more.
    target_shape: list[Annotated[int, Field(ge=-1, le=MAX_UNITS)]] = Field(
        min_length=1, max_length=MAX_RANK
    )

    @field_validator("target_shape")
    @classmethod
    def _one_unknown_no_zero(cls, shape: list[int]) -> list[int]:
        if 0 in shape:
            raise ValueError("dimensions must be positive (or one -1)")
        if shape.count(-1) > 1:
            raise ValueError("at most one dimension may be -1")
        return shape


class BatchNormalization(LayerBase):
    type: Literal["BatchNormalization"]
    axis: int = -1
    momentum: float = Field(default=0.99, ge=0, le=1)
    epsilon: float = Field(default=1e-3, gt=0)
    center: bool = True
    scale: bool = True


class LayerNormalization(LayerBase):
    type: Literal["LayerNormalization"]
    axis: int = -1
    epsilon: float = Field(default=1e-3, gt=0)
    center: bool = True
    scale: bool = True


class Activation(LayerBase):
    type: Literal["Activation"]
    activation: ActivationName


class LeakyReLU(LayerBase):
    type: Literal["LeakyReLU"]
    negative_slope: float = Field(default=0.3, ge=0)


class PReLU(LayerBase):
    type: Literal["PReLU"]
    alpha_initializer: Initializer = "zeros"
    alpha_regularizer: Regularizer | None = None
    alpha_constraint: Constraint | None = None
    shared_axes: list[Annotated[int, Field(ge=1, le=MAX_RANK)]] | None = Field(
        default=None,
        max_length=MAX_RANK,
        description="1-based axes (the batch axis is 0) that share one alpha.",
    )


class ELU(LayerBase):
    type: Literal["ELU"]
    alpha: float = Field(default=1.0, gt=0)


class ReLU(LayerBase):
    type: Literal["ReLU"]
    max_value: float | None = Field(default=None, gt=0)
    negative_slope: float = Field(default=0.0, ge=0)
    threshold: float = 0.0


class Softmax(LayerBase):
    type: Literal["Softmax"]
    axis: int = -1


DropoutRate = Annotated[float, Field(ge=0, lt=1, description="Fraction dropped; 0 ≤ rate < 1.")]


class Dropout(LayerBase):
    type: Literal["Dropout"]
    rate: DropoutRate
    seed: int | None = Field(default=None, ge=0)


class AlphaDropout(LayerBase):
    type: Literal["AlphaDropout"]
    rate: DropoutRate
    seed: int | None = Field(default=None, ge=0)


class GaussianDropout(LayerBase):
    type: Literal["GaussianDropout"]
    rate: DropoutRate
    seed: int | None = Field(default=None, ge=0)


class GaussianNoise(LayerBase):
    type: Literal["GaussianNoise"]
    stddev: float = Field(gt=0)
    seed: int | None = Field(default=None, ge=0)


class RReLU(LayerBase):
    """Randomized leaky ReLU (Xu et al. 2015): in training each negative input gets a slope
    drawn uniformly from [lower, upper]; at inference the mean slope. Keras has none; the
    downloaded model carries the inference equivalent, a LeakyReLU with the mean slope."""

    type: Literal["RReLU"]
    lower: float = Field(default=1 / 8, ge=0, lt=1)
    upper: float = Field(default=1 / 3, gt=0, lt=1)
    seed: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> RReLU:
        if self.lower > self.upper:
            raise ValueError("lower must not exceed upper")
        return self

    @property
    def mean_slope(self) -> float:
        return (self.lower + self.upper) / 2


class MCDropout(LayerBase):
    """Monte Carlo dropout (Gal & Ghahramani 2016): dropout that stays on at inference, so
    repeated predictions sample the model's uncertainty. The downloaded model carries a
    plain Dropout; sample with it through ``model(x, training=True)``."""

    type: Literal["MCDropout"]
    rate: DropoutRate
    seed: int | None = Field(default=None, ge=0)


#: Activations a block can apply as a layer of their own, beyond Keras's named functions.
BlockActivation = ActivationName | Literal["rrelu", "prelu"]


class DenseBlock(LayerBase):
    """Shorthand for the chapter's Dense patterns. ``batch_norm: "before"`` is Ioffe and
    Szegedy's placement: Dense without bias (BN's beta replaces it), BatchNormalization,
    then the activation as a layer. ``"after"``: Dense with its activation, then BN.
    ``dropout`` appends a dropout layer of ``dropout_type``. Expands to plain layers."""

    type: Literal["DenseBlock"]
    units: int = Field(gt=0, le=MAX_UNITS)
    activation: BlockActivation | None = None
    batch_norm: Literal["before", "after"] | None = None
    dropout: DropoutRate | None = None
    dropout_type: Literal["Dropout", "AlphaDropout", "MCDropout"] = "Dropout"
    kernel_initializer: Initializer = "glorot_uniform"
    kernel_regularizer: Regularizer | None = None
    kernel_constraint: Constraint | None = None

    def expand(self) -> list[PrimitiveLayerSpec]:
        prefix = self.name
        named = (lambda part: f"{prefix}_{part}") if prefix else (lambda part: None)
        common: dict[str, Any] = {"trainable": self.trainable}
        function_activation = self.activation not in {"rrelu", "prelu"}
        dense = Dense(
            type="Dense",
            name=named("dense"),
            units=self.units,
            # Before-BN: the bias is redundant with BN's beta; the activation follows BN.
            use_bias=self.batch_norm != "before",
            activation=self.activation
            if function_activation and self.batch_norm != "before"
            else None,
            kernel_initializer=self.kernel_initializer,
            kernel_regularizer=self.kernel_regularizer,
            kernel_constraint=self.kernel_constraint,
            **common,
        )
        layers: list[PrimitiveLayerSpec] = [dense]
        activation_layers = self._activation_layers(
            named, common, force=self.batch_norm == "before"
        )
        norm = BatchNormalization(type="BatchNormalization", name=named("bn"), **common)
        if self.batch_norm == "before":
            layers += [norm, *activation_layers]
        elif self.batch_norm == "after":
            layers += [*activation_layers, norm]
        else:
            layers += activation_layers
        if self.dropout is not None:
            layers.append(
                _DROPOUTS[self.dropout_type](
                    type=self.dropout_type, name=named("dropout"), rate=self.dropout, **common
                )
            )
        return layers

    def _activation_layers(
        self, named: Any, common: dict[str, Any], *, force: bool
    ) -> list[PrimitiveLayerSpec]:
        """The activation as a layer of its own, where the Dense cannot carry it."""
        if self.activation is None:
            return []
        if self.activation == "rrelu":
            return [RReLU(type="RReLU", name=named("rrelu"), **common)]
        if self.activation == "prelu":
            return [PReLU(type="PReLU", name=named("prelu"), **common)]
        if force:
            return [
                Activation(
                    type="Activation", name=named("act"), activation=self.activation, **common
                )
            ]
        return []


_DROPOUTS: dict[str, type[Dropout] | type[AlphaDropout] | type[MCDropout]] = {
    "Dropout": Dropout,
    "AlphaDropout": AlphaDropout,
    "MCDropout": MCDropout,
}

#: Layers that are one Keras layer each (what blocks expand to).
PrimitiveLayerSpec = Annotated[
    Dense
    | Flatten
    | Reshape
    | BatchNormalization
    | LayerNormalization
    | Activation
    | LeakyReLU
    | PReLU
    | ELU
    | ReLU
    | Softmax
    | Dropout
    | AlphaDropout
    | GaussianDropout
    | GaussianNoise
    | RReLU
    | MCDropout,
    Field(discriminator="type"),
]

#: Everything a spec's ``layers`` list may hold.
LayerSpec = Annotated[PrimitiveLayerSpec | DenseBlock, Field(discriminator="type")]


def expand_layers(layers: list[LayerSpec]) -> list[PrimitiveLayerSpec]:
    """Blocks replaced by the layers they stand for, every layer named.

    Unnamed layers get ``<type>_<position>``, skipping names the spec took, so names are
    the same in every process and every run (Keras's own counter is per process), which
    is what a transfer job's ``cut`` refers to."""
    expanded: list[PrimitiveLayerSpec] = []
    for layer in layers:
        if isinstance(layer, DenseBlock):
            expanded.extend(layer.expand())
        else:
            expanded.append(layer)
    taken = {layer.name for layer in expanded if layer.name}
    named: list[PrimitiveLayerSpec] = []
    for position, layer in enumerate(expanded):
        if layer.name is None:
            base = f"{_snake(layer.type)}_{position}"
            name, suffix = base, 1
            while name in taken:
                name, suffix = f"{base}_{suffix}", suffix + 1
            taken.add(name)
            layer = layer.model_copy(update={"name": name})
        named.append(layer)
    return named


_ACRONYM_NAMES = {
    "ReLU": "relu",
    "PReLU": "prelu",
    "RReLU": "rrelu",
    "LeakyReLU": "leaky_relu",
    "ELU": "elu",
    "MCDropout": "mc_dropout",
}


def _snake(type_name: str) -> str:
    """``BatchNormalization`` → ``batch_normalization``, ``PReLU`` → ``prelu``."""
    if type_name in _ACRONYM_NAMES:
        return _ACRONYM_NAMES[type_name]
    return re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", type_name).lower()
