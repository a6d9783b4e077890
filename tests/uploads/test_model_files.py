"""Output shapes of uploaded Sequential models, by the layer specs' shape rules, against
what Keras reports for the saved model: also where a dimension is unknown, and for netkiln's
own layers."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
import pytest

from uploads.model_files import ModelFormat, inspect_model_file
from worker.build.custom_layers import MCDropout, RReLU

MAX_EXPANDED = 64 * 1024 * 1024


def variable_length() -> keras.Model:
    """Sequences of any length: every shape has an unknown axis after the batch axis."""
    return keras.Sequential(
        [
            keras.Input((None, 6)),
            keras.layers.Dense(4),
            keras.layers.Reshape((-1, 2)),
            keras.layers.LayerNormalization(),
            keras.layers.SpatialDropout1D(0.1),
            keras.layers.Flatten(),
        ]
    )


def netkiln_layers() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((3, 4)),
            RReLU(),
            keras.layers.Reshape((-1,)),
            MCDropout(0.1),
            keras.layers.Dense(2),
            keras.layers.Softmax(),
        ]
    )


@pytest.mark.parametrize("format", ["keras", "h5"])
@pytest.mark.parametrize("build", [variable_length, netkiln_layers])
def test_output_shapes_are_keras_own(
    tmp_path: Path, build: Callable[[], keras.Model], format: ModelFormat
) -> None:
    model = build()
    path = tmp_path / f"model.{format}"
    model.save(path)

    summary = inspect_model_file(path, format, tmp_path, MAX_EXPANDED)

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    rows = [row for row in summary.layers if row.type != "InputLayer"]
    assert [row.output_shape for row in rows] == [list(layer.output.shape) for layer in layers]
