"""Cancel (queued and running), time-outs and the event stream, with real processes."""

from __future__ import annotations

import copy
import time
from typing import Any

import httpx
import pytest

from models.spec.examples import DIGITS_SPEC
from netkiln.harness import TERMINAL
from tests.e2e.conftest import PATIENCE, UNENDING, Service, parse_sse

pytestmark = pytest.mark.e2e


def long_spec(name: str, epochs: int = UNENDING, batch_size: int = 8) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = name
    spec["fit"] = {"epochs": epochs, "batch_size": batch_size, "validation_split": 0.1}
    return spec


def wait_until(
    service: Service, client: httpx.Client, job_id: str, check: Any, timeout: float = PATIENCE
) -> Any:
    """The job's document once ``check`` holds for it; fails as soon as the job has ended
    without it, or once ``timeout`` (only a bound on a hang) has passed."""
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if check(job):
            return job
        if job["status"] in TERMINAL or time.monotonic() > deadline:
            raise AssertionError(f"condition not met for job {job_id}: {job}\n{service.tail()}")
        time.sleep(0.1)


class TestCancel:
    def test_running_job_stops_within_a_batch_and_keeps_its_checkpoint(
        self, service: Service
    ) -> None:
        with service.client() as client:
            job_id = client.post("/v1/jobs", json=long_spec("cancel-running")).json()["id"]
            queued_id = client.post("/v1/jobs", json=long_spec("cancel-queued")).json()["id"]
            wait_until(service, client, job_id, lambda job: job["progress"]["epoch"] >= 2)

            # The second job waits behind the first (one worker): cancelling ends it now.
            cancelled_queued = client.post(f"/v1/jobs/{queued_id}/cancel")
            assert cancelled_queued.status_code == 202
            assert cancelled_queued.json()["status"] == "cancelled"

            requested = time.monotonic()
            response = client.post(f"/v1/jobs/{job_id}/cancel")
            assert response.status_code == 202
            assert response.json()["cancel_requested"] is True
            job = service.wait_for(job_id)
            assert job["status"] == "cancelled", job
            # One heartbeat (1 s) to notice, then at most one batch (milliseconds here).
            assert time.monotonic() - requested < 10
            assert job["error"] is None
            assert job["checkpoint_epoch"] >= 2
            assert job["progress"]["epoch"] < UNENDING
            rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
            assert [row["epoch"] for row in rows] == list(range(1, job["progress"]["epoch"] + 1))
            checkpoint = client.get(f"/v1/jobs/{job_id}/model?format=checkpoint")
            assert checkpoint.status_code == 200
            assert checkpoint.content[:2] == b"PK"
            assert client.get(f"/v1/jobs/{job_id}/model").status_code == 409

            assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 409

            # The worker is free again, and the queued-then-cancelled job never ran.
            after = client.post("/v1/jobs", json=long_spec("after-cancel", epochs=1)).json()
            assert service.wait_for(after["id"])["status"] == "succeeded"
            never_ran = client.get(f"/v1/jobs/{queued_id}").json()
            assert (never_ran["status"], never_ran["attempt"]) == ("cancelled", 0)
            assert never_ran["started_at"] is None


def test_job_past_max_runtime_fails_with_timeout(service: Service) -> None:
    spec = long_spec("too-slow") | {"max_runtime": 3}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = service.wait_for(job_id)
    assert job["status"] == "failed"
    assert job["error"]["code"] == "timeout"
    assert "max_runtime of 3s" in job["error"]["message"]
    assert job["attempt"] == 1  # not an infrastructure failure: no retry


def test_event_stream_resumes_after_last_event_id_without_gaps(service: Service) -> None:
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=long_spec("streamed", epochs=6)).json()["id"]

        first: list[dict[str, Any]] = []
        with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
            assert response.headers["content-type"].startswith("text/event-stream")
            for event in parse_sse(response.iter_lines()):
                first.append(event)
                if event["event"] == "epoch" and event["data"]["epoch"] == 2:
                    break  # the client drops the connection mid-job

        rest: list[dict[str, Any]] = []
        headers = {"Last-Event-ID": first[-1]["id"]}
        with client.stream("GET", f"/v1/jobs/{job_id}/events", headers=headers) as response:
            rest = list(parse_sse(response.iter_lines()))  # ends by itself when the job ends

    events = first + rest
    ids = [int(event["id"]) for event in events]
    assert ids == sorted(set(ids))  # nothing twice, in order
    epochs = [event["data"]["epoch"] for event in events if event["event"] == "epoch"]
    assert epochs == [1, 2, 3, 4, 5, 6]  # nothing missed
    for event in events:
        if event["event"] == "epoch":
            assert {"loss", "accuracy", "learning_rate", "seconds"} <= set(event["data"])
    statuses = [event["data"]["status"] for event in events if event["event"] == "status"]
    assert statuses == ["queued", "running", "succeeded"]
    assert events[-1]["event"] == "status"
    assert any(event["event"] == "log" for event in events)


def test_progress_reports_batches_and_eta_while_running(service: Service) -> None:
    # Batch progress shows between a heartbeat (every 0.5 s) and the end of the epoch, which
    # resets it. Batches of 2 make an epoch 647 steps, long next to a heartbeat on any CPU,
    # and the job runs until it is cancelled: the test waits for the sight, not a rate.
    spec = long_spec("progress", batch_size=2)
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = wait_until(
            service,
            client,
            job_id,
            lambda job: job["status"] == "running" and job["progress"]["batch"] > 0,
        )
        assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202
        assert service.wait_for(job_id)["status"] == "cancelled"
    progress = job["progress"]
    assert progress["steps_per_epoch"] == 647  # ceil(1437 * 0.9 / 2)
    assert 0 < progress["batch"] <= progress["steps_per_epoch"]
    assert 0 < progress["fraction"] < 1
    assert progress["eta_seconds"] is not None
    assert job["heartbeat_at"] is not None
