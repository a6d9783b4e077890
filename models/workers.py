"""The worker registry: each ``netkiln worker`` says what it serves and how fast its
devices are, and keeps saying it is alive. The API reads it to tell why a job waits
(:mod:`models.queueing`) and to estimate an epoch's time in a dry run."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import timedelta

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from models.tables import Worker, utcnow

#: A worker whose heartbeat is older than this many of its sweep intervals is gone.
SILENT_SWEEPS = 3
#: FLOP per parameter per example of a train step (2 forward, 4 backward and update);
#: the worker's execution plan uses the same count (worker/execution.py).
FLOP_PER_PARAM = 6


def register(
    session: Session,
    worker_id: str,
    host: str,
    queues: list[str],
    backend: str,
    concurrency: int,
) -> None:
    session.execute(delete(Worker).where(Worker.id == worker_id))
    session.add(
        Worker(
            id=worker_id,
            host=host,
            queues=queues,
            backend=backend,
            concurrency=concurrency,
        )
    )


def beat(session: Session, worker_id: str) -> None:
    session.execute(update(Worker).where(Worker.id == worker_id).values(heartbeat_at=utcnow()))


def record_speed(
    session: Session, worker_id: str, devices: list[str], gflops: float, step_overhead_s: float
) -> None:
    session.execute(
        update(Worker)
        .where(Worker.id == worker_id)
        .values(devices=devices, device_gflops=gflops, step_overhead_s=step_overhead_s)
    )


def forget(session: Session, worker_id: str) -> None:
    session.execute(delete(Worker).where(Worker.id == worker_id))


def live(session: Session, sweep_interval: float) -> list[Worker]:
    """Workers that beat within :data:`SILENT_SWEEPS` sweep intervals."""
    since = utcnow() - timedelta(seconds=SILENT_SWEEPS * sweep_interval)
    return list(session.scalars(select(Worker).where(Worker.heartbeat_at >= since)))


def serving(session: Session, queue: str, sweep_interval: float) -> list[Worker]:
    """Live workers that consume ``queue``."""
    return [worker for worker in live(session, sweep_interval) if queue in worker.queues]


@dataclass(frozen=True)
class EpochEstimate:
    seconds: float
    steps: int
    #: The worker whose measured speed it rests on.
    worker: str


def estimate_epoch(
    workers: list[Worker], trainable_params: int, batch_size: int, examples: int
) -> EpochEstimate | None:
    """An epoch's seconds on the fastest live worker that measured its speed: steps ×
    (the fixed cost of a step + 6 FLOP per parameter per example at its measured rate).
    None before any worker has measured."""
    steps = math.ceil(examples / batch_size)
    speeds = {
        worker.id: (worker.device_gflops, worker.step_overhead_s)
        for worker in workers
        if worker.device_gflops and worker.step_overhead_s is not None
    }
    if not speeds or examples <= 0:
        return None

    def seconds(worker_id: str) -> float:
        gflops, overhead = speeds[worker_id]
        assert gflops is not None
        assert overhead is not None
        arithmetic = FLOP_PER_PARAM * trainable_params * batch_size / (gflops * 1e9)
        return steps * (overhead + arithmetic)

    fastest = min(speeds, key=seconds)
    return EpochEstimate(seconds(fastest), steps, fastest)
