"""Why a queued job waits, on both backends: no running worker serves its queue, its tenant
runs as many jobs as it may, or it waits its turn (with its place in the queue); and the
dry run's epoch estimate from the speed a running worker measured."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from datetime import timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from core.queue import JOB_QUEUE
from models import workers
from models.db import transaction
from models.tables import Job, JobStatus, Worker, utcnow
from models.tenancy import set_limits
from tests.api.test_tenancy import SPEC
from tests.conftest import Backend, api_client

pytestmark = pytest.mark.usefixtures("backend")

TENANT = f"q-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def client(backend: Backend) -> Iterator[TestClient]:
    # No read cache: a queued job's place changes between two reads here.
    settings = backend.settings().model_copy(update={"read_cache_seconds": 0})
    with api_client(settings, tenant=TENANT) as client:
        yield client


@pytest.fixture(autouse=True)
def no_workers(backend: Backend) -> Iterator[None]:
    """Each test registers the workers it needs; none is left for the next."""
    url = backend.settings().resolved_database_url
    with transaction(url) as session:
        session.execute(delete(Worker))
    yield
    with transaction(url) as session:
        session.execute(delete(Worker))


def queued_job(backend: Backend, status: JobStatus = JobStatus.QUEUED) -> uuid.UUID:
    """A row as a submit leaves it, but never dispatched: no worker of another module
    takes it."""
    job_id = uuid.uuid4()
    with transaction(backend.settings().resolved_database_url) as session:
        session.add(Job(id=job_id, tenant_id=TENANT, kind="train", spec=SPEC, status=status))
    return job_id


def add_worker(
    backend: Backend, name: str, *, gflops: float | None = None, silent_for: float = 0
) -> None:
    with transaction(backend.settings().resolved_database_url) as session:
        workers.register(session, name, "host-a", [JOB_QUEUE], "tensorflow", 2)
        if gflops is not None:
            workers.record_speed(session, name, ["cpu:0"], gflops, 0.001)
        session.flush()
        row = session.get(Worker, name)
        assert row is not None
        row.heartbeat_at = utcnow() - timedelta(seconds=silent_for)


def queue_of(client: TestClient, job_id: uuid.UUID) -> dict[str, object]:
    body = client.get(f"/v1/jobs/{job_id}").json()
    return dict(body["queue"]) if body["queue"] else {}


def end(backend: Backend, *job_ids: uuid.UUID) -> None:
    with transaction(backend.settings().resolved_database_url) as session:
        for job_id in job_ids:
            job = session.get(Job, job_id)
            assert job is not None
            job.status = JobStatus.CANCELLED


def test_no_running_worker_serves_the_queue(backend: Backend, client: TestClient) -> None:
    add_worker(backend, "gone:1", silent_for=3600)  # a worker killed an hour ago
    job_id = queued_job(backend)
    state = queue_of(client, job_id)
    assert state["reason"] == "no_worker_for_resources"
    assert state["queue"] == JOB_QUEUE
    assert JOB_QUEUE in str(state["message"])
    end(backend, job_id)


def test_a_job_waits_its_turn_behind_the_ones_before_it(
    backend: Backend, client: TestClient
) -> None:
    add_worker(backend, "here:1")
    first, second = queued_job(backend), queued_job(backend)
    one, two = queue_of(client, first), queue_of(client, second)
    assert one["reason"] == two["reason"] == "waiting_for_worker"
    assert two["position"] == one["position"] + 1  # type: ignore[operator]
    assert "2 job slots" in str(one["message"])
    end(backend, first)
    assert queue_of(client, second)["position"] == one["position"]
    end(backend, second)
    assert client.get(f"/v1/jobs/{second}").json()["queue"] is None  # ended: no queue


def test_a_tenant_at_its_running_limit(backend: Backend, client: TestClient) -> None:
    add_worker(backend, "here:2")
    url = backend.settings().resolved_database_url
    with transaction(url) as session:
        set_limits(session, TENANT, {"max_running_jobs": 1})
    running = queued_job(backend, JobStatus.RUNNING)
    waiting = queued_job(backend)
    try:
        state = queue_of(client, waiting)
        assert state["reason"] == "tenant_running_limit"
        assert "max_running_jobs" in str(state["message"])
    finally:
        end(backend, running, waiting)
        with transaction(url) as session:
            set_limits(session, TENANT, {"max_running_jobs": None})


def test_the_dry_run_estimates_an_epoch_on_the_fastest_measured_worker(
    backend: Backend, client: TestClient
) -> None:
    spec = copy.deepcopy(SPEC)
    assert client.post("/v1/jobs", params={"dry_run": "true"}, json=spec).json()["estimate"] is None
    add_worker(backend, "slow:1", gflops=1.0)
    add_worker(backend, "fast:1", gflops=100.0)
    add_worker(backend, "dead:1", gflops=10_000.0, silent_for=3600)
    dry = client.post("/v1/jobs", params={"dry_run": "true"}, json=spec).json()
    estimate = dry["estimate"]
    assert estimate["worker"] == "fast:1"
    steps = -(-dry["data"]["train"] // spec["fit"]["batch_size"])
    assert estimate["steps_per_epoch"] == steps
    per_step = 0.001 + 6 * dry["summary"]["trainable"] * spec["fit"]["batch_size"] / 100e9
    assert estimate["epoch_seconds"] == pytest.approx(steps * per_step)
