"""Nothing is lost when the broker loses its messages (a Redis without persistence
restarting, a wiped broker folder) or the API restarts: the database holds every job, and
the workers' reconciler sends a queued job's message again."""

from __future__ import annotations

import copy
import shutil

import pytest
import redis

from models.spec.examples import DIGITS_SPEC
from tests.e2e.conftest import Service

pytestmark = pytest.mark.e2e


def lose_broker_messages(service: Service) -> None:
    backend = service.backend
    if backend.broker_url is not None:
        client = redis.Redis.from_url(backend.broker_url)
        assert client.llen("netkiln.jobs") >= 1  # the message was there...
        client.delete("netkiln.jobs")  # ...and now it is gone, as after a bare restart
        client.close()
    else:
        folder = backend.data_dir / "broker"
        assert any(folder.iterdir())
        shutil.rmtree(folder)
        folder.mkdir()


def test_job_survives_lost_message_and_api_restart(service: Service) -> None:
    service.processes["worker"].stop()  # nobody consumes while the message is lost
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "lost-message"}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        # The stopped worker left the registry: the job says nobody serves its queue.
        assert client.get(f"/v1/jobs/{job_id}").json()["queue"]["reason"] == (
            "no_worker_for_resources"
        )
    lose_broker_messages(service)
    service.restart_api()
    service.start_worker()
    job = service.wait_for(job_id)
    assert job["status"] == "succeeded", (job, service.tail())
    assert job["attempt"] == 1
