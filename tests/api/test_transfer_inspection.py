"""The dry run of transfer jobs: the base's rows come from an upload's inspection or a
job's stored summary, the head is summarized on the cut's output shape, and impossible
cuts or unusable bases are 422s pointing at the field."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient

from tests.conftest import Backend, api_client, npz

HEAD = [{"type": "Dense", "units": 2, "activation": "softmax"}]


@pytest.fixture(scope="module")
def client(backend: Backend) -> Iterator[TestClient]:
    with api_client(backend.settings()) as test_client:
        yield test_client


@pytest.fixture(scope="module")
def uploaded(client: TestClient, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    model = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4, name="hidden"),
            keras.layers.BatchNormalization(name="norm"),
            keras.layers.Dense(3, activation="softmax", name="out"),
        ]
    )
    path = Path(tmp_path_factory.mktemp("base")) / "base.keras"
    model.save(path)
    response = client.post("/v1/models", files={"file": ("base.keras", path.read_bytes())})
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def upload_dataset(client: TestClient, shape: tuple[int, ...], classes: int = 2) -> str:
    """An uploaded dataset whose examples fit a base (preflight holds specs to the data)."""
    rng = np.random.default_rng(0)
    data = npz(x_train=rng.random((40, *shape), dtype=np.float32), y_train=np.arange(40) % classes)
    response = client.post("/v1/datasets", files={"file": ("data.npz", data)})
    assert response.status_code == 201, response.text
    dataset_id: str = response.json()["id"]
    return dataset_id


@pytest.fixture(scope="module")
def six_features(client: TestClient) -> str:
    """Examples for the module's base model (6 inputs), in two classes for HEAD."""
    return upload_dataset(client, (6,))


Transfer = Callable[..., dict[str, Any]]


@pytest.fixture
def transfer(six_features: str) -> Transfer:
    """A transfer spec from ``base``, on the six-feature dataset, with ``extra`` fields."""
    return lambda base, **extra: transfer_spec(base, {"id": six_features}, **extra)


def transfer_spec(base: dict[str, str], dataset: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "transfer",
        "base": base,
        "head": HEAD,
        "dataset": dataset,
        "compile": {"loss": "sparse_categorical_crossentropy"},
        "phases": [{"trainable": "head", "epochs": 1, "optimizer": "sgd"}],
        **extra,
    }


def test_dry_run_from_an_upload_counts_like_keras(
    client: TestClient, uploaded: dict[str, Any], transfer: Transfer
) -> None:
    response = client.post("/v1/jobs?dry_run=true", json=transfer({"model": uploaded["id"]}))
    assert response.status_code == 200, response.text
    summary = response.json()["summary"]
    assert [row["name"] for row in summary["layers"]] == ["hidden", "norm", "head_dense_0"]
    keras.backend.clear_session()
    expected = keras.Sequential(
        [
            keras.Input((6,)),
            keras.layers.Dense(4),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(2, activation="softmax"),
        ]
    )
    assert summary["total"] == expected.count_params() == 6 * 4 + 4 + 4 * 4 + 4 * 2 + 2
    assert summary["non_trainable"] == 8  # BN's moving mean and variance
    assert summary["layers"][-1]["output_shape"] == [None, 2]


def test_cut_after_a_named_layer(
    client: TestClient, uploaded: dict[str, Any], transfer: Transfer
) -> None:
    spec = transfer({"model": uploaded["id"]}, cut={"after": "hidden"})
    summary = client.post("/v1/jobs?dry_run=true", json=spec).json()["summary"]
    assert [row["name"] for row in summary["layers"]] == ["hidden", "head_dense_0"]


@pytest.mark.parametrize(
    ("cut", "message"),
    [({"drop": 3}, "cannot drop 3"), ({"after": "nope"}, "no layer 'nope'")],
)
def test_impossible_cut_is_422_at_cut(
    client: TestClient,
    uploaded: dict[str, Any],
    cut: dict[str, Any],
    message: str,
    transfer: Transfer,
) -> None:
    response = client.post("/v1/jobs", json=transfer({"model": uploaded["id"]}, cut=cut))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "cut"]
    assert message in error["msg"]


