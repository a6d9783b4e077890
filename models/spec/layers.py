"""Layer specs. Field names are Keras's argument names; ``type`` is the Keras class name.

Each class is one entry of a discriminated union, so an unknown ``type`` is rejected with
the list of known ones, and a bad field is reported at ``model.layers.<i>.<Type>.<field>``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from models.spec.base import (
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
    target_shape: list[Annotated[int, Field(ge=-1, le=MAX_UNITS)]] = Field(min_length=1)


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
    shared_axes: list[int] | None = None


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


LayerSpec = Annotated[
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
    | GaussianNoise,
    Field(discriminator="type"),
]
