"""The spec's names and classes, checked against the installed Keras so they cannot drift:
every name resolves, every layer and optimizer builds, and their arguments take effect; every
layer spec's shape rule gives what Keras builds, for the dry run and for upload inspection."""

from __future__ import annotations

import json
from collections.abc import Callable
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import keras
import numpy as np
import pytest
from pydantic import TypeAdapter

from models.spec import LayerSpec, ModelSpec, OptimizerSpec
from models.spec.base import ActivationName, InitializerName, LossName, MetricName
from models.spec.layers import (
    LAYER_CLASSES,
    PRIMITIVE_LAYERS,
    SHAPE_PRESERVING_KERAS_LAYERS,
    PrimitiveLayerSpec,
    keras_output_shape,
)
from uploads.keras_names import KERAS_LAYERS
from worker.build.custom_layers import netkiln_layer
from worker.build.model import build_layer, build_model, build_optimizer


def union_types(annotation: Any) -> list[str]:
    """The ``type`` tags of a discriminated union, nested unions flattened."""
    if get_origin(annotation) is Annotated:
        return union_types(get_args(annotation)[0])
    if get_origin(annotation) in {Union, UnionType}:
        return [tag for member in get_args(annotation) for tag in union_types(member)]
    return list(get_args(annotation.model_fields["type"].annotation))


LAYERS = TypeAdapter(LayerSpec)
OPTIMIZERS = TypeAdapter(OptimizerSpec)
LAYER_TYPES = union_types(PrimitiveLayerSpec)
OPTIMIZER_TYPES = union_types(OptimizerSpec)


def tensor(values: Any) -> Any:
    return keras.ops.convert_to_tensor(np.asarray(values, dtype="float32"))


class TestNames:
    @pytest.mark.parametrize("name", get_args(ActivationName))
    def test_activation_resolves(self, name: str) -> None:
        activation = keras.activations.get(name)
        out = keras.ops.convert_to_numpy(activation(tensor([[-2.0, 0.0, 3.0]])))
        assert out.shape == (1, 3)
        assert np.isfinite(out).all()

    @pytest.mark.parametrize("name", get_args(InitializerName))
    def test_initializer_resolves(self, name: str) -> None:
        initializer = keras.initializers.get(name)
        assert isinstance(initializer, keras.initializers.Initializer)
        assert keras.ops.convert_to_numpy(initializer((4, 3))).shape == (4, 3)

    @pytest.mark.parametrize("name", get_args(LossName))
    def test_loss_resolves(self, name: str) -> None:
        loss = keras.losses.get(name)
        probabilities = tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
        targets = tensor([0, 2]) if name.startswith("sparse") else tensor(np.eye(3)[[0, 2]])
        value = keras.ops.convert_to_numpy(loss(targets, probabilities))
        assert np.isfinite(value).all()

    def test_unknown_names_do_not_resolve(self) -> None:
        # The checks above mean something only because Keras refuses what it lacks.
        with pytest.raises(ValueError, match="swishy"):
            keras.activations.get("swishy")
        with pytest.raises(ValueError, match="he_swishy"):
            keras.initializers.get("he_swishy")
        with pytest.raises(ValueError, match="mean_swishy"):
            keras.losses.get("mean_swishy")


# Every metric, by what it computes on the probabilities ``p`` of 10 classes, the labels ``y``
# and their one-hot form ``t``.
MetricValue = Callable[[np.ndarray, np.ndarray, np.ndarray], Any]
METRIC_VALUES: dict[str, MetricValue] = {
    "accuracy": lambda p, y, t: np.mean(p.argmax(1) == y),
    "sparse_categorical_accuracy": lambda p, y, t: np.mean(p.argmax(1) == y),
    "categorical_accuracy": lambda p, y, t: np.mean(p.argmax(1) == y),
    "binary_accuracy": lambda p, y, t: np.mean((p > 0.5) == t),
    "sparse_top_k_categorical_accuracy": lambda p, y, t: np.mean(
        [label in np.argsort(-row)[:5] for row, label in zip(p, y, strict=True)]
    ),
    "top_k_categorical_accuracy": lambda p, y, t: np.mean(
        [label in np.argsort(-row)[:5] for row, label in zip(p, y, strict=True)]
    ),
    "mse": lambda p, y, t: np.mean((p - t) ** 2),
    "mean_squared_error": lambda p, y, t: np.mean((p - t) ** 2),
    "mae": lambda p, y, t: np.mean(np.abs(p - t)),
    "mean_absolute_error": lambda p, y, t: np.mean(np.abs(p - t)),
}


