"""The queue contract between the API and the workers: the Celery app's settings, the
task names and queues, and :func:`dispatch`. Both sides import this module; neither
imports the other. Light on purpose: no TensorFlow, no FastAPI."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from functools import lru_cache
from urllib.parse import urlparse

import redis
from celery import Celery
from sqlalchemy import update

from core.settings import Settings
from models.db import transaction
from models.spec.resources import (
    GPU_QUEUE_PREFIX,
    JOB_QUEUE,
    gpu_queue,
    gpu_queues,
    queue_for,
)
from models.tables import Job, JobStatus, utcnow

log = logging.getLogger(__name__)

__all__ = [
    "GPU_QUEUE_PREFIX",
    "JOB_QUEUE",
    "RUN_JOB_TASK",
    "dispatch",
    "dispatch_queued",
    "gpu_queue",
    "gpu_queues",
    "make_celery",
    "queue_for",
]

#: The one task: its only argument is a job id (the row holds everything else).
RUN_JOB_TASK = "netkiln.run_job"
#: The module that defines the tasks; only a worker process imports it.
TASK_MODULE = "worker.tasks"


def make_celery(settings: Settings) -> Celery:
    app = Celery("netkiln", include=[TASK_MODULE])
    app.conf.update(
        broker_url=settings.resolved_broker_url,
        broker_transport_options=settings.broker_transport_options,
        broker_connection_retry_on_startup=True,
        # The database is the source of truth; Celery results would be a second copy.
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=JOB_QUEUE,
        # A job is acknowledged only once it has ended, so a dead worker's job is redelivered.
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        # Recycling a pool process bounds what a long run of jobs can leave behind in it
        # (Celery checks after each task; a running job is never cut short).
        worker_max_tasks_per_child=settings.worker_max_tasks_per_child,
        worker_max_memory_per_child=celery_memory_kib(settings.worker_max_memory_per_child_mb),
        # A new pool process imports TensorFlow before it reports up (worker/tasks.py), which
        # can take longer than Celery's default 4 s: with Redis, Celery then killed each
        # replacement process and forked another (seen on a busy 2-core machine).
        worker_proc_alive_timeout=120.0,
        # How long the main process waits for a dead pool process's result before it
        # reports the job's process lost (default 10 s). Results are ignored here, so
        # waiting gains nothing and only delays re-queueing a crashed job.
        worker_lost_wait=1.0,
        worker_hijack_root_logger=False,
        worker_send_task_events=True,
        task_send_sent_event=True,
    )
    return app


def celery_memory_kib(megabytes: int | None) -> int | None:
    """Celery's ``worker_max_memory_per_child`` is in KiB."""
    return None if megabytes is None else megabytes * 1024


def dispatch(celery: Celery, database_url: str, job_id: uuid.UUID, queue: str) -> None:
    """Send the job's message to its queue (the row's ``queue``: :func:`queue_for` its
    resources), then note when. Only ever
    called with the id of a committed row (by the API after its commit, by a worker's
    reconciler). A duplicate message is harmless: only the delivery that claims the queued
    row trains."""
    celery.send_task(RUN_JOB_TASK, args=[str(job_id)], queue=queue)
    with transaction(database_url) as session:
        session.execute(
            update(Job)
            .where(Job.id == job_id, Job.status == JobStatus.QUEUED)
            .values(dispatched_at=utcnow())
        )


def dispatch_queued(
    celery: Celery, database_url: str, jobs: Iterable[tuple[uuid.UUID, str]]
) -> None:
    """:func:`dispatch` each committed ``(job id, queue)``. A message that cannot be sent
    (the broker is down) is logged, not raised: the row is the source of truth, and the
    reconciler sends a queued job without a message once the broker is back."""
    for job_id, queue in jobs:
        try:
            dispatch(celery, database_url, job_id, queue)
        except Exception:
            log.exception("could not enqueue job %s; it stays queued", job_id)


# --- noticing a broker that lost its messages ------------------------------------------

#: What the reconciler leaves in the broker: a broker that no longer holds it restarted
#: without its data (a Redis without persistence) or was wiped, and lost every message.
BROKER_MARKER = "netkiln.broker-marker"


def _redis_marker_was_missing(settings: Settings) -> bool:
    return bool(_redis_client(settings.resolved_broker_url).set(BROKER_MARKER, "1", nx=True))


@lru_cache(maxsize=4)
def _redis_client(url: str) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=5)


def _folder_marker_was_missing(settings: Settings) -> bool:
    # Not among the messages: the filesystem transport reads only "*.msg" files.
    try:
        (settings.broker_dir / BROKER_MARKER).open("x").close()
    except FileExistsError:
        return False
    return True


#: Per broker URL scheme; a broker of another kind relies on ``redispatch_after`` alone.
MARKER_CHECKS: dict[str, Callable[[Settings], bool]] = {
    "redis": _redis_marker_was_missing,
    "rediss": _redis_marker_was_missing,
    "filesystem": _folder_marker_was_missing,
}


def broker_lost_messages(settings: Settings) -> bool:
    """Leave the marker in the broker; True if it was not there (a broker that came back
    empty, or one used for the first time): every queued job's message must be sent
    again, rather than after ``redispatch_after``."""
    check = MARKER_CHECKS.get(urlparse(settings.resolved_broker_url).scheme)
    return check(settings) if check else False
