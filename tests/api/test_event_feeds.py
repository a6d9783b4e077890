"""Event streams: one database poll per job however many streams follow it, every stream
gets each event once from where it resumed, and a revoked key's stream ends."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from api.app import create_app
from core.settings import Settings
from models.db import transaction
from models.tables import Job, JobEvent, JobStatus
from models.tenancy import create_key, revoke_keys
from netkiln.client import parse_sse
from tests.conftest import Backend
from tests.e2e.test_train import DIGITS_SPEC

DEADLINE = 60


@pytest.fixture
def settings(backend: Backend) -> Settings:
    # Read afresh on every request: a revocation lands within a second.
    return backend.settings().model_copy(update={"read_cache_seconds": 0})


@pytest.fixture
def client_and_key(settings: Settings) -> Iterator[tuple[TestClient, str]]:
    tenant = f"feeds-{uuid.uuid4().hex[:8]}"
    with transaction(settings.resolved_database_url) as session:
        _, key = create_key(session, tenant)
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        yield client, key
    # The PostgreSQL database outlives this module: other modules count the jobs in it.
    with transaction(settings.resolved_database_url) as session:
        session.execute(delete(Job).where(Job.tenant_id == tenant))


class Stream(threading.Thread):
    """Reads one event stream to its end in the background."""

    def __init__(self, client: TestClient, job_id: str, after: int = 0) -> None:
        super().__init__(daemon=True)
        self.client, self.job_id, self.after = client, job_id, after
        self.events: list[dict[str, Any]] = []
        self.opened = threading.Event()

    def run(self) -> None:
        with self.client.stream(
            "GET", f"/v1/jobs/{self.job_id}/events", params={"after": self.after}
        ) as response:
            self.opened.set()
            for event in parse_sse(response.iter_lines()):
                self.events.append(event)

    @property
    def ids(self) -> list[int]:
        return [int(event["id"]) for event in self.events]


def _wait(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + DEADLINE
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


def _log(settings: Settings, job_id: str, count: int) -> list[int]:
    """``count`` log lines, as a worker writes them; their event ids."""
    rows = [
        JobEvent(job_id=uuid.UUID(job_id), kind="log", data={"level": "info", "message": str(n)})
        for n in range(count)
    ]
    with transaction(settings.resolved_database_url) as session:
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def test_streams_of_one_job_share_one_poll_and_each_gets_every_event_once(
    settings: Settings, client_and_key: tuple[TestClient, str]
) -> None:
    client, _ = client_and_key
    feeds = client.app.state.event_feeds  # type: ignore[attr-defined]
    job_id = client.post("/v1/jobs", json=DIGITS_SPEC).json()["id"]
    job_uuid = uuid.UUID(job_id)
    streams = [Stream(client, job_id) for _ in range(8)]
    for stream in streams:
        stream.start()
    _wait(lambda: feeds.followers(job_uuid) == 8, "8 streams following")
    assert feeds.active == 1

    first = _log(settings, job_id, 30)
    late = Stream(client, job_id, after=first[9])  # resumes midway through the backlog
    late.start()
    _wait(lambda: feeds.followers(job_uuid) == 9, "the late stream following")
    second = _log(settings, job_id, 5)
    assert client.post(f"/v1/jobs/{job_id}/cancel").status_code == 202

    for stream in [*streams, late]:
        stream.join(timeout=DEADLINE)
        assert not stream.is_alive(), "the stream did not end with the job"
    everything = streams[0].ids
    assert everything == sorted(set(everything))  # each once, in order
    assert set(first + second) <= set(everything)
    assert streams[0].events[-1]["data"]["status"] == "cancelled"
    assert all(stream.ids == everything for stream in streams)
    assert late.ids == [event_id for event_id in everything if event_id > first[9]]
    _wait(lambda: feeds.active == 0, "the feed ends with its job")


def test_a_revoked_key_ends_its_open_streams(
    settings: Settings, client_and_key: tuple[TestClient, str]
) -> None:
    client, key = client_and_key
    job_id = client.post("/v1/jobs", json=DIGITS_SPEC).json()["id"]
    stream = Stream(client, job_id)
    stream.start()
    _wait(lambda: len(stream.events) >= 1, "the queued status event")
    with transaction(settings.resolved_database_url) as session:
        assert revoke_keys(session, key)
    stream.join(timeout=DEADLINE)
    assert not stream.is_alive(), "the revoked key's stream is still open"
    with transaction(settings.resolved_database_url) as session:
        job = session.get(Job, uuid.UUID(job_id))
        assert job is not None
        assert job.status == JobStatus.QUEUED  # the stream ended for the key, not the job