class TestMetrics:
    def test_every_metric_name_has_an_expected_value(self) -> None:
        assert set(METRIC_VALUES) == set(get_args(MetricName))

    @pytest.mark.parametrize("name", get_args(MetricName))
    def test_metric_compiles_and_computes_what_it_names(self, name: str) -> None:
        # A zero kernel and a descending bias: every sample gets the same, tie-free scores.
        logits = np.linspace(1.0, -1.0, 10).astype("float32")
        model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(10, activation="softmax")])
        model.layers[0].set_weights([np.zeros((3, 10), "float32"), logits])
        sparse = name == "accuracy" or name.startswith("sparse")
        labels = np.array([0, 3, 5, 9])
        one_hot = np.eye(10, dtype="float32")[labels]
        model.compile(
            loss="sparse_categorical_crossentropy" if sparse else "categorical_crossentropy",
            metrics=[name],
            run_eagerly=True,  # the same metric objects, without tracing a graph per test
        )

        result = model.evaluate(
            np.ones((4, 3), "float32"), labels if sparse else one_hot, verbose=0, return_dict=True
        )

        probabilities = np.tile(np.exp(logits) / np.exp(logits).sum(), (4, 1))
        expected = METRIC_VALUES[name](probabilities, labels, one_hot)
        assert result[name] == pytest.approx(expected, rel=1e-5, abs=1e-6)


# Arguments without defaults; everything else stays at the spec's default.
REQUIRED: dict[str, dict[str, Any]] = {
    "Dense": {"units": 3},
    "Reshape": {"target_shape": [2, -1]},
    "Activation": {"activation": "relu"},
    "Dropout": {"rate": 0.5},
    "MCDropout": {"rate": 0.5},
    "AlphaDropout": {"rate": 0.5},
    "GaussianDropout": {"rate": 0.5},
    "GaussianNoise": {"stddev": 0.1},
}
#: Input shapes (no batch axis) every layer type is built on.
INPUT_SHAPES = [(4,), (3, 4)]


def layer_spec(type_name: str) -> PrimitiveLayerSpec:
    return PRIMITIVE_LAYERS.validate_python({"type": type_name, **REQUIRED.get(type_name, {})})


def weight_counts(layer: keras.layers.Layer) -> tuple[int, int]:
    return (
        sum(int(np.prod(weight.shape)) for weight in layer.trainable_weights),
        sum(int(np.prod(weight.shape)) for weight in layer.non_trainable_weights),
    )


