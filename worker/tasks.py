"""Celery tasks. The message carries only the job id; the row holds everything else."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from typing import Any

from billiard.einfo import ExceptionInfo
from billiard.exceptions import WorkerLostError
from billiard.process import current_process
from celery.signals import (
    worker_init,
    worker_process_init,
    worker_ready,
    worker_shutdown,
    worker_shutting_down,
)
from celery.worker import state
from celery.worker.request import Request

from core.queue import RUN_JOB_TASK, make_celery
from core.settings import get_settings
from core.storage import open_store
from models import workers
from models.db import forget_inherited_connections, transaction
from worker.devices import pin_pool_process, split_cpu, worker_devices
from worker.reconciler import Reconciler, record_crash, requeue_interrupted

log = logging.getLogger(__name__)

#: The worker's Celery app (``netkiln worker`` runs it); built from ``NETKILN_*``.
celery_app = make_celery(get_settings())
_reconciler: Reconciler | None = None
#: The running worker (Celery's WorkController), for its pool on shutdown.
_worker: Any = None


def worker_id(pid: int) -> str:
    """This worker's row in the registry: its host and main process."""
    return f"{socket.gethostname()}:{pid}"


@worker_ready.connect
def _start_reconciler(**_: Any) -> None:
    global _reconciler
    _reconciler = Reconciler(get_settings(), celery_app, worker_id(os.getpid()))
    _reconciler.start()


@worker_shutdown.connect
def _stop_reconciler(**_: Any) -> None:
    if _reconciler is not None:
        _reconciler.stopped.set()
    try:
        with transaction(get_settings().resolved_database_url) as session:
            workers.forget(session, worker_id(os.getpid()))
    except Exception:  # the row goes silent and stops counting as live anyway
        log.exception("could not remove this worker from the registry")


@worker_init.connect
def _remember_worker(sender: Any, **_: Any) -> None:
    """Keep the worker for shutdown, and register it before its pool processes start
    (each records the speed it measures in this row)."""
    global _worker
    _worker = sender
    settings = get_settings()
    with transaction(settings.resolved_database_url) as session:
        workers.register(
            session,
            worker_id(os.getpid()),
            socket.gethostname(),
            worker_devices(settings).queues,
            settings.keras_backend,
            int(getattr(sender, "concurrency", 1) or 1),
        )


@worker_shutting_down.connect
def _interrupt_jobs(**_: Any) -> None:
    # Celery's warm shutdown (SIGTERM: a service manager, docker stop, netkiln up ending)
    # waits for running tasks, and a job may train for hours: the worker would outlive
    # whoever stopped it. This runs inside the signal handler, so the work goes to a thread.
    threading.Thread(target=_stop_running_jobs, name="netkiln-shutdown", daemon=True).start()


def _stop_running_jobs() -> None:
    """Re-queue this worker's running jobs (they resume from their checkpoints on the
    next worker), then end their pool processes, so the shutdown finishes at once."""
    if _reconciler is not None:
        _reconciler.stopped.set()
    settings, host = get_settings(), socket.gethostname()
    # Reserved too: a pool process may have started a job before the main process has
    # read its acknowledgement (the request is not "active" yet, and has no pid).
    requests = [*state.active_requests, *state.reserved_requests]
    for request in requests:
        try:
            requeue_interrupted(settings, uuid.UUID(request.args[0]), host)
        except Exception:  # the heartbeat time-out still re-queues it
            log.exception("could not re-queue job %s on shutdown", request.args[0])
    if _worker is None or not requests:
        return
    pids = {request.worker_pid for request in requests if request.worker_pid}
    if any(not request.worker_pid for request in requests):
        # Which process runs it is not known yet: end them all (their jobs are re-queued;
        # an idle one only saves the warm shutdown the wait).
        pids |= set(_worker.pool.info.get("processes", []))
    for pid in pids:
        _worker.pool.terminate_job(pid, signal.SIGKILL)


@worker_process_init.connect
def _warm_up(**_: Any) -> None:
    # A pool process forked after worker_ready (a replacement: recycled after
    # worker_max_tasks_per_child jobs, or after one died) inherits the reconciler's
    # pooled database connections; it must never use them.
    forget_inherited_connections()
    # The process this one replaces may have died mid-checkpoint.
    open_store(get_settings()).clean_staging()
    # This process's GPUs (or none), before the backend is imported: CUDA reads them once.
    settings = get_settings()
    pin_pool_process(settings, current_process().index)
    # Import TensorFlow in the pool process, never in the parent: a forked TF runtime
    # can deadlock, and paying the import here keeps it off the first job's clock.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import worker.runner  # noqa: F401
    from worker.execution import device_speed

    if settings.keras_backend == "tensorflow":
        split_cpu(settings.worker_logical_cpus)

    # Measured now, off every job's clock; the execution plans and the API's epoch
    # estimates rest on it.
    speed = device_speed()
    try:
        with transaction(get_settings().resolved_database_url) as session:
            workers.record_speed(
                session,
                worker_id(os.getppid()),
                speed.devices,
                speed.gflops,
                speed.step_overhead_s,
            )
    except Exception:  # estimates wait for the next pool process; training does not
        log.exception("could not record this worker's measured speed")


class JobRequest(Request):
    """A job's delivery, as the worker's main process sees it: when the pool process
    running it dies, the job's row learns so at once (:func:`record_crash`)."""

    def on_failure(
        self, exc_info: ExceptionInfo, send_failed_event: bool = True, return_ok: bool = False
    ) -> None:
        super().on_failure(exc_info, send_failed_event=send_failed_event, return_ok=return_ok)
        exc = getattr(exc_info.exception, "exc", exc_info.exception)
        if isinstance(exc, WorkerLostError | SystemExit):
            try:
                job_id = uuid.UUID(self.args[0])
                record_crash(get_settings(), job_id, socket.gethostname(), str(exc))
            except Exception:  # the reconciler's heartbeat check still catches the job
                log.exception("could not record the crash of job %s", self.args[0])


@celery_app.task(name=RUN_JOB_TASK, Request=JobRequest)
def run_job(job_id: str) -> None:
    from worker.runner import run_job as run

    run(uuid.UUID(job_id), get_settings())
