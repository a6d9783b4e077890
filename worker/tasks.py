"""Celery tasks. The message carries only the job id; the row holds everything else."""

from __future__ import annotations

import os
import uuid

from celery.signals import worker_process_init

from models.settings import get_settings
from worker.app import RUN_JOB_TASK, celery_app


@worker_process_init.connect
def _warm_up(**_: object) -> None:
    # Import TensorFlow in the pool process, never in the parent: a forked TF runtime
    # can deadlock, and paying the import here keeps it off the first job's clock.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import worker.runner  # noqa: F401


@celery_app.task(name=RUN_JOB_TASK)
def run_job(job_id: str) -> None:
    from worker.runner import run_job as run

    run(uuid.UUID(job_id), get_settings())
