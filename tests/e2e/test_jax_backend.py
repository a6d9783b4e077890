"""The same jobs on Keras's JAX backend (NETKILN_KERAS_BACKEND=jax, the jax extra): the
builder, netkiln's own layers (RReLU, MC dropout), the schedule and early-stopping
callbacks, checkpoints and the saved model use only the ``keras`` API, so a worker on JAX
trains what a TensorFlow worker trains, and plain Keras on TensorFlow loads its model."""

from __future__ import annotations

import copy
import importlib.util
import io
import math
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.spec.examples import DIGITS_SPEC
from netkiln.harness import process_env
from tests.conftest import Backend
from tests.e2e.conftest import Service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def jax_service(keras_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    if importlib.util.find_spec("jax") is None:
        pytest.skip("the jax extra is not installed")
    root = tmp_path_factory.mktemp("jax")
    backend = Backend("embedded-jax", root)
    env = process_env(keras_home, {**backend.env, "NETKILN_KERAS_BACKEND": "jax"})
    (root / "logs").mkdir()
    service = Service(backend, None, env, root / "logs")
    service.start()
    yield service
    service.stop()


def test_a_job_with_netkilns_own_layers_and_callbacks_trains_on_jax(
    jax_service: Service, tmp_path: Path
) -> None:
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "on-jax"}
    spec["model"]["layers"] = [
        {"type": "Flatten"},
        {"type": "Dense", "units": 32, "kernel_initializer": "he_normal"},
        {"type": "RReLU", "lower": 0.125, "upper": 0.333},
        {"type": "BatchNormalization"},
        {"type": "MCDropout", "rate": 0.1},
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ]
    spec["compile"]["optimizer"]["learning_rate"] = {
        "type": "exponential",
        "initial_learning_rate": 0.05,
        "steps": 20,
    }
    spec["fit"] = {
        **spec["fit"],
        "epochs": 3,
        "early_stopping": {"monitor": "val_loss", "patience": 5},
    }
    with jax_service.client() as client:
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        job = jax_service.wait_for(response.json()["id"])
        assert job["status"] == "succeeded", (job, jax_service.tail())
        assert job["versions"]["keras_backend"] == "jax"
        assert job["execution"][0]["backend"] == "jax"
        assert job["test_metrics"]["accuracy"] > 0.5
        model = client.get(f"/v1/jobs/{job['id']}/model")
        assert model.status_code == 200
    assert zipfile.is_zipfile(io.BytesIO(model.content))
    # Saved on JAX, loaded by plain Keras on this (TensorFlow) process.
    import keras

    path = tmp_path / "on-jax.keras"
    path.write_bytes(model.content)
    loaded = keras.models.load_model(path)
    assert loaded.output_shape == (None, 10)


def test_a_two_device_job_trains_data_parallel_on_jax(jax_service: Service) -> None:
    """``resources.gpus: 2`` on JAX: Keras's DataParallel over the worker's two devices
    (logical CPU devices here), with the loss curve of one device."""
    from tests.e2e.test_placement import TWO_GPU_WORKER, losses, spec, submit

    jax_service.start_worker("jax-gpu-worker", **TWO_GPU_WORKER)
    with jax_service.client() as client:
        one = submit(client, spec("jax-one-device", 3))
        two = submit(client, spec("jax-two-devices", 3, accelerator="gpu", gpus=2))
        for job_id in (one, two):
            job = jax_service.wait_for(job_id)
            assert job["status"] == "succeeded", (job, jax_service.tail())
        [plan] = jax_service.wait_for(two)["execution"]
        assert plan["backend"] == "jax"
        assert plan["devices"] == ["cpu:0", "cpu:1"]
        assert plan["steps_per_execution"] > 1  # the TensorFlow-only restriction does not apply
        single, parallel = losses(client, one), losses(client, two)
    # Looser than on TensorFlow: JAX shards a batch as one array, so each split is cut to
    # an even count (an example of each goes unused) and the last batch of an epoch differs.
    for ours, reference in zip(parallel, single, strict=True):
        assert math.isclose(ours, reference, rel_tol=0.1), (parallel, single)
    assert parallel[-1] < parallel[0]
