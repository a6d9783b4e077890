"""A worker killed mid-job does not strand the job: the reconciler of the next worker
notices the silent heartbeat, re-queues the job, and a second attempt resumes it from its
last checkpoint and finishes it."""

from __future__ import annotations

import copy
import signal
import time
from typing import Any

import httpx
import pytest

from models.spec.examples import DIGITS_SPEC
from tests.e2e.conftest import PATIENCE, Service, parse_sse

pytestmark = pytest.mark.e2e


def test_sigkilled_worker_job_is_retried_to_completion(service: Service) -> None:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = "survives-sigkill"
    spec["fit"] = {"epochs": 30, "batch_size": 8}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        deadline = time.monotonic() + PATIENCE
        while client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] < 2:
            assert time.monotonic() < deadline, service.tail()
            time.sleep(0.1)

        service.processes["worker"].stop(signal.SIGKILL)
        killed = client.get(f"/v1/jobs/{job_id}").json()
        assert killed["status"] == "running"
        assert killed["attempt"] == 1
        checkpointed = killed["checkpoint_epoch"]
        assert checkpointed >= 2
        before = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]

        service.start_worker()
        job = service.wait_for(job_id)
        assert job["status"] == "succeeded", (job, service.tail())
        assert job["attempt"] == 2
        after = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
        assert [row["epoch"] for row in after] == list(range(1, 31))  # one row each, no dups
        # Resumed, not restarted: the epochs the checkpoint held were not trained again.
        assert after[:checkpointed] == before[:checkpointed]
        logs = [line["message"] for line in client.get(f"/v1/jobs/{job_id}/logs").json()["lines"]]
        assert f"resuming from the checkpoint after epoch {checkpointed}" in logs
        statuses = [event for event in _events(client, job_id) if event["event"] == "status"]
        assert [event["data"]["status"] for event in statuses] == [
            "queued",
            "running",
            "queued",
            "running",
            "succeeded",
        ]


def _events(client: httpx.Client, job_id: str) -> list[dict[str, Any]]:
    """The whole (ended) event stream, parsed."""
    events = []
    with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
        for event in parse_sse(response.iter_lines()):
            events.append(event)
    return events
