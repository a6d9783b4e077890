"""Celery tasks. The message carries only the job id; the row holds everything else."""

from __future__ import annotations

import os
import uuid
from typing import Any

from celery.signals import worker_process_init, worker_ready, worker_shutdown

from core.queue import RUN_JOB_TASK, make_celery
from core.settings import get_settings
from models.db import forget_inherited_connections
from worker.reconciler import Reconciler

#: The worker's Celery app (``netkiln worker`` runs it); built from ``NETKILN_*``.
celery_app = make_celery(get_settings())
_reconciler: Reconciler | None = None


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    global _reconciler
    _reconciler = Reconciler(get_settings(), celery_app)
    _reconciler.start()


@worker_shutdown.connect
def _stop_reconciler(**_: Any) -> None:
    if _reconciler is not None:
        _reconciler.stopped.set()


@worker_process_init.connect
def _warm_up(**_: Any) -> None:
    # A pool process forked after worker_ready (a replacement: recycled after
    # worker_max_tasks_per_child jobs, or after one died) inherits the reconciler's
    # pooled database connections; it must never use them.
    forget_inherited_connections()
    # Import TensorFlow in the pool process, never in the parent: a forked TF runtime
    # can deadlock, and paying the import here keeps it off the first job's clock.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import worker.runner  # noqa: F401


@celery_app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    from worker.runner import run_job as run

    run(uuid.UUID(job_id), get_settings())
