"""A dry run of ``worker.build.model.build_model`` without TensorFlow: every layer's output
shape and parameter counts, as ``model.summary()`` would report them, computed from the spec.

Rows are the layers Keras builds, so a block (``DenseBlock``) gives one row per layer it
expands to, each carrying the ``spec_index`` of the block. Each layer spec carries its own
shape rule (``KerasLayerSpec.effect`` in ``models.spec.layers``): from the input shape
(without the batch axis), the output shape and the trainable and non-trainable parameter
counts. A layer with ``trainable: false`` has all its weights counted as non-trainable, as
in Keras. A spec Keras could not build, or could build but not run (a softmax over an axis
the tensor lacks), raises ``InvalidLayerError`` naming the spec layer.

Memory is estimated for float32, and deliberately kept simple:

- ``weight_bytes``: 4 bytes per parameter, trainable or not;
- ``activation_bytes_per_example``: 4 bytes per value of the input and of every layer's
  output, for one example;
- ``memory_estimate_bytes``: ``weight_bytes + batch_size * activation_bytes_per_example``.

Not counted: gradients, optimizer slots (Adam keeps two per trainable weight), framework
overhead and the dataset itself.
"""

from __future__ import annotations

import math

from pydantic import Field

from models.spec import ModelSpec
from models.spec.base import StrictModel
from models.spec.layers import LayerEffect, PrimitiveLayerSpec, Shape, expand_layers

__all__ = ["InvalidLayerError", "LayerEffect", "LayerSummary", "ModelSummary", "summarize"]

BYTES_PER_FLOAT32 = 4


class InvalidLayerError(ValueError):
    """The spec layer at ``index`` cannot take the shape the layers before it produce;
    ``layer_type`` is the failing layer's type (for a block, the layer it expands to)."""

    def __init__(self, index: int, layer_type: str, reason: str) -> None:
        super().__init__(f"model.layers.{index} ({layer_type}): {reason}")
        self.index = index
        self.layer_type = layer_type
        self.reason = reason


class LayerSummary(StrictModel):
    index: int = Field(description="Position among the layers Keras builds.")
    spec_index: int = Field(description="Position in the spec's layers (a block's position).")
    name: str
    type: str
    output_shape: list[int | None] = Field(description="None is the batch axis.")
    params: int
    trainable: int
    non_trainable: int


class ModelSummary(StrictModel):
    input_shape: list[int | None] = Field(description="None is the batch axis.")
    layers: list[LayerSummary]
    total: int
    trainable: int
    non_trainable: int
    weight_bytes: int
    activation_bytes_per_example: int
    batch_size: int
    memory_estimate_bytes: int = Field(
        description="weight_bytes + batch_size * activation_bytes_per_example (float32)."
    )


def summarize(spec: ModelSpec, batch_size: int = 1) -> ModelSummary:
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    shape: Shape = tuple(spec.input_shape)
    activations = math.prod(shape)
    rows: list[LayerSummary] = []
    # Each spec layer's share of the expanded (and named) layers Keras builds.
    origins = [
        (spec_index, spec_layer.type)
        for spec_index, spec_layer in enumerate(spec.layers)
        for _ in expand_layers([spec_layer])
    ]
    for (spec_index, spec_type), layer in zip(origins, spec.expanded_layers, strict=True):
        shape = _add_row(rows, spec_index, spec_type, shape, layer)
        activations += math.prod(shape)
    trainable = sum(row.trainable for row in rows)
    non_trainable = sum(row.non_trainable for row in rows)
    weight_bytes = BYTES_PER_FLOAT32 * (trainable + non_trainable)
    activation_bytes = BYTES_PER_FLOAT32 * activations
    return ModelSummary(
        input_shape=[None, *spec.input_shape],
        layers=rows,
        total=trainable + non_trainable,
        trainable=trainable,
        non_trainable=non_trainable,
        weight_bytes=weight_bytes,
        activation_bytes_per_example=activation_bytes,
        batch_size=batch_size,
        memory_estimate_bytes=weight_bytes + batch_size * activation_bytes,
    )


def _add_row(
    rows: list[LayerSummary],
    spec_index: int,
    spec_type: str,
    shape: Shape,
    layer: PrimitiveLayerSpec,
) -> Shape:
    """Append ``layer``'s row, taking input ``shape``; the shape it outputs."""
    try:
        effect = layer.effect(shape)
    except ValueError as exc:
        shown = layer.type if spec_type == layer.type else f"{spec_type}: {layer.type}"
        raise InvalidLayerError(spec_index, shown, str(exc)) from exc
    trainable, non_trainable = effect.trainable, effect.non_trainable
    if not layer.trainable:
        trainable, non_trainable = 0, trainable + non_trainable
    rows.append(
        LayerSummary(
            index=len(rows),
            spec_index=spec_index,
            name=layer.name or layer.type.lower(),  # always set: expanded layers are named
            type=layer.type,
            output_shape=[None, *effect.output_shape],
            params=trainable + non_trainable,
            trainable=trainable,
            non_trainable=non_trainable,
        )
    )
    return effect.output_shape


class DataSizes(StrictModel):
    """The examples a job will use, after ``classes``, ``limit`` and the validation split
    (built-ins with ``classes``: estimated from their balanced classes)."""

    train: int = Field(description="Examples the epochs train on.")
    validation: int = Field(description="Examples held out to validate on (0: none).")
    test: int = Field(description="Examples of the test split the job is evaluated on.")
