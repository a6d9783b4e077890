"""``models.summary`` against the Keras model ``worker.build.model.build_model`` builds."""

from __future__ import annotations

import math
from typing import Any, get_args

import keras
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.spec import ModelSpec
from models.spec.base import ActivationName, InitializerName
from models.spec.examples import BN_AFTER_ACTIVATION
from models.spec.layers import LAYER_CLASSES, BlockActivation
from models.summary import InvalidLayerError, summarize
from worker.build.model import build_model, count_params

LAYER_TYPES = [*sorted(LAYER_CLASSES), "DenseBlock"]
BLOCK_ACTIVATIONS = [name for part in get_args(BlockActivation) for name in get_args(part)]


def keras_counts(layer: keras.layers.Layer) -> tuple[int, int, int]:
    trainable = sum(math.prod(w.shape) for w in layer.trainable_weights)
    non_trainable = sum(math.prod(w.shape) for w in layer.non_trainable_weights)
    return trainable + non_trainable, trainable, non_trainable


def assert_matches_keras(spec: ModelSpec) -> None:
    summary = summarize(spec)
    keras.backend.clear_session()
    model = build_model(spec)
    assert (summary.total, summary.trainable, summary.non_trainable) == count_params(model)
    assert len(summary.layers) == len(model.layers)
    for row, layer in zip(summary.layers, model.layers, strict=True):
        assert row.output_shape == list(layer.output.shape), f"layer {row.index} ({row.type})"
        assert (row.params, row.trainable, row.non_trainable) == keras_counts(layer), (
            f"layer {row.index} ({row.type})"
        )
        assert row.name == layer.name  # the dry run names layers as the model does


class TestSeedNotebook:
    def test_bn_net_counts(self) -> None:
        spec = ModelSpec.model_validate(BN_AFTER_ACTIVATION["model"])
        summary = summarize(spec)
        assert (summary.total, summary.trainable, summary.non_trainable) == (
            271_346,
            268_978,
            2_368,
        )
        assert [row.output_shape for row in summary.layers] == [
            [None, 784],
            [None, 784],
            [None, 300],
            [None, 300],
            [None, 100],
            [None, 100],
            [None, 10],
        ]
        assert [row.params for row in summary.layers] == [0, 3136, 235_500, 1200, 30_100, 400, 1010]
        assert_matches_keras(spec)