class TestLayers:
    def test_the_union_is_the_registry(self) -> None:
        assert list(LAYER_CLASSES) == LAYER_TYPES

    @pytest.mark.parametrize("type_name", LAYER_TYPES)
    def test_type_names_a_keras_class_or_a_netkiln_one(self, type_name: str) -> None:
        layer = build_layer(layer_spec(type_name))

        custom = netkiln_layer(type_name)
        if custom is None:
            assert type(layer) is getattr(keras.layers, type_name)
        else:
            assert type(layer) is custom
            assert not hasattr(keras.layers, type_name), f"Keras has {type_name} now"

    @pytest.mark.parametrize("input_shape", INPUT_SHAPES, ids=str)
    @pytest.mark.parametrize("type_name", LAYER_TYPES)
    def test_rule_matches_what_keras_builds_and_runs(
        self, type_name: str, input_shape: tuple[int, ...]
    ) -> None:
        spec = layer_spec(type_name)
        layer = build_layer(spec)
        model = keras.Sequential([keras.Input(input_shape), layer])
        x = np.random.default_rng(0).normal(size=(5, *input_shape)).astype("float32")
        out = keras.ops.convert_to_numpy(model(x, training=True))

        effect = spec.effect(input_shape)
        assert out.shape == (5, *effect.output_shape)
        assert (effect.trainable, effect.non_trainable) == weight_counts(layer)
        assert np.isfinite(out).all()

    @pytest.mark.parametrize("input_shape", [*INPUT_SHAPES, (None, 4)], ids=str)
    @pytest.mark.parametrize("type_name", LAYER_TYPES)
    def test_rule_reads_a_saved_layer_as_keras_does(
        self, type_name: str, input_shape: tuple[int | None, ...]
    ) -> None:
        layer = build_layer(layer_spec(type_name))
        saved = json.loads(json.dumps(keras.saving.serialize_keras_object(layer)))

        shape = keras_output_shape(saved["class_name"], saved["config"], input_shape)

        assert shape == layer.compute_output_shape((None, *input_shape))[1:]

    @pytest.mark.parametrize(
        "block",
        [
            {"activation": "elu", "batch_norm": "before", "dropout": 0.2},
            {
                "activation": "rrelu",
                "batch_norm": "after",
                "dropout_type": "MCDropout",
                "dropout": 0.1,
            },
            {"activation": "prelu", "dropout": 0.1, "dropout_type": "AlphaDropout"},
            {},
        ],
        ids=["elu-bn-before", "rrelu-bn-after-mc", "prelu-alpha", "bare"],
    )
    def test_dense_block_builds_as_its_layers(self, block: dict[str, Any]) -> None:
        spec = ModelSpec.model_validate(
            {"input_shape": [4], "layers": [{"type": "DenseBlock", "units": 3, **block}]}
        )
        model = build_model(spec)
        assert len(model.layers) == len(spec.expanded_layers) > 0
        out = keras.ops.convert_to_numpy(model(np.ones((2, 4), "float32"), training=True))
        assert out.shape == (2, 3)
        assert np.isfinite(out).all()

    def test_nested_spec_objects_reach_the_keras_layer(self) -> None:
        spec = PRIMITIVE_LAYERS.validate_python(
            {
                "type": "Dense",
                "units": 3,
                "name": "hidden",
                "trainable": False,
                "kernel_initializer": {
                    "type": "VarianceScaling",
                    "scale": 2.0,
                    "mode": "fan_avg",
                    "distribution": "uniform",
                },
                "bias_initializer": {"type": "Constant", "value": 0.5},
                "kernel_regularizer": {"type": "l1_l2", "l1": 0.01, "l2": 0.02},
                "kernel_constraint": {"type": "MaxNorm", "max_value": 1.5},
                "bias_constraint": {"type": "NonNeg"},
            }
        )

        layer = build_layer(spec)

        assert (layer.name, layer.trainable) == ("hidden", False)
        initializer = layer.kernel_initializer
        assert isinstance(initializer, keras.initializers.VarianceScaling)
        assert (initializer.scale, initializer.mode, initializer.distribution) == (
            2.0,
            "fan_avg",
            "uniform",
        )
        assert isinstance(layer.bias_initializer, keras.initializers.Constant)
        assert layer.kernel_regularizer.get_config() == pytest.approx({"l1": 0.01, "l2": 0.02})
        assert isinstance(layer.kernel_constraint, keras.constraints.MaxNorm)
        assert layer.kernel_constraint.max_value == 1.5
        assert isinstance(layer.bias_constraint, keras.constraints.NonNeg)
        keras.Sequential([keras.Input((4,)), layer])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer.bias), 0.5)

    @pytest.mark.parametrize(
        "initializer",
        [
            {"type": "RandomNormal", "stddev": 0.2, "seed": 1},
            {"type": "TruncatedNormal", "stddev": 0.2, "seed": 1},
            {"type": "RandomUniform", "minval": -0.1, "maxval": 0.1, "seed": 1},
        ],
        ids=lambda initializer: initializer["type"],
    )
    def test_initializer_objects_build(self, initializer: dict[str, Any]) -> None:
        layer = build_layer(
            PRIMITIVE_LAYERS.validate_python(
                {"type": "Dense", "units": 3, "kernel_initializer": initializer}
            )
        )
        assert type(layer.kernel_initializer) is getattr(keras.initializers, initializer["type"])


