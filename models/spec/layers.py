"""Layer specs. Field names are Keras's argument names; ``type`` is the Keras class name.

Each class is one entry of a discriminated union, so an unknown ``type`` is rejected with
the list of known ones, and a bad field is reported at ``model.layers.<i>.<Type>.<field>``.

A class is all netkiln knows of its layer type: its fields, the Keras class it builds (the
one ``type`` names), and its shape rule, the pure-Python counterpart of Keras's
``compute_output_shape`` and ``build``. The dry run (``models.summary``), upload inspection
(``keras_output_shape``) and the worker's builder all read the class, so adding a layer type
is one class added to ``PrimitiveLayerSpec`` and one test that its rule agrees with Keras.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal, NamedTuple, cast

from pydantic import Field, TypeAdapter, field_validator, model_validator

from models.spec.base import (
    MAX_RANK,
    MAX_UNITS,
    ActivationName,
    Constraint,
    Initializer,
    Regularizer,
    StrictModel,
    tagged_members,
    to_keras_value,
)

LayerName = Annotated[str, Field(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,63}$")]

#: A tensor's shape without the batch axis, every dimension known: what the dry run has.
Shape = tuple[int, ...]
#: The same where a dimension may be unknown (None), as in a saved model.
PartialShape = tuple[int | None, ...]


class Weights(NamedTuple):
    trainable: int
    non_trainable: int


class LayerEffect(NamedTuple):
    output_shape: Shape
    trainable: int
    non_trainable: int


class LayerBase(StrictModel):
    name: LayerName | None = None
    trainable: bool = True


class KerasLayerSpec(LayerBase):
    """A spec that is one Keras layer: ``keras.layers.<type>``, or where Keras has none,
    netkiln's layer of that name (``worker/build/custom_layers.py`` registers it)."""

    #: Stem of the default name ``<stem>_<position>``; unset, Keras's snake case of ``type``.
    #: Set where that splits an acronym: Keras would say ``p_re_lu``, netkiln says ``prelu``.
    name_stem: ClassVar[str | None] = None

    def keras_kwargs(self) -> dict[str, Any]:
        """Constructor arguments for the Keras class named by ``type``."""
        fields = self.model_dump(exclude={"type"}, exclude_none=True, by_alias=False)
        return {key: to_keras_value(getattr(self, key)) for key in fields}

    def compute_output_shape(self, shape: PartialShape) -> PartialShape:
        """The output shape for input ``shape``, None where a dimension cannot be known;
        ValueError where Keras would refuse the input. Most layers keep their input's."""
        return shape

    def count_weights(self, shape: Shape) -> Weights:
        """The weights Keras's ``build`` creates for input ``shape``; ValueError where Keras
        would refuse the shape, in ``build`` or the first time the layer runs."""
        return Weights(0, 0)

    def effect(self, shape: Shape) -> LayerEffect:
        """Output shape and parameter counts for input ``shape``, as ``model.summary()``
        reports them for a trainable layer."""
        # A rule leaves unknown only the dimensions it was given unknown.
        output = cast(Shape, self.compute_output_shape(shape))
        weights = self.count_weights(shape)
        return LayerEffect(output, weights.trainable, weights.non_trainable)

    @classmethod
    def from_keras_config(cls, config: Mapping[str, Any]) -> KerasLayerSpec:
        """The spec as far as ``compute_output_shape`` reads it, from a saved layer's Keras
        config (upload inspection). Those fields are checked for type, not against netkiln's
        limits, which an uploaded model need not keep: no valid spec, a shape rule's input.
        ValueError where one is missing or of the wrong type."""
        return cls.model_construct()


class Dense(KerasLayerSpec):
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

    def compute_output_shape(self, shape: PartialShape) -> PartialShape:
        return (*shape[:-1], self.units)

    def count_weights(self, shape: Shape) -> Weights:
        kernel = shape[-1] * self.units
        bias = self.units if self.use_bias else 0
        return Weights(kernel + bias, 0)

    @classmethod
    def from_keras_config(cls, config: Mapping[str, Any]) -> Dense:
        return cls.model_construct(type="Dense", units=_config_int(config, "units"))


class Flatten(KerasLayerSpec):
    type: Literal["Flatten"]

    def compute_output_shape(self, shape: PartialShape) -> PartialShape:
        known = [dim for dim in shape if dim is not None]
        return (math.prod(known),) if len(known) == len(shape) else (None,)


