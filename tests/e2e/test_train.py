"""A POSTed spec trains a real Keras net to completion, through real API and worker
processes, on both backends; the downloaded models reproduce the recorded evaluation."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest

from models.spec import DatasetSpec
from models.spec.examples import DIGITS_SPEC
from tests.conftest import npz
from tests.e2e.conftest import Service
from worker.data import load_dataset

pytestmark = pytest.mark.e2e


def test_job_trains_and_models_reproduce_recorded_evaluation(
    service: Service, tmp_path: Path
) -> None:
    with service.client() as client:
        created = client.post("/v1/jobs", json=DIGITS_SPEC)
        assert created.status_code == 202, created.text
        job_id = created.json()["id"]
        assert created.json()["status"] == "queued"
        assert created.headers["location"] == f"/v1/jobs/{job_id}"

        job = service.wait_for(job_id)
        assert job["status"] == "succeeded", (job, service.tail())
        assert job["attempt"] == 1
        progress = job["progress"]
        assert (progress["epoch"], progress["epochs"], progress["fraction"]) == (4, 4, 1.0)
        assert progress["steps_per_epoch"] == 41  # 1437 * 0.9 / 32, rounded up
        assert job["params"] == {"total": 2538, "trainable": 2474, "non_trainable": 64}
        # Counted at submit without TensorFlow, recounted by the worker from Keras: equal.
        assert created.json()["params"] == job["params"]
        assert job["versions"]["keras"] == keras.__version__
        assert {a["format"] for a in job["artifacts"]} == {"keras", "h5", "checkpoint"}

        metrics = client.get(f"/v1/jobs/{job_id}/metrics").json()
        assert [row["epoch"] for row in metrics["epochs"]] == [1, 2, 3, 4]
        for row in metrics["epochs"]:
            assert {"loss", "accuracy", "val_loss", "val_accuracy", "learning_rate"} <= set(
                row["values"]
            )
        assert metrics["epochs"][-1]["values"]["loss"] < metrics["epochs"][0]["values"]["loss"]
        recorded = metrics["test"]
        assert recorded == job["test_metrics"]
        assert recorded["accuracy"] > 0.8  # a real net learned the digits

        data = load_dataset(DatasetSpec.model_validate(DIGITS_SPEC["dataset"]))
        predictions = []
        for fmt, media_type in (("keras", "application/zip"), ("h5", "application/x-hdf5")):
            response = client.get(f"/v1/jobs/{job_id}/model", params={"format": fmt})
            assert response.status_code == 200
            assert response.headers["content-type"] == media_type
            assert f'filename="digits-bn.{fmt}"' in response.headers["content-disposition"]
            artifact = next(a for a in job["artifacts"] if a["format"] == fmt)
            assert response.headers["etag"] == f'"{artifact["sha256"]}"'
            assert len(response.content) == artifact["size"]
            unchanged = client.get(
                f"/v1/jobs/{job_id}/model",
                params={"format": fmt},
                headers={"If-None-Match": response.headers["etag"]},
            )
            assert unchanged.status_code == 304

            path = tmp_path / f"model.{fmt}"
            path.write_bytes(response.content)
            model = keras.models.load_model(path)
            evaluation = model.evaluate(
                data.x_test, data.y_test, batch_size=32, return_dict=True, verbose=0
            )
            assert evaluation["loss"] == pytest.approx(recorded["loss"], rel=1e-5)
            assert evaluation["accuracy"] == pytest.approx(recorded["accuracy"], abs=1e-6)
            probabilities = model.predict(data.x_test, verbose=0)
            accuracy = float(np.mean(probabilities.argmax(axis=1) == data.y_test))
            assert accuracy == pytest.approx(recorded["accuracy"], abs=1e-6)
            predictions.append(probabilities)
        np.testing.assert_allclose(predictions[0], predictions[1], rtol=1e-6, atol=1e-7)


def overflowing_spec(client: httpx.Client) -> dict[str, Any]:
    data = npz(x_train=np.full((8, 4), 1e39), y_train=np.arange(8) % 2)
    upload = client.post("/v1/datasets", files={"file": ("huge.npz", data)})
    assert upload.status_code == 201, upload.text
    return {
        "name": "overflows-float32",
        "dataset": {"id": upload.json()["id"], "preprocessing": "none"},
        "model": {
            "input_shape": [4],
            "layers": [{"type": "Dense", "units": 2, "activation": "softmax"}],
        },
        "compile": {"loss": "sparse_categorical_crossentropy"},
        "fit": {"epochs": 1},
    }


def out_of_memory_spec(client: httpx.Client) -> dict[str, Any]:
    """A model whose first kernel (200,000 × 65,536 floats, 52 GB) no allocator on this
    machine grants: TensorFlow raises ResourceExhaustedError while building it, the same
    error a GPU out of memory raises, without touching the machine's real memory."""
    data = npz(x_train=np.zeros((8, 4, 50_000), "float32"), y_train=np.arange(8) % 2)
    upload = client.post("/v1/datasets", files={"file": ("wide.npz", data)})
    assert upload.status_code == 201, upload.text
    return {
        "name": "too-big-for-memory",
        "dataset": {"id": upload.json()["id"], "preprocessing": "none"},
        "model": {
            "input_shape": [4, 50_000],
            "layers": [
                {"type": "Flatten"},
                {"type": "Dense", "units": 65_536},
                {"type": "Dense", "units": 2, "activation": "softmax"},
            ],
        },
        "compile": {"loss": "sparse_categorical_crossentropy"},
        "fit": {"epochs": 1},
    }


