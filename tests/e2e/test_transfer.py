"""Transfer learning and pretraining through real processes on both backends: frozen
phases leave the base's weights bit-identical, unfrozen ones change them, the stored base
never changes, and a pretrain → transfer chain runs end to end."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import keras
import numpy as np
import pytest

from tests.e2e.conftest import Service

pytestmark = pytest.mark.e2e

TASK_A = {"name": "fashion_mnist", "classes": [0, 1, 2, 3, 4, 7, 8, 9]}
TASK_B = {"name": "fashion_mnist", "classes": [5, 6], "relabel": {"5": 0, "6": 1}}

NET_A: dict[str, Any] = {
    "name": "net_A",
    "seed": 1,
    "dataset": TASK_A,
    "model": {
        "input_shape": [28, 28],
        "layers": [
            {"type": "Flatten"},
            {
                "type": "Dense",
                "units": 16,
                "activation": "selu",
                "kernel_initializer": "lecun_normal",
            },
            {"type": "BatchNormalization"},
            {
                "type": "Dense",
                "units": 8,
                "activation": "selu",
                "kernel_initializer": "lecun_normal",
            },
            {"type": "Dense", "units": 8, "activation": "softmax"},
        ],
    },
    "compile": {
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "SGD", "lr": 0.01},
    },
    "fit": {"epochs": 2},
}


def transfer(base: dict[str, str], phases: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {
        "kind": "transfer",
        "seed": 2,
        "base": base,
        "head": [{"type": "Dense", "units": 1, "activation": "sigmoid"}],
        "dataset": TASK_B,
        "compile": {"loss": "binary_crossentropy", "metrics": ["accuracy"]},
        "phases": phases,
        **extra,
    }


FROZEN = {
    "name": "frozen",
    "trainable": "head",
    "epochs": 2,
    "optimizer": {"type": "SGD", "lr": 0.01},
}
UNFROZEN = {
    "name": "unfrozen",
    "trainable": "all",
    "epochs": 2,
    "optimizer": {"type": "SGD", "lr": 0.01},
}


def submit_and_wait(service: Service, spec: dict[str, Any]) -> dict[str, Any]:
    with service.client() as client:
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        job = service.wait_for(response.json()["id"])
    assert job["status"] == "succeeded", (job["error"], service.tail())
    return job


def download(service: Service, job: dict[str, Any], folder: Path) -> keras.Model:
    path = folder / f"{job['id']}.keras"
    with service.client() as client:
        path.write_bytes(client.get(f"/v1/jobs/{job['id']}/model").content)
    return keras.models.load_model(path)


def stored_sha256(service: Service, job_id: str) -> tuple[str, str]:
    """The base's recorded digest and the digest of the file in artifact storage now."""
    with service.client() as client:
        job = client.get(f"/v1/jobs/{job_id}").json()
    artifact = next(item for item in job["artifacts"] if item["format"] == "keras")
    path = Path(service.backend.data_dir) / "tenants" / "default" / "jobs" / job_id / "model.keras"
    return artifact["sha256"], hashlib.sha256(path.read_bytes()).hexdigest()


