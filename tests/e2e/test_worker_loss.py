"""A worker killed mid-job does not strand the job: the reconciler of the next worker
notices the silent heartbeat, re-queues the job, and a second attempt finishes it."""

from __future__ import annotations

import copy
import signal
import time

import pytest

from tests.e2e.conftest import Service, stop
from tests.e2e.test_train import DIGITS_SPEC

pytestmark = pytest.mark.e2e


def test_sigkilled_worker_job_is_retried_to_completion(service: Service) -> None:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = "survives-sigkill"
    spec["fit"] = {"epochs": 30, "batch_size": 8}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        deadline = time.monotonic() + 120
        while client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] < 2:
            assert time.monotonic() < deadline, service.tail()
            time.sleep(0.1)

        stop(service.processes["worker"], signal.SIGKILL)
        killed = client.get(f"/v1/jobs/{job_id}").json()
        assert killed["status"] == "running"
        assert killed["attempt"] == 1

        service.start_worker()
        job = service.wait_for(job_id, timeout=240)
        assert job["status"] == "succeeded", (job, service.tail())
        assert job["attempt"] == 2
        epochs = [row["epoch"] for row in client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]]
        assert epochs == list(range(1, 31))  # one row per epoch, no duplicates
