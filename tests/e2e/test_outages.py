"""Outages of the parts a deployment shares, on servers this module owns (never the
machine's shared ones): Redis restarting empty, PostgreSQL restarting under running jobs,
the API killed in the middle of POSTs. Each time: every job ends succeeded, none is lost
or trained twice to completion, no epoch has two rows, and work goes on within 30 s of
the failed part's return. (The object store's outages: ``test_many_hosts.py``.)"""

from __future__ import annotations

import copy
import signal
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from models.migrate import upgrade
from models.spec.examples import DIGITS_SPEC
from netkiln.harness import HarnessError, process_env
from netkiln.servers import PrivatePostgres, PrivateRedis
from tests.conftest import Backend
from tests.e2e.conftest import FAST_RECOVERY, PATIENCE, UNENDING, Service

pytestmark = pytest.mark.e2e

#: The issue's promise: work resumes this soon after the failed part is back.
RESUMES_WITHIN = 30.0


@pytest.fixture(scope="module")
def servers(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[PrivatePostgres, PrivateRedis]]:
    postgres = PrivatePostgres()
    redis_server = PrivateRedis(tmp_path_factory.mktemp("redis"))
    try:
        postgres.start()
        redis_server.start()
    except HarnessError as exc:
        postgres.remove()
        pytest.skip(f"private servers unavailable: {exc}")
    yield postgres, redis_server
    redis_server.stop()
    postgres.remove()


@pytest.fixture(scope="module")
def stack(
    servers: tuple[PrivatePostgres, PrivateRedis],
    keras_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    postgres, redis_server = servers
    upgrade(postgres.url)
    root = tmp_path_factory.mktemp("outages")
    backend = Backend("outages", root, database_url=postgres.url, broker_url=redis_server.url)
    # A heartbeat timeout longer than the outages: the running job's attempt survives them.
    settings = {**backend.env, **FAST_RECOVERY, "NETKILN_HEARTBEAT_TIMEOUT": "60"}
    service = Service(backend, None, process_env(keras_home, settings), root)
    service.start()
    yield service
    service.stop()


def submit(client: httpx.Client, name: str, epochs: int, **headers: str) -> str:
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": name}
    spec["fit"] = {"epochs": epochs, "batch_size": 16}
    response = client.post("/v1/jobs", json=spec, headers=headers)
    assert response.status_code in {200, 202}, response.text
    return str(response.json()["id"])


def wait_until(condition: Any, what: str, service: Service) -> None:
    deadline = time.monotonic() + PATIENCE
    while True:
        try:
            if condition():
                return
        except httpx.HTTPError:
            pass  # the API is down or restarting
        assert time.monotonic() < deadline, f"{what}:\n{service.tail()}"
        time.sleep(0.1)


def assert_each_epoch_once(client: httpx.Client, job_id: str, epochs: int) -> None:
    rows = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
    assert [row["epoch"] for row in rows] == list(range(1, epochs + 1))


def started(job: dict[str, Any]) -> float:
    return datetime.fromisoformat(job["started_at"]).timestamp()


def test_redis_restarting_empty_loses_no_job(
    stack: Service, servers: tuple[PrivatePostgres, PrivateRedis]
) -> None:
    _, redis_server = servers
    with stack.client() as client:
        holder = submit(client, "holds-the-worker", UNENDING)
        wait_until(
            lambda: client.get(f"/v1/jobs/{holder}").json()["progress"]["epoch"] >= 1,
            "the first job trains",
            stack,
        )
        waiting = [submit(client, f"waits-{n}", 2) for n in range(3)]
        redis_server.stop(signal.SIGKILL)  # the queued jobs' messages are gone with it
        time.sleep(5)
        redis_server.start()
        back = time.time()
        # The running job never needed the broker; cancelling it frees the worker.
        assert client.post(f"/v1/jobs/{holder}/cancel").status_code == 202
        jobs = [stack.wait_for(job_id) for job_id in waiting]
        held = stack.wait_for(holder)
        assert held["status"] == "cancelled"
        for job in jobs:
            assert job["status"] == "succeeded", (job, stack.tail())
            assert job["attempt"] == 1
            assert_each_epoch_once(client, job["id"], 2)
        # Not waited out (redispatch_after is 3 s here, 300 s by default, so the marker
        # is what sent them): the first of them ran soon after the broker was back.
        first_start = min(started(job) for job in jobs)
        assert first_start - back < RESUMES_WITHIN, (first_start - back, stack.tail())
        worker_log = (stack.logs / "worker.log").read_text(errors="replace")
        assert "the broker lost its messages" in worker_log


def test_postgres_restarting_under_a_running_job_loses_nothing(
    stack: Service, servers: tuple[PrivatePostgres, PrivateRedis]
) -> None:
    postgres, _ = servers
    with stack.client() as client:
        running = submit(client, "rides-out-postgres", 20)
        queued = submit(client, "queued-through-postgres", 2)
        wait_until(
            lambda: client.get(f"/v1/jobs/{running}").json()["progress"]["epoch"] >= 2,
            "the job trains",
            stack,
        )
        postgres.stop("immediate")  # every connection cut mid-whatever
        time.sleep(5)
        postgres.start()
        back = time.time()
        wait_until(lambda: client.get("/v1/jobs").status_code == 200, "API reads again", stack)
        assert time.time() - back < RESUMES_WITHIN
        finished = stack.wait_for(running)
        assert finished["status"] == "succeeded", (finished, stack.tail())
        assert finished["attempt"] == 1  # paused at its next write, not failed or re-run
        assert_each_epoch_once(client, running, 20)
        after = stack.wait_for(queued)
        assert after["status"] == "succeeded", (after, stack.tail())
        assert_each_epoch_once(client, queued, 2)


def test_the_api_killed_during_posts_loses_no_job_and_makes_none_twice(stack: Service) -> None:
    """Clients POST with idempotency keys while the API is killed with SIGKILL; each
    retries its POST until it gets an answer (as a client of such a service must). Every
    key ends as exactly one job, and every job trains to the end."""
    keys = [f"outage-{uuid.uuid4()}" for _ in range(12)]
    answered: dict[str, str] = {}
    lock = threading.Lock()

    def post_until_answered(key: str) -> None:
        deadline = time.monotonic() + PATIENCE
        while time.monotonic() < deadline:
            try:
                with stack.client(timeout=10) as client:
                    job_id = submit(client, key, 1, **{"Idempotency-Key": key})
            except (httpx.HTTPError, AssertionError):
                time.sleep(0.2)
                continue
            with lock:
                answered[key] = job_id
            return

    clients = [threading.Thread(target=post_until_answered, args=(key,)) for key in keys]
    for thread in clients[:6]:
        thread.start()
    stack.processes["api"].stop(signal.SIGKILL)
    for thread in clients[6:]:
        thread.start()  # these meet a dead API first
    stack.start_api()
    for thread in clients:
        thread.join(PATIENCE)
    assert sorted(answered) == sorted(keys)
    assert len(set(answered.values())) == len(keys)  # one job per key
    with stack.client() as client:
        listed = client.get("/v1/jobs", params={"limit": 200}).json()["items"]
        by_name = [job for job in listed if job["name"] in answered]
        assert len(by_name) == len(keys)  # no second job for any key
        for job_id in answered.values():
            job = stack.wait_for(job_id)
            assert job["status"] == "succeeded", (job, stack.tail())
            assert_each_epoch_once(client, job_id, 1)