def test_failed_job_reports_reason_and_worker_lives_on(service: Service) -> None:
    diverging = copy.deepcopy(DIGITS_SPEC)
    diverging["dataset"]["preprocessing"] = "none"
    diverging["model"]["layers"] = [
        {"type": "Flatten"},
        {"type": "Dense", "units": 64, "activation": "relu", "kernel_initializer": "ones"},
        {"type": "Dense", "units": 64, "activation": "relu", "kernel_initializer": "ones"},
        {"type": "Dense", "units": 1},  # regress the digit's value
    ]
    diverging["compile"] = {"loss": "mse", "optimizer": {"type": "SGD", "learning_rate": 10}}
    with service.client() as client:
        # What preflight cannot see (it reads shapes, not values): finite float64 inputs
        # that overflow the float32 a network trains in.
        overflow_id = client.post("/v1/jobs", json=overflowing_spec(client)).json()["id"]
        oom_id = client.post("/v1/jobs", json=out_of_memory_spec(client)).json()["id"]
        nan_id = client.post("/v1/jobs", json=diverging).json()["id"]
        healthy_id = client.post("/v1/jobs", json=DIGITS_SPEC | {"name": "after"}).json()["id"]

        overflow = service.wait_for(overflow_id)
        assert overflow["status"] == "failed", overflow
        assert overflow["error"]["code"] == "invalid_data"
        assert "infinite" in overflow["error"]["message"]

        oom = service.wait_for(oom_id)
        assert oom["status"] == "failed", oom
        assert oom["error"]["code"] == "out_of_memory"
        assert oom["attempt"] == 1  # not an infrastructure failure: not retried

        nan = service.wait_for(nan_id)
        assert nan["status"] == "failed"
        assert nan["error"]["code"] == "nan_loss"
        assert "learning rate" in nan["error"]["message"]

        assert service.wait_for(healthy_id)["status"] == "succeeded"
        missing = client.get(f"/v1/jobs/{nan_id}/model")
        assert missing.status_code == 409
    assert service.processes["worker"].poll() is None


def test_idx_dataset_through_keras_cache(service: Service) -> None:
    """Fashion-MNIST read by the real loader from the (test-made) Keras cache."""
    spec = {
        "name": "fashion-tiny",
        "seed": 3,
        "dataset": {"name": "fashion_mnist", "preprocessing": "scale"},
        "model": {
            "input_shape": [28, 28],
            "layers": [
                {"type": "Flatten"},
                {"type": "Dense", "units": 16, "activation": "relu"},
                {"type": "Dense", "units": 10, "activation": "softmax"},
            ],
        },
        "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        "fit": {"epochs": 2},
    }
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = service.wait_for(job_id)
        assert job["status"] == "succeeded", (job, service.tail())
        model_bytes = client.get(f"/v1/jobs/{job_id}/model").content
    assert model_bytes[:2] == b"PK"  # a .keras file is a zip archive
    # 200 training images of 10 distinct synthetic patterns: the net must beat chance.
    assert job["test_metrics"]["accuracy"] > 0.3
    assert job["params"]["total"] == 28 * 28 * 16 + 16 + 16 * 10 + 10


