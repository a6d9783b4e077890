"""Shared building blocks of the job spec: strict models and the Keras vocabulary.

The name lists mirror what ``keras.*.get`` resolves; ``tests/worker/test_vocabulary.py``
checks every entry against Keras so they cannot drift.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar, get_args

from pydantic import BaseModel, ConfigDict, Field

MAX_UNITS = 65_536
#: Axes of an example, the batch axis not counted: of an input, a Reshape's target.
MAX_RANK = 4
MAX_LAYERS = 256


class StrictModel(BaseModel):
    """Unknown fields are errors that name the field; objects are frozen once validated.
    NaN and infinities are refused: JSON cannot store them, so a stored spec would change."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


Member = TypeVar("Member", bound=BaseModel)


def tagged_members(union: Any, base: type[Member]) -> dict[str, type[Member]]:
    """The classes of a discriminated union on ``type`` (``Annotated[A | B, Field(...)]``)
    by their tags, in union order: the union is the registry, this is its index."""
    members: dict[str, type[Member]] = {}
    for member in get_args(get_args(union)[0]):
        if not issubclass(member, base):
            raise TypeError(f"{member.__name__} is not a {base.__name__}")
        for tag in get_args(member.model_fields["type"].annotation):
            members[tag] = member
    return members


ActivationName = Literal[
    "linear",
    "relu",
    "relu6",
    "leaky_relu",
    "elu",
    "selu",
    "gelu",
    "silu",
    "swish",
    "mish",
    "tanh",
    "sigmoid",
    "hard_sigmoid",
    "hard_silu",
    "softmax",
    "log_softmax",
    "softplus",
    "softsign",
    "exponential",
]

InitializerName = Literal[
    "glorot_normal",
    "glorot_uniform",
    "he_normal",
    "he_uniform",
    "lecun_normal",
    "lecun_uniform",
    "orthogonal",
    "random_normal",
    "random_uniform",
    "truncated_normal",
    "zeros",
    "ones",
]

LossName = Literal[
    "sparse_categorical_crossentropy",
    "categorical_crossentropy",
    "binary_crossentropy",
    "mean_squared_error",
    "mse",
    "mean_absolute_error",
    "mae",
    "mean_squared_logarithmic_error",
    "huber",
    "log_cosh",
    "kl_divergence",
    "poisson",
    "hinge",
    "squared_hinge",
]

MetricName = Literal[
    "accuracy",
    "sparse_categorical_accuracy",
    "categorical_accuracy",
    "binary_accuracy",
    "sparse_top_k_categorical_accuracy",
    "top_k_categorical_accuracy",
    "mse",
    "mae",
    "mean_squared_error",
    "mean_absolute_error",
]


class VarianceScaling(StrictModel):
    """``keras.initializers.VarianceScaling``: e.g. He-avg uniform is scale=2, fan_avg, uniform."""

    type: Literal["VarianceScaling"]
    scale: float = Field(default=1.0, gt=0)
    mode: Literal["fan_in", "fan_out", "fan_avg"] = "fan_in"
    distribution: Literal["truncated_normal", "untruncated_normal", "uniform"] = "truncated_normal"
    seed: int | None = Field(default=None, ge=0)

    def to_keras(self) -> dict[str, Any]:
        return keras_config("VarianceScaling", self.model_dump(exclude={"type"}))


class RandomNormal(StrictModel):
    type: Literal["RandomNormal", "TruncatedNormal"]
    mean: float = 0.0
    stddev: float = Field(default=0.05, gt=0)
    seed: int | None = Field(default=None, ge=0)

    def to_keras(self) -> dict[str, Any]:
        return keras_config(self.type, self.model_dump(exclude={"type"}))


class RandomUniform(StrictModel):
    type: Literal["RandomUniform"]
    minval: float = -0.05
    maxval: float = 0.05
    seed: int | None = Field(default=None, ge=0)

    def to_keras(self) -> dict[str, Any]:
        return keras_config(self.type, self.model_dump(exclude={"type"}))


class Constant(StrictModel):
    type: Literal["Constant"]
    value: float = 0.0

    def to_keras(self) -> dict[str, Any]:
        return keras_config(self.type, self.model_dump(exclude={"type"}))


InitializerObject = Annotated[
    VarianceScaling | RandomNormal | RandomUniform | Constant, Field(discriminator="type")
]
Initializer = InitializerName | InitializerObject


class L1L2(StrictModel):
    """Weight penalty; ``type`` picks Keras's l1, l2 or l1_l2 regularizer."""

    type: Literal["l1", "l2", "l1_l2"]
    l1: float = Field(default=0.0, ge=0)
    l2: float = Field(default=0.0, ge=0)

    def to_keras(self) -> dict[str, Any]:
        return keras_config("L1L2", {"l1": self.l1, "l2": self.l2})


class MaxNorm(StrictModel):
    type: Literal["MaxNorm"]
    max_value: float = Field(default=2.0, gt=0)
    axis: int = 0

    def to_keras(self) -> dict[str, Any]:
        return keras_config(self.type, self.model_dump(exclude={"type"}))


class NonNeg(StrictModel):
    type: Literal["NonNeg"]

    def to_keras(self) -> dict[str, Any]:
        return keras_config(self.type, {})


Regularizer = L1L2
Constraint = Annotated[MaxNorm | NonNeg, Field(discriminator="type")]


def keras_config(
    class_name: str, config: dict[str, Any], module: str | None = None
) -> dict[str, Any]:
    """The ``{"class_name", "config"}`` form that every ``keras.*.get`` deserializes.

    ``module`` is needed where Keras deserializes a nested object outside its own
    namespace (a learning-rate schedule inside an optimizer).
    """
    serialized: dict[str, Any] = {"class_name": class_name, "config": config}
    if module is not None:
        serialized["module"] = module
    return serialized


def to_keras_value(value: Any) -> Any:
    """A spec field as Keras takes it: nested spec objects become Keras configs."""
    if isinstance(value, BaseModel) and hasattr(value, "to_keras"):
        return value.to_keras()
    if isinstance(value, tuple | list):
        return [to_keras_value(item) for item in value]
    return value
