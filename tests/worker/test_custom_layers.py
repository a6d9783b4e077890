"""RReLU and MC dropout: behaviour, serialization round trip, plain-Keras export; and
DenseBlock expanding to exactly the hand-written layers."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import keras
import numpy as np
import pytest

from models.spec import ModelSpec
from worker.build.custom_layers import MCDropout, RReLU, exportable
from worker.build.model import build_model, count_params


class TestRReLU:
    def test_training_draws_random_slopes_within_bounds(self) -> None:
        layer = RReLU(lower=0.1, upper=0.3, seed=1)
        x = -np.ones((64, 32), dtype="float32")
        slopes = keras.ops.convert_to_numpy(layer(x, training=True)) / x
        assert slopes.min() >= 0.1
        assert slopes.max() <= 0.3
        assert slopes.std() > 0.03  # really random, not one slope
        again = keras.ops.convert_to_numpy(layer(x, training=True)) / x
        assert not np.allclose(slopes, again)  # fresh draw per call

    def test_inference_uses_mean_slope_and_keeps_positives(self) -> None:
        layer = RReLU(lower=0.1, upper=0.3)
        x = np.array([[-2.0, -1.0, 0.0, 3.0]], dtype="float32")
        out = keras.ops.convert_to_numpy(layer(x, training=False))
        np.testing.assert_allclose(out, [[-0.4, -0.2, 0.0, 3.0]], rtol=1e-6)

    def test_config_round_trip(self) -> None:
        layer = RReLU(lower=0.05, upper=0.2, seed=3, name="r")
        clone = RReLU.from_config(layer.get_config())
        assert (clone.lower, clone.upper, clone.seed, clone.name) == (0.05, 0.2, 3, "r")


class TestMCDropout:
    def test_stays_active_at_inference(self) -> None:
        layer = MCDropout(rate=0.5, seed=0)
        out = keras.ops.convert_to_numpy(layer(np.ones((1, 1000), "float32"), training=False))
        assert 0.3 < (out == 0).mean() < 0.7

    def test_config_round_trip(self) -> None:
        layer = MCDropout(rate=0.3, seed=2)
        assert MCDropout.from_config(layer.get_config()).rate == 0.3


def _spec(layers: list[dict[str, object]]) -> ModelSpec:
    return ModelSpec.model_validate({"input_shape": [6], "layers": layers})


def test_rrelu_net_trains_and_exports_to_mean_slope_leaky_relu(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = build_model(
        _spec(
            [
                {"type": "Dense", "units": 16},
                {"type": "RReLU", "lower": 0.1, "upper": 0.3, "name": "rrelu"},
                {"type": "MCDropout", "rate": 0.2, "name": "mc"},
                {"type": "Dense", "units": 1},
            ]
        )
    )
    model.compile(loss="mse", optimizer=keras.optimizers.Adam(0.01))
    x = np.random.default_rng(0).normal(size=(128, 6)).astype("float32")
    y = x.sum(axis=1, keepdims=True)
    history = model.fit(x, y, epochs=20, verbose=0)
    assert history.history["loss"][-1] < history.history["loss"][0] / 2

    exported = exportable(model)
    leaky = exported.get_layer("rrelu")
    assert isinstance(leaky, keras.layers.LeakyReLU)
    assert leaky.negative_slope == pytest.approx(0.2)
    assert type(exported.get_layer("mc")) is keras.layers.Dropout
    kernel_before = model.layers[0].get_weights()[0]
    np.testing.assert_array_equal(exported.layers[0].get_weights()[0], kernel_before)

    path = tmp_path / "rrelu.keras"
    exported.save(path)
    # A fresh interpreter without netkiln's classes registered: plain Keras must load it.
    script = (
        "import sys, keras; m = keras.models.load_model(sys.argv[1]);"
        "print(type(m.get_layer('rrelu')).__name__, m.get_layer('rrelu').negative_slope)"
    )
    result = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, check=True
    )
    name, slope = result.stdout.split()[-2:]
    assert name == "LeakyReLU"
    assert float(slope) == pytest.approx(0.2)


def test_rrelu_inference_matches_exported_leaky_relu() -> None:
    model = build_model(_spec([{"type": "Dense", "units": 8}, {"type": "RReLU"}]))
    x = np.random.default_rng(1).normal(size=(16, 6)).astype("float32")
    np.testing.assert_allclose(
        keras.ops.convert_to_numpy(model(x, training=False)),
        keras.ops.convert_to_numpy(exportable(model)(x, training=False)),
        rtol=1e-6,
    )


@pytest.mark.parametrize(
    ("block", "layers"),
    [
        (
            {
                "type": "DenseBlock",
                "units": 30,
                "activation": "elu",
                "batch_norm": "before",
                "kernel_initializer": "he_normal",
            },
            [
                {
                    "type": "Dense",
                    "units": 30,
                    "use_bias": False,
                    "kernel_initializer": "he_normal",
                },
                {"type": "BatchNormalization"},
                {"type": "Activation", "activation": "elu"},
            ],
        ),
        (
            {
                "type": "DenseBlock",
                "units": 30,
                "activation": "elu",
                "batch_norm": "after",
                "dropout": 0.2,
            },
            [
                {"type": "Dense", "units": 30, "activation": "elu"},
                {"type": "BatchNormalization"},
                {"type": "Dropout", "rate": 0.2},
            ],
        ),
        (
            {
                "type": "DenseBlock",
                "units": 30,
                "activation": "selu",
                "kernel_initializer": "lecun_normal",
                "dropout": 0.1,
                "dropout_type": "AlphaDropout",
            },
            [
                {
                    "type": "Dense",
                    "units": 30,
                    "activation": "selu",
                    "kernel_initializer": "lecun_normal",
                },
                {"type": "AlphaDropout", "rate": 0.1},
            ],
        ),
    ],
)
def test_dense_block_expands_to_the_handwritten_layers(
    block: dict[str, object], layers: list[dict[str, object]]
) -> None:
    from_block = build_model(_spec([block]))
    by_hand = build_model(_spec(layers))
    assert [type(layer) for layer in from_block.layers] == [type(layer) for layer in by_hand.layers]
    assert count_params(from_block) == count_params(by_hand)
    for ours, theirs in zip(from_block.layers, by_hand.layers, strict=True):
        config, expected = ours.get_config(), theirs.get_config()
        for key in ("name", "seed"):
            config.pop(key, None)
            expected.pop(key, None)
        assert config == expected
