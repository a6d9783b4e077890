"""Jobs that reuse trained layers: transfer from a base model, and autoencoder pretraining
whose encoder becomes a base."""

from __future__ import annotations

import math
import uuid
from typing import Literal

from pydantic import Field, model_validator

from models.spec.base import MAX_LAYERS, ActivationName, LossName, MetricName, StrictModel
from models.spec.job import (
    ExecutionChoice,
    JobSpecBase,
    ModelSpec,
    ValidationChoice,
    default_optimizer,
)
from models.spec.layers import (
    Dense,
    Flatten,
    LayerSpec,
    PrimitiveLayerSpec,
    Reshape,
    expand_layers,
)
from models.spec.optimizers import Optimizer


class JobBase(StrictModel):
    """The trained model of a succeeded job."""

    job: uuid.UUID


class UploadedBase(StrictModel):
    """A model uploaded through ``POST /v1/models``."""

    model: uuid.UUID


BaseRef = JobBase | UploadedBase


class Cut(StrictModel):
    """Which of the base's layers to keep: all but the last ``drop`` (the seed drops the
    output layer), or those up to and including the layer named ``after``."""

    drop: int | None = Field(default=None, ge=0, le=MAX_LAYERS)
    after: str | None = Field(default=None, min_length=1, max_length=64)

    @model_validator(mode="after")
    def _one(self) -> Cut:
        if (self.drop is None) == (self.after is None):
            raise ValueError("give exactly one of drop and after")
        return self

    def kept(self, base_layer_names: list[str]) -> int:
        """How many leading base layers stay; ValueError if the cut is impossible."""
        if self.after is not None:
            if self.after not in base_layer_names:
                raise ValueError(f"the base has no layer {self.after!r}")
            return base_layer_names.index(self.after) + 1
        assert self.drop is not None
        if self.drop >= len(base_layer_names):
            raise ValueError(
                f"cannot drop {self.drop} of the base's {len(base_layer_names)} layers"
            )
        return len(base_layer_names) - self.drop


class TopLayers(StrictModel):
    """The head and the top ``top`` kept base layers (gradual unfreezing)."""

    top: int = Field(ge=0, le=MAX_LAYERS)


class NamedLayers(StrictModel):
    """The head and the named base layers."""

    layers: list[str] = Field(min_length=1, max_length=MAX_LAYERS)


Trainable = Literal["head", "all"] | TopLayers | NamedLayers


class Phase(StrictModel):
    """A stretch of training with its own trainable set and optimizer; the model is
    recompiled at the start of every phase, as Keras requires after (un)freezing."""

    name: str | None = Field(default=None, max_length=64)
    trainable: Trainable = Field(
        description='"head": the base frozen; "all": everything; {"top": k}: the head and '
        'the top k base layers; {"layers": [...]}: the head and those base layers.'
    )
    epochs: int = Field(gt=0, le=10_000)
    optimizer: Optimizer


class TransferCompileSpec(StrictModel):
    loss: LossName
    metrics: list[MetricName] = Field(default_factory=list, max_length=16)


class TransferFitSpec(ValidationChoice, ExecutionChoice):
    batch_size: int = Field(default=32, gt=0, le=65_536)
    shuffle: bool = True


class TransferJobSpec(JobSpecBase):
    """Clone ``base`` (the stored base is never modified), keep its layers up to ``cut``,
    add ``head``, then train through ``phases``."""

    kind: Literal["transfer"]
    base: BaseRef
    cut: Cut = Field(default_factory=lambda: Cut(drop=1))
    head: list[LayerSpec] = Field(min_length=1, max_length=MAX_LAYERS)
    compile: TransferCompileSpec
    phases: list[Phase] = Field(min_length=1, max_length=32)
    fit: TransferFitSpec = Field(default_factory=TransferFitSpec)

    @property
    def head_layers(self) -> list[PrimitiveLayerSpec]:
        """The head's layers; unnamed ones get a ``head_`` prefix, clear of the base's."""
        return [
            layer if original_named else layer.model_copy(update={"name": f"head_{layer.name}"})
            for layer, original_named in zip(
                expand_layers(self.head), _named_flags(self.head), strict=True
            )
        ]

    @property
    def total_epochs(self) -> int:
        return sum(phase.epochs for phase in self.phases)

    @property
    def batch_size(self) -> int:
        return self.fit.batch_size


