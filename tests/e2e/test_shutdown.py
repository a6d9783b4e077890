"""Stopped as a service manager or ``docker stop`` stops it — SIGTERM to the main process
only — ``netkiln worker`` and ``netkiln up`` end every process they started within a
bound, even mid-job, and leave the job queued to resume from its checkpoint."""

from __future__ import annotations

import copy
import os
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.spec.examples import DIGITS_SPEC
from netkiln.harness import Process, process_env, session_processes, start_up, wait_for_job
from tests.e2e.conftest import FAST_RECOVERY, Service

pytestmark = pytest.mark.e2e

#: Generous: a bound on a hang, not a speed the test expects.
SHUTDOWN_BOUND = 60.0


def _long_spec(name: str) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = name
    spec["fit"] = {"epochs": 200, "batch_size": 4}
    return spec


def _wait_for_epoch(client: httpx.Client, job_id: str, epoch: int = 1) -> None:
    deadline = time.monotonic() + 300
    while client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] < epoch:
        assert time.monotonic() < deadline, "the job never finished an epoch"
        time.sleep(0.2)


def _terminate_main_process_only(process: Process) -> float:
    """SIGTERM to the main process; seconds until no process of its session is left."""
    started = time.monotonic()
    os.kill(process.pid, signal.SIGTERM)
    while process.poll() is None or session_processes(process.pid):
        elapsed = time.monotonic() - started
        left = [stat.pid for stat in session_processes(process.pid)]
        assert elapsed < SHUTDOWN_BOUND, f"still running after {elapsed:.0f}s: {left}"
        time.sleep(0.1)
    return time.monotonic() - started


def test_sigterm_to_the_worker_mid_job_ends_it_and_requeues_the_job(service: Service) -> None:
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=_long_spec("sigterm-worker")).json()["id"]
        _wait_for_epoch(client, job_id)
        _terminate_main_process_only(service.processes["worker"])
        job = client.get(f"/v1/jobs/{job_id}").json()
        assert job["status"] == "queued", job  # at once, not after the heartbeat time-out
        assert job["checkpoint_epoch"] >= 1
        service.start_worker()
        resumed = wait_for_job(client, job_id, until=frozenset({"running"}))
        assert resumed["attempt"] == 2
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        assert service.wait_for(job_id)["status"] == "cancelled"


def test_sigterm_to_netkiln_up_mid_job_ends_every_process(keras_home: Path, tmp_path: Path) -> None:
    """On the embedded default, as a user runs it."""
    env = process_env(keras_home, FAST_RECOVERY)
    up = start_up(tmp_path / "data", env, tmp_path / "up.log")
    headers = {"Authorization": f"Bearer {up.api_key}"}
    with httpx.Client(base_url=up.base_url, headers=headers, timeout=30) as client:
        job_id = client.post("/v1/jobs", json=_long_spec("sigterm-up")).json()["id"]
        _wait_for_epoch(client, job_id)
    _terminate_main_process_only(up.process)

    again = start_up(tmp_path / "data", env, tmp_path / "up-again.log")
    try:
        with httpx.Client(base_url=again.base_url, headers=headers, timeout=30) as client:
            resumed = wait_for_job(client, job_id, until=frozenset({"running"}))
            assert resumed["attempt"] == 2, up.process.tail()
            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
            assert wait_for_job(client, job_id)["status"] == "cancelled"
    finally:
        again.process.stop()