#: Constructor arguments and an input shape each takes (with the batch axis).
SHAPE_PRESERVING_EXAMPLES: dict[str, tuple[dict[str, Any], tuple[int, ...]]] = {
    "GroupNormalization": ({"groups": 2}, (2, 3, 4)),
    "Rescaling": ({"scale": 2.0}, (2, 3, 4)),
    "SpatialDropout1D": ({"rate": 0.5}, (2, 3, 4)),
    "SpatialDropout2D": ({"rate": 0.5}, (2, 3, 4, 2)),
    "SpatialDropout3D": ({"rate": 0.5}, (2, 3, 4, 2, 2)),
}


@pytest.mark.parametrize("name", sorted(SHAPE_PRESERVING_KERAS_LAYERS))
def test_spec_less_keras_layers_keep_their_input_shape(name: str) -> None:
    assert name in KERAS_LAYERS
    assert name not in LAYER_CLASSES  # a spec class's own rule would apply instead
    args, shape = SHAPE_PRESERVING_EXAMPLES.get(name, ({}, (2, 3, 4)))
    layer = getattr(keras.layers, name)(**args)
    out = layer(np.ones(shape, "float32"))
    assert tuple(out.shape) == shape
    assert keras_output_shape(name, layer.get_config(), shape[1:]) == shape[1:]


def optimizer(type_name: str, **fields: Any) -> keras.optimizers.Optimizer:
    return build_optimizer(OPTIMIZERS.validate_python({"type": type_name, **fields}))


class TestOptimizers:
    @pytest.mark.parametrize("type_name", OPTIMIZER_TYPES)
    def test_spec_defaults_are_keras_defaults(self, type_name: str) -> None:
        built = optimizer(type_name)
        assert type(built) is getattr(keras.optimizers, type_name)
        ours = {k: v for k, v in built.get_config().items() if k != "name"}
        theirs = {k: v for k, v in getattr(keras.optimizers, type_name)().get_config().items()}
        assert ours == {k: v for k, v in theirs.items() if k != "name"}

    @pytest.mark.parametrize("type_name", OPTIMIZER_TYPES)
    def test_decay_follows_lr_over_one_plus_decay_times_iterations(self, type_name: str) -> None:
        built = optimizer(type_name, lr=0.1, decay=0.5)
        assert built.get_config()["learning_rate"]["class_name"] == "InverseTimeDecay"

        variable = keras.Variable(np.ones(2, "float32"))
        for _ in range(3):
            built.apply_gradients([(tensor([0.1, -0.1]), variable)])
        assert int(built.iterations) == 3
        assert float(built.learning_rate) == pytest.approx(0.1 / (1 + 0.5 * 3))
        for step in (0, 10, 1000):
            built.iterations.assign(step)
            assert float(built.learning_rate) == pytest.approx(0.1 / (1 + 0.5 * step))

    @pytest.mark.parametrize("type_name", OPTIMIZER_TYPES)
    @pytest.mark.parametrize("attribute", ["clipvalue", "clipnorm", "global_clipnorm"])
    def test_clipping_reaches_the_optimizer(self, type_name: str, attribute: str) -> None:
        built = optimizer(type_name, **{attribute: 0.75})
        assert getattr(built, attribute) == 0.75
        others = {"clipvalue", "clipnorm", "global_clipnorm"} - {attribute}
        assert all(getattr(built, other) is None for other in others)

    @pytest.mark.parametrize(
        ("clipping", "step"),
        [
            ({"clipvalue": 0.5}, [0.5, -0.5]),  # [3, -4] clipped element-wise
            ({"clipnorm": 1.0}, [0.6, -0.8]),  # [3, -4] rescaled to norm 1
            ({"global_clipnorm": 1.0}, [0.6, -0.8]),
        ],
        ids=["clipvalue", "clipnorm", "global_clipnorm"],
    )
    def test_clipping_limits_the_update(
        self, clipping: dict[str, float], step: list[float]
    ) -> None:
        built = optimizer("SGD", learning_rate=1.0, **clipping)
        variable = keras.Variable(np.zeros(2, "float32"))
        built.apply_gradients([(tensor([3.0, -4.0]), variable)])
        np.testing.assert_allclose(-keras.ops.convert_to_numpy(variable), step, rtol=1e-6)

    def test_weight_decay_reaches_the_optimizer(self) -> None:
        assert optimizer("AdamW").weight_decay == pytest.approx(0.004)
        assert optimizer("SGD", weight_decay=0.01).weight_decay == pytest.approx(0.01)