class TestRows:
    def test_names_and_frozen_layers(self) -> None:
        spec = ModelSpec.model_validate(
            {
                "input_shape": [3],
                "layers": [
                    {"type": "Dense", "units": 4, "name": "hidden", "trainable": False},
                    {"type": "BatchNormalization", "trainable": False},
                ],
            }
        )
        first, second = summarize(spec).layers
        assert (first.name, first.trainable, first.non_trainable) == ("hidden", 0, 16)
        assert (second.name, second.trainable, second.non_trainable) == (
            "batch_normalization_1",
            0,
            16,
        )

    def test_block_rows_carry_the_block_index(self) -> None:
        spec = ModelSpec.model_validate(
            {
                "input_shape": [3],
                "layers": [
                    {"type": "Flatten"},
                    {
                        "type": "DenseBlock",
                        "name": "b",
                        "units": 4,
                        "activation": "prelu",
                        "batch_norm": "before",
                        "dropout": 0.1,
                    },
                    {"type": "Dense", "units": 2},
                ],
            }
        )
        rows = summarize(spec).layers
        assert [(row.index, row.spec_index, row.name) for row in rows] == [
            (0, 0, "flatten_0"),
            (1, 1, "b_dense"),
            (2, 1, "b_bn"),
            (3, 1, "b_prelu"),
            (4, 1, "b_dropout"),
            (5, 2, "dense_5"),
        ]
        assert [row.params for row in rows] == [0, 12, 16, 4, 0, 10]
        assert_matches_keras(spec)

    def test_memory_estimate(self) -> None:
        spec = ModelSpec.model_validate(
            {"input_shape": [2, 3], "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 4}]}
        )
        summary = summarize(spec, batch_size=8)
        assert summary.weight_bytes == 4 * (6 * 4 + 4)
        assert summary.activation_bytes_per_example == 4 * (6 + 6 + 4)
        assert summary.memory_estimate_bytes == summary.weight_bytes + 8 * 64

    def test_batch_size_must_be_positive(self) -> None:
        spec = ModelSpec.model_validate({"input_shape": [2], "layers": [{"type": "Flatten"}]})
        with pytest.raises(ValueError, match="batch_size"):
            summarize(spec, batch_size=0)


def invalid(input_shape: list[int], layer: dict[str, Any]) -> ModelSpec:
    return ModelSpec.model_validate(
        {"input_shape": input_shape, "layers": [{"type": "Flatten"}, {"type": "ReLU"}, layer]}
    )


#: Specs Keras refuses to build: the dry run must refuse them too, naming the layer.
KERAS_REFUSES = {
    "reshape-size": ([4, 3], {"type": "Reshape", "target_shape": [5]}, "12 values"),
    "reshape-not-divisible": ([4, 3], {"type": "Reshape", "target_shape": [5, -1]}, "multiple"),
    "batchnorm-batch-axis": ([4], {"type": "BatchNormalization", "axis": 0}, "batch axis"),
    "batchnorm-axis-range": ([4], {"type": "BatchNormalization", "axis": 2}, "out of range"),
    "layernorm-batch-axis": ([4], {"type": "LayerNormalization", "axis": -2}, "batch axis"),
    "prelu-axis-range": ([4], {"type": "PReLU", "shared_axes": [2]}, "shared_axes entry 2"),
}

#: Specs Keras builds but should not: a softmax over a missing axis fails only in fit().
KERAS_BUILDS_WRONGLY = {
    "softmax-axis-range": ([4], {"type": "Softmax", "axis": 2}, "out of range"),
}

#: Mistakes the spec itself refuses, before any shape is known. PReLU would read 0 and
#: negative shared axes as Python list indices (0 shares the last axis).
SPEC_REFUSES = {
    "reshape-two-unknowns": {"type": "Reshape", "target_shape": [-1, -1]},
    "reshape-zero": {"type": "Reshape", "target_shape": [0, -1]},
    "prelu-axis-zero": {"type": "PReLU", "shared_axes": [0]},
    "prelu-axis-negative": {"type": "PReLU", "shared_axes": [-1]},
}


#: Cases where a plausible mistake (an off-by-one axis, a square shape) would still pass.
KNOWN_SHAPES = {
    "prelu-shared-first": ([2, 3, 4], {"type": "PReLU", "shared_axes": [1]}),
    "prelu-shared-first-last": ([2, 3, 4], {"type": "PReLU", "shared_axes": [3, 1]}),
    "batchnorm-first-axis": ([2, 3], {"type": "BatchNormalization", "axis": 1, "center": False}),
    "layernorm-middle-axis": ([2, 3, 4], {"type": "LayerNormalization", "axis": -2}),
    "reshape-inferred": ([3, 4], {"type": "Reshape", "target_shape": [-1, 2, 3]}),
    "dense-rank-3": ([2, 3, 4], {"type": "Dense", "units": 5, "use_bias": False}),
    "softmax-first-axis": ([2, 3], {"type": "Softmax", "axis": 1}),
}


@pytest.mark.parametrize(("input_shape", "layer"), KNOWN_SHAPES.values(), ids=KNOWN_SHAPES.keys())
def test_known_shapes_match_keras(input_shape: list[int], layer: dict[str, Any]) -> None:
    assert_matches_keras(ModelSpec.model_validate({"input_shape": input_shape, "layers": [layer]}))


class TestInvalid:
    @pytest.mark.parametrize(
        ("input_shape", "layer", "reason"), KERAS_REFUSES.values(), ids=KERAS_REFUSES.keys()
    )
    def test_keras_refuses_too(
        self, input_shape: list[int], layer: dict[str, Any], reason: str
    ) -> None:
        spec = invalid(input_shape, layer)
        with pytest.raises(InvalidLayerError, match=reason) as caught:
            summarize(spec)
        assert caught.value.index == 2
        assert str(caught.value).startswith(f"model.layers.2 ({layer['type']}): ")
        keras.backend.clear_session()
        with pytest.raises((ValueError, IndexError)):
            build_model(spec)

    @pytest.mark.parametrize(
        ("input_shape", "layer", "reason"),
        KERAS_BUILDS_WRONGLY.values(),
        ids=KERAS_BUILDS_WRONGLY.keys(),
    )
    def test_refused_before_keras_misbehaves(
        self, input_shape: list[int], layer: dict[str, Any], reason: str
    ) -> None:
        with pytest.raises(InvalidLayerError, match=reason):
            summarize(invalid(input_shape, layer))

    @pytest.mark.parametrize("layer", SPEC_REFUSES.values(), ids=SPEC_REFUSES.keys())
    def test_spec_refuses_before_any_shape(self, layer: dict[str, Any]) -> None:
        with pytest.raises(ValidationError) as caught:
            invalid([4, 3], layer)
        assert caught.value.errors()[0]["loc"][:3] == ("layers", 2, layer["type"])

    def test_repeated_layer_names_are_refused(self) -> None:
        layers = [
            {"type": "Dense", "units": 2, "name": "b_dense"},
            {"type": "DenseBlock", "units": 2, "name": "b"},
        ]
        with pytest.raises(ValidationError, match="repeated: b_dense"):
            ModelSpec.model_validate({"input_shape": [3], "layers": layers})


# --- property test: random valid specs against Keras -------------------------------------

Draw = st.DrawFn
MAX_DIM = 6
MAX_UNITS = 16


def draw_reshape_target(draw: Draw, size: int) -> list[int]:
    target: list[int] = []
    remaining = size
    for _ in range(draw(st.integers(0, 2))):
        dim = draw(st.sampled_from([d for d in range(1, remaining + 1) if remaining % d == 0]))
        target.append(dim)
        remaining //= dim
    target.append(remaining)
    target = draw(st.permutations(target))
    if draw(st.booleans()):
        target[draw(st.integers(0, len(target) - 1))] = -1
    return target


def draw_layer(draw: Draw, layer_type: str, shape: list[int]) -> tuple[dict[str, Any], list[int]]:
    """A valid layer for input ``shape`` (no batch axis) and the shape it outputs."""
    rank = len(shape)
    feature_axis = st.integers(1, rank) | st.integers(-rank, -1)
    args: dict[str, Any]
    if layer_type == "Dense":
        units = draw(st.integers(1, MAX_UNITS))
        args = {
            "units": units,
            "use_bias": draw(st.booleans()),
            "activation": draw(st.none() | st.sampled_from(get_args(ActivationName))),
            "kernel_initializer": draw(st.sampled_from(get_args(InitializerName))),
        }
        return args, [*shape[:-1], units]
    if layer_type == "DenseBlock":
        units = draw(st.integers(1, MAX_UNITS))
        args = {
            "units": units,
            "activation": draw(st.none() | st.sampled_from(BLOCK_ACTIVATIONS)),
            "batch_norm": draw(st.sampled_from([None, "before", "after"])),
            "dropout": draw(st.none() | st.floats(0, 0.9)),
            "dropout_type": draw(st.sampled_from(["Dropout", "AlphaDropout", "MCDropout"])),
        }
        return args, [*shape[:-1], units]
    if layer_type == "Flatten":
        return {}, [math.prod(shape)]
    if layer_type == "Reshape":
        target = draw_reshape_target(draw, math.prod(shape))
        size = math.prod(shape)
        known = math.prod(d for d in target if d != -1)
        return {"target_shape": target}, [size // known if d == -1 else d for d in target]
    if layer_type in ("BatchNormalization", "LayerNormalization"):
        args = {"axis": draw(feature_axis), "center": draw(st.booleans())}
        args["scale"] = draw(st.booleans())
    elif layer_type == "PReLU":
        shared_axes = st.lists(st.integers(1, rank), min_size=1, max_size=rank)
        args = {"shared_axes": draw(st.none() | shared_axes)}
    elif layer_type == "Softmax":
        args = {"axis": draw(st.integers(-rank - 1, rank))}
    elif layer_type == "Activation":
        args = {"activation": draw(st.sampled_from(get_args(ActivationName)))}
    elif layer_type in ("Dropout", "AlphaDropout", "GaussianDropout", "MCDropout"):
        args = {"rate": draw(st.floats(0, 0.9))}
    elif layer_type == "GaussianNoise":
        args = {"stddev": draw(st.floats(0.01, 1))}
    elif layer_type == "LeakyReLU":
        args = {"negative_slope": draw(st.floats(0, 1))}
    elif layer_type == "RReLU":
        lower = draw(st.floats(0, 0.9))
        args = {"lower": lower, "upper": draw(st.floats(max(lower, 0.01), 0.99))}
    elif layer_type == "ELU":
        args = {"alpha": draw(st.floats(0.1, 2))}
    else:
        args = {}
    return args, shape


@st.composite
def model_specs(draw: Draw) -> ModelSpec:
    shape = draw(st.lists(st.integers(1, MAX_DIM), min_size=1, max_size=3))
    input_shape = list(shape)
    layers: list[dict[str, Any]] = []
    for index in range(draw(st.integers(1, 6))):
        layer_type = draw(st.sampled_from(LAYER_TYPES))
        args, shape = draw_layer(draw, layer_type, shape)
        if draw(st.booleans()):
            args["trainable"] = False
        if draw(st.booleans()):
            args["name"] = f"layer{index}"
        layers.append({"type": layer_type, **args})
    return ModelSpec.model_validate({"input_shape": input_shape, "layers": layers})


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(spec=model_specs())
def test_random_specs_match_keras(spec: ModelSpec) -> None:
    assert_matches_keras(spec)
