"""The pretraining autoencoder: mirrored decoder shapes, tied weights sharing the encoder's
kernels, a checkpoint round trip (what a resumed pretrain job loads), and the exported
encoder."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np
import pytest

from models.spec import PretrainJobSpec, job_spec_adapter
from worker.build.autoencoder import TiedAutoencoder, build_autoencoder, encoder_of


def spec(tied: bool) -> PretrainJobSpec:
    parsed = job_spec_adapter.validate_python(
        {
            "kind": "pretrain",
            "dataset": {"name": "digits", "unlabeled": True},
            "encoder": {
                "input_shape": [8, 8],
                "layers": [
                    {"type": "Flatten"},
                    {"type": "Dense", "units": 16, "activation": "selu"},
                    {"type": "Dense", "units": 4, "activation": "selu"},
                ],
            },
            "tied_weights": tied,
            "fit": {"epochs": 1},
        }
    )
    assert isinstance(parsed, PretrainJobSpec)
    return parsed


def data() -> np.ndarray:
    return np.random.default_rng(0).uniform(size=(64, 8, 8)).astype("float32")


def test_decoder_mirrors_the_encoder() -> None:
    assert spec(tied=False).mirrored_dense() == [(16, "selu"), (64, "sigmoid")]
    model = build_autoencoder(spec(tied=False))
    assert model.output_shape == (None, 8, 8)
    # Untied: encoder 64·16+16 + 16·4+4, decoder 4·16+16 + 16·64+64.
    assert model.count_params() == 1040 + 68 + 80 + 1088


def test_tied_decoder_reuses_the_encoder_kernels() -> None:
    model = build_autoencoder(spec(tied=True))
    assert isinstance(model, TiedAutoencoder)
    assert model.count_params() == 1040 + 68 + 16 + 64  # only the decoder biases are new
    assert model(data()).shape == (64, 8, 8)


@pytest.mark.parametrize("tied", [False, True])
def test_checkpoint_round_trip_and_encoder_export(tmp_path: Path, tied: bool) -> None:
    pretrain = spec(tied)
    model = build_autoencoder(pretrain)
    model.compile(loss="mean_squared_error", optimizer="adam")
    x = data()
    model.fit(x, x, epochs=2, verbose=0)
    path = tmp_path / "checkpoint.keras"
    model.save(path)
    restored = keras.models.load_model(path)
    np.testing.assert_allclose(
        restored.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
    assert int(restored.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())

    encoder = encoder_of(model, pretrain)
    assert encoder.output_shape == (None, 4)
    assert [type(layer).__name__ for layer in encoder.layers] == ["Flatten", "Dense", "Dense"]
    np.testing.assert_array_equal(
        encoder.layers[1].get_weights()[0],
        model.get_layer("encoder").layers[1].get_weights()[0]
        if tied
        else model.layers[1].get_weights()[0],
    )
