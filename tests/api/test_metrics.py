"""GET /metrics in process, on both backends: jobs seeded in known states straight through
the ORM, then the scrape parsed as Prometheus would parse it.

The PostgreSQL database outlives this module, so the job metrics are compared as the
difference between a scrape before seeding and one after: exact, whoever else left rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import delete

from api.telemetry import JobsCollector
from models.db import transaction
from models.tables import EpochMetrics, Job, JobStatus
from tests.conftest import Backend, api_client

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

#: (status, run time in seconds or None when the job never started, finished or not)
JOBS: list[tuple[JobStatus, float | None, bool]] = [
    (JobStatus.QUEUED, None, False),
    (JobStatus.QUEUED, None, False),
    (JobStatus.QUEUED, None, False),
    (JobStatus.RUNNING, 40.0, False),
    (JobStatus.SUCCEEDED, 3.5, True),
    (JobStatus.SUCCEEDED, 45.25, True),
    (JobStatus.SUCCEEDED, 700.0, True),
    (JobStatus.FAILED, 0.5, True),
    (JobStatus.CANCELLED, 90.0, True),
    (JobStatus.CANCELLED, None, True),  # cancelled while queued: no run time
]
EPOCH_SECONDS: list[float | None] = [0.05, 0.3, 0.3, 2.0, 12.0, None]

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: TestClient) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


def delta(after: Samples, before: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def seed(database_url: str) -> list[uuid.UUID]:
    jobs = []
    for index, (status, seconds, finished) in enumerate(JOBS):
        started = None if seconds is None else T0 + timedelta(minutes=index)
        end = (started or T0) + timedelta(seconds=seconds or 0)
        jobs.append(
            Job(
                kind="train",
                spec={},
                status=status,
                created_at=T0,
                started_at=started,
                finished_at=end if finished else None,
            )
        )
    with transaction(database_url) as session:
        session.add_all(jobs)
        session.flush()
        session.add_all(
            EpochMetrics(job_id=jobs[4].id, epoch=epoch, values={}, seconds=seconds)
            for epoch, seconds in enumerate(EPOCH_SECONDS, start=1)
        )
    return [job.id for job in jobs]


@pytest.fixture(scope="module")
def client(backend: Backend) -> Iterator[TestClient]:
    with api_client(backend.settings()) as client:
        yield client


@pytest.fixture(scope="module")
def scrapes(client: TestClient, backend: Backend) -> Iterator[tuple[Samples, Samples]]:
    """(before, after) seeding JOBS and EPOCH_SECONDS; the rows are deleted afterwards."""
    database_url = backend.settings().resolved_database_url
    before = scrape(client)
    ids = seed(database_url)
    try:
        yield before, scrape(client)
    finally:
        with transaction(database_url) as session:
            session.execute(delete(EpochMetrics).where(EpochMetrics.job_id.in_(ids)))
            session.execute(delete(Job).where(Job.id.in_(ids)))


class TestJobCounts:
    def test_every_status_is_present_even_at_zero(self, scrapes: tuple[Samples, Samples]) -> None:
        before, _ = scrapes
        for status in JobStatus:
            assert value(before, "netkiln_jobs", status=status.value) >= 0

    def test_jobs_by_status(self, scrapes: tuple[Samples, Samples]) -> None:
        before, after = scrapes
        counts = {s.value: delta(after, before, "netkiln_jobs", status=s.value) for s in JobStatus}
        assert counts == {"queued": 3, "running": 1, "succeeded": 3, "failed": 1, "cancelled": 2}

    def test_queue_depth_is_the_queued_jobs(self, scrapes: tuple[Samples, Samples]) -> None:
        before, after = scrapes
        assert delta(after, before, "netkiln_queue_depth") == 3
        assert value(after, "netkiln_queue_depth") == value(after, "netkiln_jobs", status="queued")

    def test_database_up(self, scrapes: tuple[Samples, Samples]) -> None:
        assert value(scrapes[1], "netkiln_database_up") == 1


class TestJobDuration:
    NAME = "netkiln_job_duration_seconds"

    def buckets(self, scrapes: tuple[Samples, Samples], status: str) -> dict[str, float]:
        before, after = scrapes
        return {
            le: delta(after, before, f"{self.NAME}_bucket", status=status, le=le)
            for le in ("1.0", "5.0", "30.0", "60.0", "120.0", "600.0", "1800.0", "+Inf")
        }

    def test_succeeded(self, scrapes: tuple[Samples, Samples]) -> None:
        assert self.buckets(scrapes, "succeeded") == {
            "1.0": 0,
            "5.0": 1,
            "30.0": 1,
            "60.0": 2,
            "120.0": 2,
            "600.0": 2,
            "1800.0": 3,
            "+Inf": 3,
        }
        before, after = scrapes
        assert delta(after, before, f"{self.NAME}_count", status="succeeded") == 3
        assert delta(after, before, f"{self.NAME}_sum", status="succeeded") == pytest.approx(
            3.5 + 45.25 + 700.0, abs=1e-3
        )

    def test_failed(self, scrapes: tuple[Samples, Samples]) -> None:
        assert set(self.buckets(scrapes, "failed").values()) == {1}
        before, after = scrapes
        assert delta(after, before, f"{self.NAME}_sum", status="failed") == pytest.approx(
            0.5, abs=1e-3
        )

    def test_cancelled_counts_only_jobs_that_ran(self, scrapes: tuple[Samples, Samples]) -> None:
        assert self.buckets(scrapes, "cancelled") == {
            "1.0": 0,
            "5.0": 0,
            "30.0": 0,
            "60.0": 0,
            "120.0": 1,
            "600.0": 1,
            "1800.0": 1,
            "+Inf": 1,
        }
        before, after = scrapes
        assert delta(after, before, f"{self.NAME}_sum", status="cancelled") == pytest.approx(
            90.0, abs=1e-3
        )

    def test_unfinished_statuses_have_no_series(self, scrapes: tuple[Samples, Samples]) -> None:
        statuses = {
            dict(labels)["status"] for name, labels in scrapes[1] if name == f"{self.NAME}_count"
        }
        assert statuses == {"succeeded", "failed", "cancelled"}


class TestEpochSeconds:
    NAME = "netkiln_epoch_seconds"

    def test_buckets_count_and_sum(self, scrapes: tuple[Samples, Samples]) -> None:
        before, after = scrapes
        buckets = {
            le: delta(after, before, f"{self.NAME}_bucket", le=le)
            for le in ("0.1", "0.25", "0.5", "1.0", "2.5", "10.0", "30.0", "+Inf")
        }
        assert buckets == {
            "0.1": 1,
            "0.25": 1,
            "0.5": 3,
            "1.0": 3,
            "2.5": 4,
            "10.0": 4,
            "30.0": 5,
            "+Inf": 5,
        }
        assert delta(after, before, f"{self.NAME}_count") == 5  # the epoch without seconds
        assert delta(after, before, f"{self.NAME}_sum") == pytest.approx(14.65)


class TestScrape:
    def test_includes_the_api_process_metrics(self, client: TestClient) -> None:
        names = {name for name, _ in scrape(client)}
        assert {"process_resident_memory_bytes", "python_info"} <= names

    def test_read_lane_gauges(self, client: TestClient) -> None:
        samples = scrape(client)
        assert value(samples, "netkiln_api_read_lane_threads") == 1  # the default
        # Nothing is reading while the scrape is answered.
        assert value(samples, "netkiln_api_read_lane_busy") == 0
        assert value(samples, "netkiln_api_read_lane_waiting") == 0

    def test_openmetrics_on_request(self, client: TestClient) -> None:
        response = client.get("/metrics", headers={"accept": "application/openmetrics-text"})
        assert response.headers["content-type"].startswith("application/openmetrics-text")
        assert response.text.endswith("# EOF\n")

    def test_apps_side_by_side_keep_separate_registries(self, backend: Backend) -> None:
        with api_client(backend.settings()) as other:
            assert "netkiln_jobs" in other.get("/metrics").text


def test_unreadable_database_reports_down_instead_of_failing(tmp_path: Path) -> None:
    collector = JobsCollector(f"sqlite:///{tmp_path}/missing/netkiln.db")
    families = {family.name: family for family in collector.collect()}
    assert list(families) == ["netkiln_database_up"]
    assert families["netkiln_database_up"].samples[0].value == 0
