"""A worker whose pool process is recycled (``NETKILN_WORKER_MAX_TASKS_PER_CHILD``) keeps
taking jobs: the new process imports TensorFlow, reports up in time, and uses database
connections of its own, not the reconciler's."""

from __future__ import annotations

import contextlib
import copy
import threading
import time

import psutil
import pytest

from core.queue import make_celery
from models.spec.examples import DIGITS_SPEC
from tests.e2e.conftest import PATIENCE, Service

pytestmark = pytest.mark.e2e


def pool_pids(service: Service) -> set[int]:
    return {child.pid for child in psutil.Process(service.processes["worker"].pid).children()}


class PoolWatcher:
    """Every pool process the worker has had, in the order they appeared. Sampled in the
    background: a recycled process exits and its replacement forks between two samples a
    test could take after a job, so a single look may see the old one, the new one or
    none."""

    def __init__(self, service: Service) -> None:
        self.service = service
        self.seen: list[int] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> PoolWatcher:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()

    def _watch(self) -> None:
        while not self._stop.wait(0.02):
            with contextlib.suppress(psutil.Error):
                for pid in sorted(pool_pids(self.service)):
                    if pid not in self.seen:
                        self.seen.append(pid)

    def wait_for_more_than(self, count: int, timeout: float = PATIENCE) -> None:
        deadline = time.monotonic() + timeout
        while len(self.seen) <= count and time.monotonic() < deadline:
            time.sleep(0.1)


def test_jobs_keep_running_across_pool_process_recycling(service: Service) -> None:
    service.processes["worker"].stop()
    # Messages earlier modules left in a shared Redis db would each cost a recycle here.
    # Dropping them loses nothing: the reconciler sends any job still queued again.
    make_celery(service.backend.settings()).control.purge()
    service.env = {**service.env, "NETKILN_WORKER_MAX_TASKS_PER_CHILD": "1"}
    service.start_worker()
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["fit"]["epochs"] = 1
    with service.client() as client, PoolWatcher(service) as pool:
        for index in range(2):
            spec["name"] = f"recycled-{index}"
            job_id = client.post("/v1/jobs", json=spec).json()["id"]
            job = service.wait_for(job_id)
            assert job["status"] == "succeeded", (job, service.tail())
        # One job per pool process: the first process ran job 1, a second one (forked
        # after job 1 ended) ran job 2, and a third replaces that one for the next job.
        pool.wait_for_more_than(2)
    assert len(pool.seen) >= 3, pool.seen
    assert "Timed out waiting for UP message" not in service.tail()