class Reshape(KerasLayerSpec):
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

    def compute_output_shape(self, shape: PartialShape) -> PartialShape:
        target = tuple(self.target_shape)
        if target.count(-1) > 1:
            raise ValueError(f"target_shape {list(target)} may hold at most one -1")
        known_input = [dim for dim in shape if dim is not None]
        if len(known_input) < len(shape):
            # As Keras: the size is unknown, and so is the dimension it would give.
            return tuple(None if dim == -1 else dim for dim in target)
        size = math.prod(known_input)
        known = math.prod(dim for dim in target if dim != -1)
        if -1 in target:
            if known == 0 or size % known:
                raise ValueError(
                    f"cannot reshape input shape {_show(shape)} ({size} values) into "
                    f"target_shape {list(target)}: {size} is not a multiple of {known}"
                )
            return tuple(size // known if dim == -1 else dim for dim in target)
        if known != size:
            raise ValueError(
                f"cannot reshape input shape {_show(shape)} ({size} values) into "
                f"target_shape {list(target)} ({known} values)"
            )
        return target

    @classmethod
    def from_keras_config(cls, config: Mapping[str, Any]) -> Reshape:
        target_shape = _config_ints(config, "target_shape")
        return cls.model_construct(type="Reshape", target_shape=target_shape)


class BatchNormalization(KerasLayerSpec):
    type: Literal["BatchNormalization"]
    axis: int = -1
    momentum: float = Field(default=0.99, ge=0, le=1)
    epsilon: float = Field(default=1e-3, gt=0)
    center: bool = True
    scale: bool = True

    def count_weights(self, shape: Shape) -> Weights:
        features = shape[_feature_axis(shape, self.axis)]
        learned = int(self.center) + int(self.scale)
        # The moving mean and variance are weights too, updated by the layer, not learned.
        return Weights(learned * features, 2 * features)


class LayerNormalization(KerasLayerSpec):
    type: Literal["LayerNormalization"]
    axis: int = -1
    epsilon: float = Field(default=1e-3, gt=0)
    center: bool = True
    scale: bool = True

    def count_weights(self, shape: Shape) -> Weights:
        features = shape[_feature_axis(shape, self.axis)]
        return Weights((int(self.center) + int(self.scale)) * features, 0)


class Activation(KerasLayerSpec):
    type: Literal["Activation"]
    activation: ActivationName


class LeakyReLU(KerasLayerSpec):
    type: Literal["LeakyReLU"]
    name_stem = "leaky_relu"
    negative_slope: float = Field(default=0.3, ge=0)


class PReLU(KerasLayerSpec):
    type: Literal["PReLU"]
    name_stem = "prelu"
    alpha_initializer: Initializer = "zeros"
    alpha_regularizer: Regularizer | None = None
    alpha_constraint: Constraint | None = None
    shared_axes: list[Annotated[int, Field(ge=1, le=MAX_RANK)]] | None = Field(
        default=None,
        max_length=MAX_RANK,
        description="1-based axes (the batch axis is 0) that share one alpha.",
    )

    def count_weights(self, shape: Shape) -> Weights:
        alpha = list(shape)
        for axis in self.shared_axes or []:
            if not 1 <= axis <= len(shape):
                raise ValueError(
                    f"shared_axes entry {axis} is not an axis of input shape {_show(shape)}; "
                    f"use 1 to {len(shape)} (1 is the first axis after the batch axis)"
                )
            alpha[axis - 1] = 1
        return Weights(math.prod(alpha), 0)


class ELU(KerasLayerSpec):
    type: Literal["ELU"]
    alpha: float = Field(default=1.0, gt=0)


class ReLU(KerasLayerSpec):
    type: Literal["ReLU"]
    name_stem = "relu"
    max_value: float | None = Field(default=None, gt=0)
    negative_slope: float = Field(default=0.0, ge=0)
    threshold: float = 0.0


class Softmax(KerasLayerSpec):
    type: Literal["Softmax"]
    axis: int = -1

    def count_weights(self, shape: Shape) -> Weights:
        # Keras builds a softmax over an axis the input lacks, and fails only in fit().
        rank = len(shape) + 1
        if not -rank <= self.axis < rank:
            raise ValueError(f"axis {self.axis} is out of range for input shape {_show(shape)}")
        return Weights(0, 0)


DropoutRate = Annotated[float, Field(ge=0, lt=1, description="Fraction dropped; 0 ≤ rate < 1.")]


class Dropout(KerasLayerSpec):
    type: Literal["Dropout"]
    rate: DropoutRate
    seed: int | None = Field(default=None, ge=0)


class AlphaDropout(KerasLayerSpec):
    type: Literal["AlphaDropout"]
    rate: DropoutRate
    seed: int | None = Field(default=None, ge=0)


class GaussianDropout(KerasLayerSpec):
    type: Literal["GaussianDropout"]
    rate: DropoutRate
    seed: int | None = Field(default=None, ge=0)


class GaussianNoise(KerasLayerSpec):
    type: Literal["GaussianNoise"]
    stddev: float = Field(gt=0)
    seed: int | None = Field(default=None, ge=0)


class RReLU(KerasLayerSpec):
    """Randomized leaky ReLU (Xu et al. 2015): in training each negative input gets a slope
    drawn uniformly from [lower, upper]; at inference the mean slope. Keras has none; the
    downloaded model carries the inference equivalent, a LeakyReLU with the mean slope."""

    type: Literal["RReLU"]
    name_stem = "rrelu"
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


class MCDropout(KerasLayerSpec):
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
            dropout = {"type": self.dropout_type, "name": named("dropout"), "rate": self.dropout}
            layers.append(PRIMITIVE_LAYERS.validate_python({**dropout, **common}))
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


#: Layers that are one Keras layer each (what blocks expand to): the layer registry.
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

#: Validates one layer of any one-layer type (a block's parts, picked by name).
PRIMITIVE_LAYERS: TypeAdapter[PrimitiveLayerSpec] = TypeAdapter(PrimitiveLayerSpec)
#: The spec class of each one-layer ``type``, which is also its Keras class name.
LAYER_CLASSES = tagged_members(PrimitiveLayerSpec, KerasLayerSpec)


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
            base = f"{layer.name_stem or keras_snake_case(layer.type)}_{position}"
            name, suffix = base, 1
            while name in taken:
                name, suffix = f"{base}_{suffix}", suffix + 1
            taken.add(name)
            layer = layer.model_copy(update={"name": name})
        named.append(layer)
    return named


def keras_snake_case(name: str) -> str:
    """``keras.src.utils.naming.to_snake_case``: ``BatchNormalization`` →
    ``batch_normalization``, ``PReLU`` → ``p_re_lu``. How Keras names a layer by default,
    and so the weights group of a ``.keras`` file."""
    name = re.sub(r"\W+", "", name)
    name = re.sub("(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub("([a-z])([A-Z])", r"\1_\2", name).lower()


# --- upload inspection: saved Keras layers by class name ----------------------------------

#: Keras layers netkiln has no spec for whose output has their input's shape.
SHAPE_PRESERVING_KERAS_LAYERS = frozenset(
    {
        "ActivityRegularization",
        "GroupNormalization",
        "Identity",
        "Masking",
        "Normalization",
        "RMSNormalization",
        "Rescaling",
        "SpatialDropout1D",
        "SpatialDropout2D",
        "SpatialDropout3D",
        "UnitNormalization",
    }
)


def keras_output_shape(
    class_name: str, config: Mapping[str, Any], shape: PartialShape
) -> PartialShape | None:
    """What a saved Keras layer of ``class_name`` and ``config`` outputs for input ``shape``
    (no batch axis), by the shape rule of its spec class; None for a layer with neither a
    spec class nor its input's shape, or one the rule cannot read or refuses."""
    if class_name in SHAPE_PRESERVING_KERAS_LAYERS:
        return shape
    spec_class = LAYER_CLASSES.get(class_name)
    if spec_class is None:
        return None
    try:
        return spec_class.from_keras_config(config).compute_output_shape(shape)
    except ValueError:
        return None


# --- shape rules' helpers ----------------------------------------------------------------


def _feature_axis(shape: Shape, axis: int) -> int:
    """``axis`` counts the batch axis, as Keras's do; the index into ``shape`` it names."""
    rank = len(shape) + 1
    if not -rank <= axis < rank:
        raise ValueError(f"axis {axis} is out of range for input shape {_show(shape)}")
    resolved = axis % rank
    if resolved == 0:
        raise ValueError(f"axis {axis} is the batch axis of input shape {_show(shape)}")
    return resolved - 1


def _show(shape: PartialShape) -> str:
    return str((None, *shape))


def _config_int(config: Mapping[str, Any], key: str) -> int:
    value = config.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    raise ValueError(f"{key} is {value!r}, not an integer")


def _config_ints(config: Mapping[str, Any], key: str) -> list[int]:
    value = config.get(key)
    if isinstance(value, list) and all(
        isinstance(dim, int) and not isinstance(dim, bool) for dim in value
    ):
        return list(value)
    raise ValueError(f"{key} is {value!r}, not a list of integers")