class PretrainCompileSpec(StrictModel):
    loss: LossName = "mean_squared_error"
    optimizer: Optimizer = Field(default_factory=lambda: default_optimizer())
    metrics: list[MetricName] = Field(default_factory=list, max_length=16)


class PretrainFitSpec(ValidationChoice, ExecutionChoice):
    epochs: int = Field(gt=0, le=10_000)
    batch_size: int = Field(default=32, gt=0, le=65_536)
    shuffle: bool = True


class PretrainJobSpec(JobSpecBase):
    """Unsupervised pretraining: a dense autoencoder on the dataset's inputs (labels
    ignored). ``encoder`` is given; the decoder mirrors its Dense layers (optionally with
    tied, transposed weights) and ends in ``output_activation``, reshaped to the input.
    The job's model is the trained encoder, ready to be a transfer job's base."""

    kind: Literal["pretrain"]
    encoder: ModelSpec
    tied_weights: bool = False
    output_activation: ActivationName = "sigmoid"
    compile: PretrainCompileSpec = Field(default_factory=PretrainCompileSpec)
    fit: PretrainFitSpec

    @model_validator(mode="after")
    def _mirrorable(self) -> PretrainJobSpec:
        layers = self.encoder.expanded_layers
        if not any(isinstance(layer, Dense) for layer in layers):
            raise ValueError("the encoder needs at least one Dense layer to mirror")
        if any(isinstance(layer, Reshape) for layer in layers):
            raise ValueError("the encoder cannot Reshape; the decoder mirrors flat Dense layers")
        first_dense = next(i for i, layer in enumerate(layers) if isinstance(layer, Dense))
        flattened = any(isinstance(layer, Flatten) for layer in layers[:first_dense])
        if len(self.encoder.input_shape) > 1 and not flattened:
            raise ValueError("with a multi-dimensional input, Flatten before the first Dense")
        return self

    def mirrored_dense(self) -> list[tuple[int, ActivationName | None]]:
        """For each decoder Dense, in decoder order: (units, activation). Each mirrors an
        encoder Dense: it restores that layer's input width with the activation of the
        encoder layer before it, and the last one uses ``output_activation``."""
        width = math.prod(self.encoder.input_shape)
        encoder: list[tuple[int, ActivationName | None]] = []
        for layer in self.encoder.expanded_layers:
            if isinstance(layer, Dense):
                encoder.append((width, layer.activation))
                width = layer.units
        widths = [units for units, _ in encoder]
        activations: list[ActivationName | None] = [
            self.output_activation,
            *[activation for _, activation in encoder[:-1]],
        ]
        return list(zip(reversed(widths), reversed(activations), strict=True))

    def decoder_layers(self) -> list[PrimitiveLayerSpec]:
        """The untied decoder as plain layers (tied decoders are built in the worker)."""
        layers: list[PrimitiveLayerSpec] = [
            Dense(type="Dense", name=f"decoder_dense_{index}", units=units, activation=activation)
            for index, (units, activation) in enumerate(self.mirrored_dense())
        ]
        if len(self.encoder.input_shape) > 1:
            layers.append(
                Reshape(
                    type="Reshape", name="decoder_reshape", target_shape=self.encoder.input_shape
                )
            )
        return layers

    @property
    def total_epochs(self) -> int:
        return self.fit.epochs

    @property
    def batch_size(self) -> int:
        return self.fit.batch_size


def _named_flags(layers: list[LayerSpec]) -> list[bool]:
    """For each expanded layer, whether the spec named it (a named block names its parts)."""
    return [
        spec_layer.name is not None for spec_layer in layers for _ in expand_layers([spec_layer])
    ]
