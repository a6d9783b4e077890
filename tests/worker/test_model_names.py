"""Any name the spec accepts trains: the job's name becomes a model (scope) name the
backend accepts, whatever its characters."""

from __future__ import annotations

import numpy as np
import pytest

from models.spec import ModelSpec
from models.spec.optimizers import SGD
from worker.build.model import build_model, compile_model, keras_name


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("étude", "tude"),
        ("#1 baseline", "1_baseline"),
        ("net-A_2", "net-A_2"),
        ("___", None),
        ("日本語", None),
        ("x" * 100, "x" * 64),
    ],
)
def test_names_become_scope_names(name: str, expected: str | None) -> None:
    assert keras_name(name) == expected


@pytest.mark.parametrize("name", ["étude", "#1 baseline", "a $\\foo{$", "日本語", ". / >"])
def test_a_model_named_anything_trains(name: str) -> None:
    spec = ModelSpec.model_validate(
        {"input_shape": [4], "layers": [{"type": "Dense", "units": 2, "activation": "softmax"}]}
    )
    model = build_model(spec, name=name)
    compile_model(model, "sparse_categorical_crossentropy", SGD(type="SGD"))
    history = model.fit(np.zeros((8, 4)), np.zeros(8), epochs=1, verbose=0)
    assert np.isfinite(history.history["loss"][0])