def test_validation_held_out_from_the_first_examples(service: Service, tmp_path: Path) -> None:
    """fit.validation takes the first examples (Géron's X_train_full[:5000]): the epochs
    train on the rest, and the last epoch's val_ metrics are the trained model's on those
    first examples."""
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "held-out-first"}
    spec["fit"] = {"epochs": 2, "batch_size": 32, "validation": {"take": "first", "examples": 437}}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = service.wait_for(job_id)
        assert job["status"] == "succeeded", (job, service.tail())
        assert job["progress"]["steps_per_epoch"] == 32  # 1,000 left to train, by 32
        last = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"][-1]["values"]
        path = tmp_path / "held-out.keras"
        path.write_bytes(client.get(f"/v1/jobs/{job_id}/model").content)
    data = load_dataset(DatasetSpec.model_validate(spec["dataset"]))
    model = keras.models.load_model(path)
    held = model.evaluate(
        data.x_train[:437], data.y_train[:437], batch_size=32, return_dict=True, verbose=0
    )
    assert held["loss"] == pytest.approx(last["val_loss"], rel=1e-5)
    assert held["accuracy"] == pytest.approx(last["val_accuracy"], abs=1e-6)
    assert job["warnings"] == []  # it learned: no outcome warning


def test_a_job_that_learned_nothing_succeeds_with_a_warning(service: Service) -> None:
    """All-zero kernels under ReLU (the chapter's symmetry trap): no gradient reaches a
    kernel, only the output bias learns the class frequencies, and the job ends at chance.
    It did what it was asked, so it succeeds, and says it learned nothing."""
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "zeros-at-chance"}
    zeros = {"activation": "relu", "kernel_initializer": "zeros"}
    spec["model"]["layers"] = [
        {"type": "Flatten"},
        {"type": "Dense", "units": 32, **zeros},
        {"type": "Dense", "units": 10, "activation": "softmax", "kernel_initializer": "zeros"},
    ]
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
    job = service.wait_for(job_id)
    assert job["status"] == "succeeded", (job, service.tail())
    [warning] = job["warnings"]
    assert warning["code"] == "no_better_than_chance", job
    assert job["test_metrics"]["accuracy"] < 0.2


def test_a_loss_that_ran_away_succeeds_with_a_warning(service: Service) -> None:
    """Two calm epochs, then the learning rate jumps to 10 with clipped gradients: every
    step moves the weights by 10, the loss climbs far above its best and never reaches
    NaN (Keras clips the probabilities), so the job succeeds, saying it diverged."""
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "runs-away"}
    rates = {"type": "piecewise_constant", "boundaries": [2], "values": [0.05, 10.0]}
    spec["compile"] = {
        **spec["compile"],
        "optimizer": {"type": "SGD", "learning_rate": rates, "clipnorm": 1.0},
    }
    spec["fit"] = {**spec["fit"], "epochs": 6}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
    job = service.wait_for(job_id)
    assert job["status"] == "succeeded", (job, service.tail())
    codes = {warning["code"] for warning in job["warnings"]}
    assert "loss_diverged" in codes, job


def test_a_test_split_the_model_overflows_on_fails_invalid_data(service: Service) -> None:
    """Training finite, evaluation not (the test inputs are 1e30): the job fails with the
    reason, rather than storing NaN metrics (PostgreSQL's jsonb cannot hold them)."""
    rng = np.random.default_rng(0)
    data = npz(
        x_train=rng.random((16, 4), dtype=np.float32),
        y_train=rng.random(16),
        x_test=np.full((4, 4), 1e30, np.float32),
        y_test=rng.random(4),
    )
    with service.client() as client:
        upload = client.post("/v1/datasets", files={"file": ("far.npz", data)})
        assert upload.status_code == 201, upload.text
        spec = {
            "name": "overflows-on-test",
            "dataset": {"id": upload.json()["id"], "preprocessing": "none"},
            "model": {"input_shape": [4], "layers": [{"type": "Dense", "units": 1}]},
            "compile": {"loss": "mse"},
            "fit": {"epochs": 1},
        }
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
    job = service.wait_for(job_id)
    assert job["status"] == "failed", job
    assert job["error"]["code"] == "invalid_data"
    assert "evaluating on the test split gave non-finite loss" in job["error"]["message"]
