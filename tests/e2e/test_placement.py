"""Placement: a job waits in the queue of the devices it asks for, says why while no worker
serves it, and runs once a worker that has them starts; ``gpus: 2`` trains data-parallel
over the worker's two devices (two logical CPU devices here: the GPU list the worker
advertises is given, as a container without nvidia-smi would give it) with the loss
curve of one device, and resumes after kill -9 from its checkpoint.

Real Celery queues on each backend's broker, real worker processes; one stack per
backend, in the order a user would meet these: waiting, then running, then surviving."""

from __future__ import annotations

import copy
import math
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.spec.examples import DIGITS_SPEC
from netkiln.harness import process_env
from tests.conftest import Backend
from tests.e2e.conftest import FAST_RECOVERY, PATIENCE, Service

pytestmark = pytest.mark.e2e

#: What a worker holding groups of two (fake) GPUs of type a100 is started with; its pool
#: process splits its CPU in two so the job has two devices to split batches over.
TWO_GPU_WORKER = {
    "NETKILN_WORKER_GPUS": "0,1",
    "NETKILN_WORKER_GPUS_PER_JOB": "2",
    "NETKILN_WORKER_GPU_TYPE": "a100",
    "NETKILN_WORKER_LOGICAL_CPUS": "2",
}


@pytest.fixture(scope="module")
def stack(
    backend: Backend, keras_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = process_env(keras_home, {**backend.env, **FAST_RECOVERY})
    svc = Service(backend, None, env, tmp_path_factory.mktemp(f"placement-{backend.name}"))
    svc.start(worker=False)
    svc.start_worker("cpu-worker", NETKILN_WORKER_GPUS="none")
    yield svc
    svc.stop()


def spec(name: str, epochs: int, **resources: Any) -> dict[str, Any]:
    """The digits example without its Dropout and BatchNormalization: the devices of a
    data-parallel job draw their dropout masks from other random streams than one device
    does, and normalize by the statistics of their half of each batch, so with those the
    curves differ by more than the order of additions."""
    job = copy.deepcopy(DIGITS_SPEC) | {"name": name}
    job["model"]["layers"] = [
        layer
        for layer in job["model"]["layers"]
        if layer["type"] not in ("Dropout", "BatchNormalization")
    ]
    job["fit"] = {**job["fit"], "epochs": epochs}
    if resources:
        job["resources"] = resources
    return job


def submit(client: httpx.Client, job: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=job)
    assert response.status_code == 202, response.text
    return str(response.json()["id"])


def wait_until(stack: Service, check: Any) -> Any:
    deadline = time.monotonic() + PATIENCE
    while not (value := check()):
        assert time.monotonic() < deadline, stack.tail()
        time.sleep(0.2)
    return value


def losses(client: httpx.Client, job_id: str) -> list[float]:
    rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
    return [row["values"]["loss"] for row in rows]


def test_a_gpu_job_waits_for_a_worker_with_gpus_then_trains_data_parallel(
    stack: Service,
) -> None:
    with stack.client() as client:
        two_gpus = submit(client, spec("two-gpus", 4, accelerator="gpu", gpus=2))
        h200 = submit(client, spec("needs-h200", 4, accelerator="gpu", gpu_type="h200"))
        one_device = submit(client, spec("one-device", 4))

        # The CPU job runs on the CPU worker; the GPU jobs wait, saying why and for what.
        assert stack.wait_for(one_device)["status"] == "succeeded", stack.tail()
        waiting = client.get(f"/v1/jobs/{two_gpus}").json()
        assert waiting["status"] == "queued"
        assert waiting["queue"]["queue"] == "netkiln.gpu.x2"
        assert waiting["queue"]["reason"] == "no_worker_for_resources"
        assert "netkiln worker --gpus 0,1 --gpus-per-job 2" in waiting["queue"]["message"]
        assert waiting["queue"]["position"] == 1
        dry = client.post(
            "/v1/jobs", params={"dry_run": "true"}, json=spec("x", 1, accelerator="gpu", gpus=2)
        ).json()
        assert dry["estimate"] is None  # no worker serving the queue has measured anything

        stack.start_worker("gpu-worker", **TWO_GPU_WORKER)
        trained = stack.wait_for(two_gpus)
        assert trained["status"] == "succeeded", stack.tail()
        [plan] = trained["execution"]
        assert plan["devices"] == ["cpu:0", "cpu:1"]
        assert plan["steps_per_execution"] == 1
        assert "MirroredStrategy" in plan["reason"]

        # The same spec and seed on one device: the batches split in two with their
        # gradients averaged is the same descent, up to the order of additions.
        single, parallel = losses(client, one_device), losses(client, two_gpus)
        assert len(parallel) == len(single) == 4
        for ours, reference in zip(parallel, single, strict=True):
            assert math.isclose(ours, reference, rel_tol=0.01), (parallel, single)
        assert parallel[-1] < parallel[0]

        # No worker has h200s: that job still waits, for the same reason.
        typed = client.get(f"/v1/jobs/{h200}").json()
        assert typed["status"] == "queued"
        assert typed["queue"]["queue"] == "netkiln.gpu.h200.x1"
        assert typed["queue"]["reason"] == "no_worker_for_resources"
        assert client.post(f"/v1/jobs/{h200}/cancel").status_code == 202


def test_a_data_parallel_job_resumes_after_kill_9(stack: Service) -> None:
    job = spec("two-gpus-kill-9", 8, accelerator="gpu", gpus=2)
    job["fit"]["batch_size"] = 8
    with stack.client() as client:
        if "gpu-worker" not in stack.processes:  # run alone (-k)
            stack.start_worker("gpu-worker", **TWO_GPU_WORKER)
        job_id = submit(client, job)
        wait_until(stack, lambda: client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] >= 2)

        stack.processes["gpu-worker"].stop(signal.SIGKILL)
        killed = client.get(f"/v1/jobs/{job_id}").json()
        checkpointed = killed["checkpoint_epoch"]
        assert checkpointed >= 2
        before = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]

        stack.start_worker("gpu-worker", **TWO_GPU_WORKER)
        done = stack.wait_for(job_id)
        assert done["status"] == "succeeded", stack.tail()
        assert done["attempt"] == 2
        after = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
        assert [row["epoch"] for row in after] == list(range(1, 9))
        assert after[:checkpointed] == before[:checkpointed]
        logs = [line["message"] for line in client.get(f"/v1/jobs/{job_id}/logs").json()["lines"]]
        assert f"resuming from the checkpoint after epoch {checkpointed}" in logs
        assert done["execution"][0]["devices"] == ["cpu:0", "cpu:1"]
        # Resumed with its optimizer state: the loss goes on from where it was.
        resumed = after[checkpointed]["values"]["loss"]
        assert resumed < after[0]["values"]["loss"]
