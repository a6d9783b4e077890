"""A job cannot take its worker down: a pool process that dies mid-job is noticed by the
worker's main process at once (the job re-queued, or failed ``worker_crashed`` after its
last attempt), and a job past the worker's memory ceiling is ended ``resource_limit``
while the worker goes on to the next job."""

from __future__ import annotations

import copy
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from models.spec.examples import DIGITS_SPEC
from tests.e2e.conftest import FAST_RECOVERY, PATIENCE, UNENDING, Service
from tests.e2e.test_worker_loss import _events

pytestmark = pytest.mark.e2e


@pytest.fixture
def patient_reconciler(service: Service) -> Iterator[Service]:
    """The worker with a heartbeat time-out no crash test reaches, so that what re-queues
    or fails a crashed job is the main process seeing its pool process die, however slow
    a busy machine makes it (the module's worker times heartbeats out after 8 s)."""
    _restart_worker(service, {"NETKILN_HEARTBEAT_TIMEOUT": str(10 * PATIENCE)})
    try:
        yield service
    finally:
        _restart_worker(service, {})


def _restart_worker(service: Service, extra: dict[str, str]) -> None:
    service.processes["worker"].stop()
    base = {key: value for key, value in service.env.items() if key not in OVERRIDES}
    service.env = {**base, **FAST_RECOVERY, **extra}
    service.start_worker()


#: Settings a test here changes for its worker, and changes back.
OVERRIDES = frozenset({"NETKILN_HEARTBEAT_TIMEOUT", "NETKILN_JOB_MEMORY_LIMIT_MB"})


def _pool_process(service: Service, timeout: float = PATIENCE) -> psutil.Process:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        children = psutil.Process(service.processes["worker"].pid).children()
        if children:
            return children[0]
        time.sleep(0.1)
    raise AssertionError(f"no pool process:\n{service.tail()}")


def _wait_running(service: Service, job_id: str, attempt: int, timeout: float = PATIENCE) -> Any:
    """The job's attempt ``attempt``, once it has trained a batch (it is in the fit loop)."""
    deadline = time.monotonic() + timeout
    with service.client() as client:
        while time.monotonic() < deadline:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running" and job["attempt"] == attempt:
                progress = job["progress"]
                if progress["epoch"] or progress.get("batch"):
                    return job
            assert job["status"] in {"queued", "running"}, (job, service.tail())
            time.sleep(0.1)
    raise AssertionError(f"attempt {attempt} of {job_id} never ran:\n{service.tail()}")


def _long_spec(name: str) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = name
    spec["fit"] = {"epochs": UNENDING, "batch_size": 4}  # ends by a crash or a cancel
    return spec


def test_a_crashed_pool_process_requeues_its_job_at_once(patient_reconciler: Service) -> None:
    service = patient_reconciler
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=_long_spec("crash-once")).json()["id"]
        _wait_running(service, job_id, attempt=1)
        os.kill(_pool_process(service).pid, signal.SIGSEGV)  # as a crash in native code
        # Not the heartbeat time-out: the main process saw its pool process die.
        _wait_running(service, job_id, attempt=2)
        cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 202
        assert service.wait_for(job_id)["status"] == "cancelled"
        reasons = [
            event["data"].get("reason", "")
            for event in _events(client, job_id)
            if event["event"] == "status" and event["data"]["status"] == "queued"
        ]
        # Re-queued by the worker's main process, which saw the crash (not by the
        # reconciler's heartbeat time-out, which says "stopped responding").
        assert any("worker process died during attempt 1" in reason for reason in reasons), reasons


def test_a_job_that_crashes_every_attempt_fails_worker_crashed(
    patient_reconciler: Service,
) -> None:
    service = patient_reconciler
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=_long_spec("crash-always")).json()["id"]
        for attempt in (1, 2, 3):
            _wait_running(service, job_id, attempt)
            # SIGKILL, as the kernel ends a crashed process. Not SIGABRT from outside: Python
            # would handle it, and billiard's orderly exit can die holding the pool's result
            # lock, which a real abort() in native code never reaches.
            os.kill(_pool_process(service).pid, signal.SIGKILL)
        job = service.wait_for(job_id)
        assert (job["status"], job["error"]["code"]) == ("failed", "worker_crashed"), job
        assert "all 3 attempts" in job["error"]["message"]
        # The worker itself lives on and takes the next job.
        quick = copy.deepcopy(DIGITS_SPEC)
        quick["fit"]["epochs"] = 1
        next_id = client.post("/v1/jobs", json=quick).json()["id"]
        assert service.wait_for(next_id)["status"] == "succeeded", service.tail()


def test_a_job_past_the_memory_ceiling_fails_and_the_worker_goes_on(service: Service) -> None:
    _restart_worker(service, {"NETKILN_JOB_MEMORY_LIMIT_MB": "1500"})
    try:
        hungry = copy.deepcopy(DIGITS_SPEC)
        hungry["name"] = "too-big"
        # ~270M parameters: ~1 GB of weights, past 1.5 GB with the backend's own memory
        # and far from what would endanger the machine (24 GB) before it is ended.
        hungry["model"]["layers"][1] = {"type": "Dense", "units": 65536, "activation": "relu"}
        hungry["model"]["layers"].insert(2, {"type": "Dense", "units": 4096})
        with service.client() as client:
            job_id = client.post("/v1/jobs", json=hungry).json()["id"]
            job = service.wait_for(job_id)
            assert (job["status"], job["error"]["code"]) == ("failed", "resource_limit"), (
                job,
                service.tail(),
            )
            assert job["attempt"] == 1  # not retried like a lost worker
            quick = copy.deepcopy(DIGITS_SPEC)
            quick["fit"]["epochs"] = 1
            next_id = client.post("/v1/jobs", json=quick).json()["id"]
            assert service.wait_for(next_id)["status"] == "succeeded", service.tail()
    finally:
        _restart_worker(service, {})