def test_base_job_must_have_succeeded(client: TestClient, transfer: Transfer) -> None:
    queued = client.post(
        "/v1/jobs",
        json={
            "dataset": {"name": "digits"},
            "model": {
                "input_shape": [8, 8],
                "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10}],
            },
            "compile": {"loss": "sparse_categorical_crossentropy"},
            "fit": {"epochs": 1},
        },
    ).json()
    response = client.post("/v1/jobs", json=transfer({"job": queued["id"]}))
    assert response.status_code == 422
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "base", "job"]
    assert "queued" in error["msg"]
    unknown = client.post(
        "/v1/jobs", json=transfer({"model": "00000000-0000-0000-0000-000000000000"})
    )
    assert unknown.status_code == 422


def test_transfer_warnings(
    client: TestClient, uploaded: dict[str, Any], transfer: Transfer
) -> None:
    spec = transfer({"model": uploaded["id"]})
    spec["phases"] = [
        {"trainable": "head", "epochs": 1, "optimizer": {"type": "SGD", "lr": 0.001}},
        {"trainable": {"top": 1}, "epochs": 1, "optimizer": {"type": "SGD", "lr": 0.01}},
    ]
    codes = {w["code"] for w in client.post("/v1/jobs?dry_run=true", json=spec).json()["warnings"]}
    assert codes == {"bn_trainable_in_frozen_base", "unfreeze_lr_higher"}


def test_a_head_too_narrow_for_the_classes_is_422_at_its_last_layer(
    client: TestClient, uploaded: dict[str, Any], transfer: Transfer
) -> None:
    """A warning once (head_units_loss_mismatch); with the data known, a sure failure."""
    spec = transfer({"model": uploaded["id"]})
    spec["head"] = [{"type": "Dense", "units": 1, "activation": "sigmoid"}]
    response = client.post("/v1/jobs?dry_run=true", json=spec)
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "head", 0]
    assert "set its units to 2" in error["msg"]


def test_cut_wider_than_a_head_may_take_is_422_at_cut(
    client: TestClient, tmp_path: Path, transfer: Transfer
) -> None:
    """A legitimate base whose output at the cut is wider than a spec's input may be."""
    wide = keras.Sequential(
        [keras.Input((2,)), keras.layers.Dense(70_000, name="wide"), keras.layers.Dense(1)]
    )
    path = tmp_path / "wide.keras"
    wide.save(path)
    upload = client.post("/v1/models", files={"file": ("wide.keras", path.read_bytes())})
    assert upload.status_code == 201, upload.text
    response = client.post("/v1/jobs?dry_run=true", json=transfer({"model": upload.json()["id"]}))
    assert response.status_code == 422, response.text
    [error] = response.json()["detail"]
    assert error["loc"] == ["body", "cut"]
    assert "cut elsewhere" in error["msg"]


def test_a_cut_the_inspection_cannot_shape_is_refused_not_left_uncounted(
    client: TestClient, tmp_path: Path, transfer: Transfer
) -> None:
    """Permute has no shape rule here: a head after it could not be counted against
    max_params, so the cut is refused (it used to pass with an empty summary)."""
    keras.backend.clear_session()
    model = keras.Sequential(
        [
            keras.Input((4, 3)),
            keras.layers.Permute((2, 1), name="swap"),
            keras.layers.Flatten(name="flat"),
            keras.layers.Dense(2, name="out"),
        ]
    )
    path = tmp_path / "permute.keras"
    model.save(path)
    upload = client.post("/v1/models", files={"file": ("permute.keras", path.read_bytes())})
    assert upload.status_code == 201, upload.text
    base = {"model": upload.json()["id"]}

    refused = client.post("/v1/jobs?dry_run=true", json=transfer(base, cut={"after": "swap"}))
    assert refused.status_code == 422, refused.text
    detail = refused.json()["detail"][0]
    assert detail["loc"] == ["body", "cut"]
    assert "'swap', a Permute" in detail["msg"]
    assert "cut before that layer" in detail["msg"]
    # Past it, Keras recorded each layer's built input shape: counted as usual.
    spec = transfer(base, cut={"after": "flat"})
    spec["dataset"] = {"id": upload_dataset(client, (4, 3))}
    counted = client.post("/v1/jobs?dry_run=true", json=spec)
    assert counted.status_code == 200, counted.text
    assert counted.json()["summary"]["total"] == 12 * 2 + 2
