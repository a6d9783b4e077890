"""Prometheus metrics of the service, read from the database at scrape time.

Jobs are created by any API process and run by separate workers, so no process holds the
counts; the database does. Every scrape runs three aggregate queries, whatever the number
of jobs, and each API process answers with the same numbers.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import Any

from prometheus_client import CollectorRegistry, GCCollector, PlatformCollector, ProcessCollector
from prometheus_client.core import GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from sqlalchemy import ColumnElement, Float, SQLColumnExpression, case, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from api.read_lane import ReadLane
from models.db import transaction
from models.tables import TERMINAL_STATUSES, EpochMetrics, Job, JobStatus

log = logging.getLogger(__name__)

#: Upper bounds (seconds) of the job duration buckets: a few seconds to a day.
JOB_DURATION_BUCKETS = (1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400, 43200, 86400)
#: Upper bounds (seconds) of the epoch time buckets.
EPOCH_SECONDS_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600)

FINAL_STATUSES = sorted(TERMINAL_STATUSES)


class seconds_between(FunctionElement[float]):  # noqa: N801 (SQL functions are lower case)
    """``end - start`` in seconds, as a float, on PostgreSQL and SQLite."""

    type = Float()
    inherit_cache = True


@compiles(seconds_between)
def _seconds_between(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"EXTRACT(EPOCH FROM ({end} - {start}))"


@compiles(seconds_between, "sqlite")
def _seconds_between_sqlite(element: seconds_between, compiler: SQLCompiler, **kw: Any) -> str:
    # SQLite keeps timestamps as text and cannot subtract them; Julian days it can.
    start, end = (compiler.process(clause, **kw) for clause in element.clauses)
    return f"((julianday({end}) - julianday({start})) * 86400.0)"


def _histogram_columns(
    value: SQLColumnExpression[float | None], bounds: Sequence[float]
) -> list[ColumnElement[Any]]:
    """count, sum, then one cumulative count per bucket bound, as aggregate columns."""
    return [
        func.count(value),
        func.coalesce(func.sum(value), 0.0),
        *(func.coalesce(func.sum(case((value <= bound, 1), else_=0)), 0) for bound in bounds),
    ]


def _buckets(row: Sequence[Any], bounds: Sequence[float]) -> tuple[list[tuple[str, float]], float]:
    count, total, *cumulative = row
    buckets = [
        (floatToGoString(bound), float(n))  # type: ignore[no-untyped-call]
        for bound, n in zip(bounds, cumulative, strict=True)
    ]
    return [*buckets, ("+Inf", float(count))], float(total)


class JobsCollector(Collector):
    def __init__(self, database_url: str) -> None:
        self.database_url = database_url

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily(
            "netkiln_database_up", "1 if this scrape could read the job tables, else 0."
        )
        try:
            families = self._job_families()
        except SQLAlchemyError:
            log.warning("metrics: the database could not be read", exc_info=True)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from families

    def _job_families(self) -> list[Metric]:
        duration = seconds_between(Job.started_at, Job.finished_at)
        with transaction(self.database_url) as session:
            by_status = dict(
                session.execute(select(Job.status, func.count()).group_by(Job.status)).all()
            )
            durations = session.execute(
                select(Job.status, *_histogram_columns(duration, JOB_DURATION_BUCKETS))
                .where(
                    Job.status.in_(FINAL_STATUSES),
                    Job.started_at.is_not(None),
                    Job.finished_at.is_not(None),
                )
                .group_by(Job.status)
            ).all()
            epochs = session.execute(
                select(*_histogram_columns(EpochMetrics.seconds, EPOCH_SECONDS_BUCKETS))
            ).one()

        jobs = GaugeMetricFamily("netkiln_jobs", "Jobs by status.", labels=["status"])
        for status in JobStatus:
            jobs.add_metric([status.value], by_status.get(status, 0))
        queue = GaugeMetricFamily(
            "netkiln_queue_depth", "Jobs waiting for a worker (status queued)."
        )
        queue.add_metric([], by_status.get(JobStatus.QUEUED, 0))

        job_seconds = HistogramMetricFamily(
            "netkiln_job_duration_seconds",
            "Run time of finished jobs (finished_at - started_at of the last attempt), "
            "by final status.",
            labels=["status"],
        )
        rows = {row[0]: row[1:] for row in durations}
        empty = (0, 0.0, *(0 for _ in JOB_DURATION_BUCKETS))
        for status in FINAL_STATUSES:
            buckets, total = _buckets(rows.get(status, empty), JOB_DURATION_BUCKETS)
            job_seconds.add_metric([status.value], buckets, total)

        epoch_seconds = HistogramMetricFamily(
            "netkiln_epoch_seconds", "Wall time of finished training epochs."
        )
        buckets, total = _buckets(epochs, EPOCH_SECONDS_BUCKETS)
        epoch_seconds.add_metric([], buckets, total)
        return [jobs, queue, job_seconds, epoch_seconds]


class ReadLaneCollector(Collector):
    """This API process's read lane (``api/read_lane.py``): reads waiting for it that stay
    above zero mean polls outrun the process — add API processes (``--workers``)."""

    def __init__(self, lane: ReadLane) -> None:
        self.lane = lane

    def collect(self) -> Iterator[Metric]:
        for name, help_text, value in (
            ("threads", "Threads of this API process's read lane.", self.lane.threads),
            ("busy", "Polled reads running in the read lane now.", self.lane.busy),
            ("waiting", "Polled reads waiting for a thread of the read lane.", self.lane.waiting),
        ):
            yield GaugeMetricFamily(f"netkiln_api_read_lane_{name}", help_text, value=value)


def make_registry(database_url: str, lane: ReadLane) -> CollectorRegistry:
    """A registry per app, so that apps made side by side (tests) do not collide; the
    job metrics, this process's read lane, and its process, platform and GC metrics."""
    registry = CollectorRegistry()
    registry.register(JobsCollector(database_url))
    registry.register(ReadLaneCollector(lane))
    ProcessCollector(registry=registry)
    PlatformCollector(registry=registry)
    GCCollector(registry=registry)
    return registry