def test_frozen_and_unfrozen_phases(service: Service, tmp_path: Path) -> None:
    net_a = submit_and_wait(service, NET_A)
    base_digest_before = stored_sha256(service, net_a["id"])
    assert base_digest_before[0] == base_digest_before[1]
    base = download(service, net_a, tmp_path)

    with service.client() as client:
        dry = client.post(
            "/v1/jobs?dry_run=true", json=transfer({"job": net_a["id"]}, [FROZEN, UNFROZEN])
        ).json()
    names = [row["name"] for row in dry["summary"]["layers"]]
    assert names == ["flatten_0", "dense_1", "batch_normalization_2", "dense_3", "head_dense_0"]
    assert dry["summary"]["total"] == base.count_params() - (8 * 8 + 8) + (8 + 1)

    frozen_only = submit_and_wait(service, transfer({"job": net_a["id"]}, [FROZEN]))
    both = submit_and_wait(service, transfer({"job": net_a["id"]}, [FROZEN, UNFROZEN]))

    kept = ["dense_1", "batch_normalization_2", "dense_3"]
    frozen_model = download(service, frozen_only, tmp_path)
    for name in kept:  # bit-identical, moving BN statistics included (inference mode)
        for ours, theirs in zip(
            frozen_model.get_layer(name).get_weights(),
            base.get_layer(name).get_weights(),
            strict=True,
        ):
            np.testing.assert_array_equal(ours, theirs)

    unfrozen_model = download(service, both, tmp_path)
    for name in ("dense_1", "dense_3"):
        assert not np.array_equal(
            unfrozen_model.get_layer(name).get_weights()[0], base.get_layer(name).get_weights()[0]
        )

    first, second = both["phases"]
    assert first["trainable_layers"] == ["head_dense_0"]
    assert first["frozen_layers"] == ["flatten_0", *kept]
    assert first["params"]["trainable"] == 8 + 1
    assert second["frozen_layers"] == []
    assert second["params"]["trainable"] == both["params"]["trainable"]
    with service.client() as client:
        rows = client.get(f"/v1/jobs/{both['id']}/metrics").json()["epochs"]
    assert [(row["epoch"], row["values"]["phase"]) for row in rows] == [
        (1, 1.0),
        (2, 1.0),
        (3, 2.0),
        (4, 2.0),
    ]
    assert stored_sha256(service, net_a["id"]) == base_digest_before  # base never modified


def test_gradual_unfreezing_trains_the_top_layers_only(service: Service) -> None:
    net_a = submit_and_wait(service, NET_A | {"name": "net_A_gradual"})
    top_one = {
        "name": "top-1",
        "trainable": {"top": 1},
        "epochs": 1,
        "optimizer": {"type": "SGD", "lr": 0.01},
    }
    job = submit_and_wait(service, transfer({"job": net_a["id"]}, [FROZEN, top_one]))
    assert job["phases"][1]["trainable_layers"] == ["dense_3", "head_dense_0"]


def test_pretrain_then_transfer_chain(service: Service, tmp_path: Path) -> None:
    pretrain = {
        "kind": "pretrain",
        "name": "autoencoder",
        "seed": 3,
        "dataset": {"name": "fashion_mnist", "unlabeled": True},
        "encoder": {
            "input_shape": [28, 28],
            "layers": [
                {"type": "Flatten"},
                {
                    "type": "Dense",
                    "units": 32,
                    "activation": "selu",
                    "kernel_initializer": "lecun_normal",
                },
                {
                    "type": "Dense",
                    "units": 16,
                    "activation": "selu",
                    "kernel_initializer": "lecun_normal",
                },
            ],
        },
        "tied_weights": True,
        "fit": {"epochs": 3, "batch_size": 32},
    }
    encoder_job = submit_and_wait(service, pretrain)
    with service.client() as client:
        rows = client.get(f"/v1/jobs/{encoder_job['id']}/metrics").json()["epochs"]
    assert rows[-1]["values"]["loss"] < rows[0]["values"]["loss"]  # it learned to reconstruct
    encoder = download(service, encoder_job, tmp_path)
    assert [type(layer).__name__ for layer in encoder.layers] == ["Flatten", "Dense", "Dense"]
    assert encoder.output_shape == (None, 16)
    assert encoder_job["params"]["total"] == encoder.count_params() == 784 * 32 + 32 + 32 * 16 + 16

    classifier = {
        "kind": "transfer",
        "seed": 4,
        "base": {"job": encoder_job["id"]},
        "cut": {"drop": 0},
        "head": [{"type": "Dense", "units": 10, "activation": "softmax"}],
        "dataset": {"name": "fashion_mnist"},
        "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        "phases": [FROZEN, UNFROZEN],
    }
    job = submit_and_wait(service, classifier)
    assert job["params"]["total"] == encoder.count_params() + 16 * 10 + 10
    assert job["test_metrics"]["accuracy"] > 0.2  # learned something from 200 images
