"""Preflight: specs sure to fail (or to train nonsense) against their data are 422s at the
field with what to change, in the dry run and at submit, on both backends; what merely
looks wrong is a warning with a stable code."""

from __future__ import annotations

import copy
import json
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from models.spec.examples import DIGITS_SPEC
from tests.conftest import Backend, api_client, npz

Change = Callable[[dict[str, Any]], None]
OUTPUT = ["model", "layers", 4]  # DIGITS_SPEC's last layer


@pytest.fixture(scope="module")
def client(backend: Backend) -> Iterator[TestClient]:
    with api_client(backend.settings()) as test_client:
        yield test_client


def digits(change: Change) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_SPEC)
    change(spec)
    return spec


def _set(path: str, value: Any) -> Change:
    def change(spec: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        node = spec
        for key in parents:
            node = node[int(key)] if isinstance(node, list) else node.setdefault(key, {})
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value

    return change


def _all(*changes: Change) -> Change:
    def change(spec: dict[str, Any]) -> None:
        for each in changes:
            each(spec)

    return change


def _no_flatten(shape: list[int]) -> Change:
    def change(spec: dict[str, Any]) -> None:
        spec["model"]["input_shape"] = shape
        spec["model"]["layers"] = spec["model"]["layers"][1:]

    return change


REFUSED: list[tuple[str, Change, list[str | int], str]] = [
    ("flat input", _no_flatten([64]), ["model", "input_shape"], 'put {"type": "Flatten"} first'),
    ("wrong input", _set("model.input_shape", [28, 28]), ["model", "input_shape"], "[8, 8]"),
    ("narrow head", _set("model.layers.4.units", 3), OUTPUT, "set its units to 10"),
    (
        "one-hot loss, id labels",
        _set("compile.loss", "categorical_crossentropy"),
        ["compile", "loss"],
        "set dataset.one_hot to true",
    ),
    (
        "sparse loss, one-hot labels",
        _set("dataset.one_hot", True),
        ["dataset", "one_hot"],
        "set one_hot to false",
    ),
    ("mse on ten units", _set("compile.loss", "mse"), OUTPUT, "set its units to 1"),
    (
        "binary on ten classes",
        _all(
            _set("compile.loss", "binary_crossentropy"),
            _set("model.layers.4", {"type": "Dense", "units": 1, "activation": "sigmoid"}),
        ),
        ["compile", "loss"],
        "needs labels 0 and 1",
    ),
    ("no class 12", _set("dataset.classes", [3, 12]), ["dataset", "classes"], "no class 12"),
    (
        "nothing to validate on",
        _all(_set("dataset.limit", 1), _set("fit.validation_split", 0.5)),
        ["fit", "validation_split"],
        "each needs at least one",
    ),
    (
        "everything held out",
        _all(
            _set("fit.validation_split", 0.0),
            _set("fit.validation", {"take": "first", "examples": 5000}),
        ),
        ["fit", "validation"],
        "leaves 0 to train on",
    ),
    (
        "monitor not logged",
        _all(
            _set("fit.validation_split", 0.1),
            _set("fit.early_stopping", {"monitor": "val_auc"}),
        ),
        ["fit", "early_stopping", "monitor"],
        "'val_auc' is not logged",
    ),
    (
        "val_ monitor, no validation",
        _all(
            _set("fit.validation_split", 0.0),
            _set("fit.early_stopping", {"monitor": "val_loss"}),
        ),
        ["fit", "early_stopping", "monitor"],
        "set fit.validation_split",
    ),
    (
        "batch over three GPUs",
        _all(_set("resources", {"accelerator": "gpu", "gpus": 3}), _set("fit.batch_size", 32)),
        ["fit", "batch_size"],
        "such as 30 or 33",
    ),
]


@pytest.mark.parametrize(("case", "change", "loc", "hint"), REFUSED, ids=[c[0] for c in REFUSED])
@pytest.mark.parametrize("dry_run", [True, False], ids=["dry-run", "submit"])
def test_doomed_spec_is_422_at_the_field_with_the_fix(
    client: TestClient,
    case: str,
    change: Change,
    loc: list[str | int],
    hint: str,
    dry_run: bool,
) -> None:
    response = client.post("/v1/jobs", params={"dry_run": dry_run}, json=digits(change))
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", *loc], error
    assert hint in error["msg"], error


def test_a_spec_the_data_fits_passes_without_preflight_warnings(client: TestClient) -> None:
    spec = digits(
        _all(_set("fit.validation_split", 0.1), _set("fit.early_stopping", {"monitor": "val_loss"}))
    )
    response = client.post("/v1/jobs?dry_run=true", json=spec)
    assert response.status_code == 200, response.text
    assert response.json()["warnings"] == []


def test_selected_classes_size_the_head(client: TestClient) -> None:
    """Géron's task B: two classes relabelled 0 and 1 make a 2-unit softmax right."""
    spec = digits(
        _all(
            _set("dataset.classes", [5, 6]),
            _set("dataset.relabel", {"5": 0, "6": 1}),
            _set("model.layers.4.units", 2),
        )
    )
    assert client.post("/v1/jobs?dry_run=true", json=spec).status_code == 200
    too_narrow = digits(_all(_set("dataset.classes", [5, 6, 7]), _set("model.layers.4.units", 2)))
    response = client.post("/v1/jobs?dry_run=true", json=too_narrow)
    assert response.status_code == 422
    assert "3 classes" in response.json()["detail"][0]["msg"]


def test_suspicious_choices_are_warnings_with_stable_codes(client: TestClient) -> None:
    regression = digits(_all(_set("compile.loss", "mse"), _set("model.layers.4.units", 1)))
    wide = digits(_set("model.layers.4.units", 12))
    codes = {
        w["code"]
        for spec in (regression, wide)
        for w in client.post("/v1/jobs?dry_run=true", json=spec).json()["warnings"]
    }
    assert codes == {"regression_on_class_ids", "unused_outputs"}


def test_uploaded_float_targets_refuse_a_classification_loss(client: TestClient) -> None:
    rng = np.random.default_rng(0)
    data = npz(x_train=rng.random((30, 3), dtype=np.float32), y_train=rng.random(30))
    upload = client.post("/v1/datasets", files={"file": ("values.npz", data)})
    assert upload.status_code == 201, upload.text
    spec = {
        "dataset": {"id": upload.json()["id"], "preprocessing": "none"},
        "model": {"input_shape": [3], "layers": [{"type": "Dense", "units": 1}]},
        "compile": {"loss": "sparse_categorical_crossentropy"},
        "fit": {"epochs": 1},
    }
    refused = client.post("/v1/jobs?dry_run=true", json=spec)
    assert refused.status_code == 422, refused.text
    assert refused.json()["detail"][0]["loc"] == ["body", "compile", "loss"]
    spec["compile"] = {"loss": "mse"}
    assert client.post("/v1/jobs?dry_run=true", json=spec).status_code == 200


@pytest.mark.parametrize(
    ("change", "sizes"),
    [
        (_set("fit.validation_split", 0.1), {"train": 1293, "validation": 144, "test": 360}),
        (
            _all(
                _set("fit.validation_split", 0.0),
                _set("fit.validation", {"take": "first", "examples": 437}),
            ),
            {"train": 1000, "validation": 437, "test": 360},
        ),
        (
            # Two of ten balanced classes, then the limit on the training split.
            _all(
                _set("dataset.classes", [5, 6]),
                _set("dataset.limit", {"train": 100}),
                _set("model.layers.4.units", 2),
            ),
            {"train": 90, "validation": 10, "test": 72},
        ),
    ],
)
def test_the_dry_run_reports_the_examples_it_will_use(
    client: TestClient, change: Change, sizes: dict[str, int]
) -> None:
    response = client.post("/v1/jobs?dry_run=true", json=digits(change))
    assert response.status_code == 200, response.text
    assert response.json()["data"] == sizes


# --- every kind, uploads too -------------------------------------------------------------

EXAMPLES = Path(__file__).parents[2] / "examples"


def pretrain(**changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "pretrain",
        "dataset": {"name": "digits", "unlabeled": True},
        "encoder": {
            "input_shape": [8, 8],
            "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 4, "activation": "selu"}],
        },
        "fit": {"epochs": 1},
    }
    for path, value in changes.items():
        _set(path.replace("__", "."), value)(spec)
    return spec


@pytest.fixture(scope="module")
def uploads(client: TestClient) -> dict[str, str]:
    """A base model taking 64 features, and datasets: 64 features in 3 classes, 64 float
    targets, and 64 features with 2-wide target rows."""
    keras.backend.clear_session()
    base = keras.Sequential(
        [keras.Input((64,)), keras.layers.Dense(8, name="hidden"), keras.layers.Dense(3)]
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "base.keras"
        base.save(path)
        model = client.post("/v1/models", files={"file": ("base.keras", path.read_bytes())})
    assert model.status_code == 201, model.text
    rng = np.random.default_rng(0)
    x = rng.random((60, 64), dtype=np.float32)
    ids = {"model": model.json()["id"]}
    for name, y in (
        ("classes", np.arange(60) % 3),
        ("values", rng.random(60)),
        ("rows", rng.random((60, 2))),
    ):
        data = npz(x_train=x, y_train=y)
        upload = client.post("/v1/datasets", files={"file": (f"{name}.npz", data)})
        assert upload.status_code == 201, upload.text
        ids[name] = upload.json()["id"]
    return ids


def transfer(ids: dict[str, str], dataset: str = "classes", **changes: Any) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "kind": "transfer",
        "base": {"model": ids["model"]},
        "head": [{"type": "Dense", "units": 3, "activation": "softmax"}],
        "dataset": {"id": ids[dataset], "preprocessing": "none"},
        "compile": {"loss": "sparse_categorical_crossentropy"},
        "phases": [{"trainable": "head", "epochs": 1, "optimizer": "adam"}],
    }
    for path, value in changes.items():
        _set(path.replace("__", "."), value)(spec)
    return spec


def upload_train(ids: dict[str, str], dataset: str, units: int, loss: str) -> dict[str, Any]:
    return {
        "dataset": {"id": ids[dataset], "preprocessing": "none"},
        "model": {"input_shape": [64], "layers": [{"type": "Dense", "units": units}]},
        "compile": {"loss": loss},
        "fit": {"epochs": 1},
    }


KINDS: list[tuple[str, Callable[[dict[str, str]], dict[str, Any]], list[str | int], str]] = [
    (
        "transfer: base takes 64, digits are 8×8",
        lambda ids: transfer(ids, dataset__id=None, dataset__name="digits"),
        ["dataset"],
        "the base model takes inputs of shape [64]",
    ),
    (
        "transfer: narrow head",
        lambda ids: transfer(ids, head__0__units=2),
        ["head", 0],
        "set its units to 3",
    ),
    (
        "transfer: one-hot loss on ids",
        lambda ids: transfer(ids, compile__loss="categorical_crossentropy"),
        ["compile", "loss"],
        "one_hot",
    ),
    (
        "transfer: no class 7",
        lambda ids: transfer(ids, dataset__classes=[0, 7]),
        ["dataset", "classes"],
        "no class 7",
    ),
    (
        "transfer: all held out",
        lambda ids: transfer(ids, fit={"validation": {"examples": 60}}),
        ["fit", "validation"],
        "leaves 0",
    ),
    (
        "pretrain: encoder input",
        lambda ids: pretrain(encoder__input_shape=[28, 28]),
        ["encoder", "input_shape"],
        "[8, 8]",
    ),
    (
        "pretrain: nothing left to validate",
        lambda ids: pretrain(dataset__limit=1, fit__validation_split=0.5),
        ["fit", "validation_split"],
        "leaves",
    ),
    (
        "pretrain: class 42",
        lambda ids: pretrain(dataset__classes=[42]),
        ["dataset", "classes"],
        "no class 42",
    ),
    (
        "upload: classification loss on values",
        lambda ids: upload_train(ids, "values", 1, "sparse_categorical_crossentropy"),
        ["compile", "loss"],
        "values",
    ),
    (
        "upload: values into 3 units",
        lambda ids: upload_train(ids, "values", 3, "mse"),
        ["model", "layers", 0],
        "set its units to 1",
    ),
    (
        "upload: 2-wide rows into 1 unit",
        lambda ids: upload_train(ids, "rows", 1, "mse"),
        ["model", "layers", 0],
        "set its units to 2",
    ),
    (
        "upload: classes on values",
        lambda ids: {
            **upload_train(ids, "values", 1, "mse"),
            "dataset": {"id": ids["values"], "classes": [0, 1]},
        },
        ["dataset", "classes"],
        "not class ids",
    ),
    (
        "upload: input shape",
        lambda ids: {
            **upload_train(ids, "classes", 3, "sparse_categorical_crossentropy"),
            "model": {
                "input_shape": [8, 8],
                "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 3}],
            },
        },
        ["model", "input_shape"],
        "set input_shape to [64]",
    ),
    (
        "upload: three classes, binary loss",
        lambda ids: upload_train(ids, "classes", 1, "binary_crossentropy"),
        ["compile", "loss"],
        "labels 0 and 1",
    ),
]


@pytest.mark.parametrize(("case", "build", "loc", "hint"), KINDS, ids=[c[0] for c in KINDS])
def test_doomed_specs_of_every_kind(
    client: TestClient,
    uploads: dict[str, str],
    case: str,
    build: Callable[[dict[str, str]], dict[str, Any]],
    loc: list[str | int],
    hint: str,
) -> None:
    response = client.post("/v1/jobs?dry_run=true", json=build(uploads))
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", *loc], error
    assert hint in error["msg"], error


def test_the_doomed_tables_are_broad() -> None:
    assert len(REFUSED) + len(KINDS) >= 25


@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.json")), ids=lambda path: path.stem)
def test_no_example_is_refused(client: TestClient, path: Path) -> None:
    """No false alarms: every example as written passes preflight without a warning of
    its own making (a data-independent lint may still speak)."""
    response = client.post("/v1/jobs?dry_run=true", json=json.loads(path.read_text()))
    assert response.status_code == 200, (path.name, response.text)
    codes = {warning["code"] for warning in response.json()["warnings"]}
    assert not codes & {"regression_on_class_ids", "unused_outputs"}, (path.name, codes)
