"""A worker whose pool process is recycled (``NETKILN_WORKER_MAX_TASKS_PER_CHILD``) keeps
taking jobs: the new process imports TensorFlow, reports up in time, and uses database
connections of its own, not the reconciler's."""

from __future__ import annotations

import copy

import psutil
import pytest

from tests.e2e.conftest import Service, stop
from tests.e2e.test_train import DIGITS_SPEC
from worker.app import make_celery

pytestmark = pytest.mark.e2e


def pool_pids(service: Service) -> set[int]:
    return {child.pid for child in psutil.Process(service.processes["worker"].pid).children()}


def test_jobs_keep_running_across_pool_process_recycling(service: Service) -> None:
    stop(service.processes["worker"])
    # Messages earlier modules left in a shared Redis db would each cost a recycle here.
    # Dropping them loses nothing: the reconciler sends any job still queued again.
    make_celery(service.backend.settings()).control.purge()
    service.env = {**service.env, "NETKILN_WORKER_MAX_TASKS_PER_CHILD": "1"}
    service.start_worker()
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["fit"]["epochs"] = 1
    seen: list[set[int]] = []
    with service.client() as client:
        for index in range(2):
            spec["name"] = f"recycled-{index}"
            job_id = client.post("/v1/jobs", json=spec).json()["id"]
            job = service.wait_for(job_id)
            assert job["status"] == "succeeded", (job, service.tail())
            seen.append(pool_pids(service))
    # One job per pool process: the second ran in a process forked after the first ended.
    assert seen[0], seen
    assert seen[1], seen
    assert not seen[0] & seen[1], seen
    assert "Timed out waiting for UP message" not in service.tail()
