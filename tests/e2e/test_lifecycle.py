"""Cancel (queued and running), time-outs and the event stream, with real processes."""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

import httpx
import pytest

from tests.e2e.conftest import Service, parse_sse
from tests.e2e.test_train import DIGITS_SPEC

pytestmark = pytest.mark.e2e


def long_spec(name: str, epochs: int = 40) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = name
    spec["fit"] = {"epochs": epochs, "batch_size": 8, "validation_split": 0.1}
    return spec


def wait_until(client: httpx.Client, job_id: str, check: Any, timeout: float = 120) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job = client.get(f"/v1/jobs/{job_id}").json()
        if check(job):
            return job
        time.sleep(0.1)
    raise AssertionError(f"condition not met for job {job_id}: {job}")


class TestCancel:
    def test_running_job_stops_within_a_batch_and_keeps_its_checkpoint(
        self, service: Service
    ) -> None:
        with service.client() as client:
            job_id = client.post("/v1/jobs", json=long_spec("cancel-running")).json()["id"]
            queued_id = client.post("/v1/jobs", json=long_spec("cancel-queued")).json()["id"]
            wait_until(client, job_id, lambda job: job["progress"]["epoch"] >= 2)

            # The second job waits behind the first (one worker): cancelling ends it now.
            cancelled_queued = client.post(f"/v1/jobs/{queued_id}/cancel")
            assert cancelled_queued.status_code == 202
            assert cancelled_queued.json()["status"] == "cancelled"

            requested = time.monotonic()
            response = client.post(f"/v1/jobs/{job_id}/cancel")
            assert response.status_code == 202
            assert response.json()["cancel_requested"] is True
            job = service.wait_for(job_id, timeout=30)
            assert job["status"] == "cancelled", job
            # One heartbeat (1 s) to notice, then at most one batch (milliseconds here).
            assert time.monotonic() - requested < 10
            assert job["error"] is None
            assert job["checkpoint_epoch"] >= 2
            assert job["progress"]["epoch"] < 40
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
    spec = long_spec("too-slow", epochs=400) | {"max_runtime": 3}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = service.wait_for(job_id, timeout=60)
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
    seen: list[dict[str, Any]] = []
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=long_spec("progress", epochs=8)).json()["id"]
        stop = threading.Event()
        while not stop.is_set():
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] == "running" and job["progress"]["batch"] > 0:
                seen.append(job)
            if job["status"] in {"succeeded", "failed"}:
                stop.set()
            time.sleep(0.2)
    assert seen, "never saw batch-level progress"
    sample = seen[len(seen) // 2]
    assert sample["progress"]["steps_per_epoch"] == 162  # ceil(1437 * 0.9 / 8)
    assert 0 < sample["progress"]["fraction"] < 1
    assert sample["progress"]["eta_seconds"] is not None
    assert sample["heartbeat_at"] is not None
