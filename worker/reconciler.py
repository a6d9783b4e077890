"""Rescues stranded jobs. Runs as a thread in every worker's main process (no TensorFlow
there); sweeps are compare-and-set updates, so any number of workers may run it.

- A running job whose heartbeat is older than ``heartbeat_timeout`` lost its worker
  (SIGKILL, OOM kill, node loss): it goes back to ``queued`` for another attempt, or ends
  ``failed`` with ``worker_lost`` once ``max_attempts`` are used up (``cancelled``, if a
  cancel was pending). A retry resumes from the job's last checkpoint. The broker's own
  redelivery is not relied on: Redis redelivers unacknowledged messages only after its
  visibility timeout, which must exceed the longest job.
- A queued job that was never dispatched (the broker was down when it was submitted, or
  it was just re-queued) is sent; one still queued ``redispatch_after`` seconds after its
  last dispatch is sent again, in case the broker lost the message. A broker that lost
  its messages (a Redis without persistence restarting) is noticed at once — the marker
  each sweep leaves in it is gone (:func:`core.queue.broker_lost_messages`) — and every
  queued job is sent again. Duplicates cost nothing: only one delivery claims the row.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from celery import Celery
from sqlalchemy import and_, false, or_, select, true

from core.queue import broker_lost_messages, dispatch
from core.settings import Settings
from models import workers
from models.db import transaction
from models.events import add_status_event
from models.tables import Job, JobStatus, utcnow
from worker.sweeps import advance_sweep

log = logging.getLogger(__name__)

#: A just-submitted job is the API's to dispatch; give it this long before stepping in.
DISPATCH_GRACE = timedelta(seconds=5)


@dataclass
class SweepReport:
    requeued: list[uuid.UUID] = field(default_factory=list)
    failed: list[uuid.UUID] = field(default_factory=list)
    cancelled: list[uuid.UUID] = field(default_factory=list)
    dispatched: list[uuid.UUID] = field(default_factory=list)


def sweep(settings: Settings, celery: Celery) -> SweepReport:
    report = SweepReport()
    url = settings.resolved_database_url
    lost_messages = broker_lost_messages(settings)
    now = utcnow()
    with transaction(url) as session:
        stale = session.scalars(
            select(Job)
            .where(
                Job.status == JobStatus.RUNNING,
                Job.heartbeat_at < now - timedelta(seconds=settings.heartbeat_timeout),
                # A sweep trains nothing itself; its trials have heartbeats of their own.
                Job.kind != "sweep",
            )
            .with_for_update(skip_locked=True)
        )
        queues: dict[uuid.UUID, str] = {}
        for job in stale:
            queues[job.id] = job.queue
            silent = (now - job.heartbeat_at).total_seconds() if job.heartbeat_at else 0.0
            reason = f"worker {job.worker_host} stopped responding during attempt {job.attempt}"
            outcome = end_lost_attempt(
                job, "worker_lost", f"{reason}; all {job.max_attempts} attempts used"
            )
            {
                JobStatus.CANCELLED: report.cancelled,
                JobStatus.FAILED: report.failed,
                JobStatus.QUEUED: report.requeued,
            }[outcome].append(job.id)
            add_status_event(session, job, reason=reason)
            log.warning("job %s: silent for %.0fs; %s", job.id, silent, reason)
        undispatched = list(
            session.execute(
                select(Job.id, Job.queue).where(
                    Job.status == JobStatus.QUEUED,
                    or_(
                        # The broker came back empty: every message is gone.
                        true() if lost_messages else false(),
                        and_(Job.dispatched_at.is_(None), Job.created_at < now - DISPATCH_GRACE),
                        # The message may be gone (a broker restarted without persistence):
                        # send it again now and then; a duplicate finds the row claimed.
                        Job.dispatched_at < now - timedelta(seconds=settings.redispatch_after),
                    ),
                )
            )
        )
    if lost_messages and undispatched:
        log.warning(
            "the broker lost its messages (restarted empty?): sending %d queued jobs again",
            len(undispatched),
        )
    queues.update({job_id: queue for job_id, queue in undispatched})
    for job_id in [*report.requeued, *(job_id for job_id, _ in undispatched)]:
        dispatch(celery, url, job_id, queues[job_id])
        report.dispatched.append(job_id)
    # Sweeps whose trial ended where nobody moved them on (its worker died right after).
    with transaction(url) as session:
        running_sweeps = list(
            session.scalars(
                select(Job.id).where(Job.kind == "sweep", Job.status == JobStatus.RUNNING)
            )
        )
    for sweep_id in running_sweeps:
        try:
            advance_sweep(settings, sweep_id, celery)
        except Exception:  # one sweep's trouble must not hold up the others
            log.exception("sweep %s: could not be moved on; retrying next pass", sweep_id)
    return report


def end_lost_attempt(job: Job, code: str, message: str) -> JobStatus:
    """A running attempt is gone (silent, or its process died): the job ends cancelled if a
    cancel was pending, fails with ``code`` once its attempts are used up, and otherwise
    goes back to the queue for the reconciler to send. Returns the new status."""
    now = utcnow()
    if job.cancel_requested_at is not None:
        job.status = JobStatus.CANCELLED
        job.finished_at = now
    elif job.attempt >= job.max_attempts:
        job.status = JobStatus.FAILED
        job.error_code, job.error_message = code, message
        job.finished_at = now
    else:
        job.status = JobStatus.QUEUED
        job.dispatched_at = None
    return JobStatus(job.status)


def record_crash(settings: Settings, job_id: uuid.UUID, host: str, reason: str) -> bool:
    """The pool process running ``job_id`` on this host died (a signal, a crash in the
    backend's native code): re-queue the job for its next attempt, or, once its attempts
    are used up, fail it ``worker_crashed`` — at once, rather than after the heartbeat
    time-out. A job whose row already ended (its control thread ended the process on
    purpose) or that another attempt runs is left alone. True if the row changed."""
    with transaction(settings.resolved_database_url) as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.RUNNING or job.worker_host != host:
            return False
        what = f"the worker process died during attempt {job.attempt} ({reason})"
        end_lost_attempt(
            job,
            "worker_crashed",
            f"{what}; it died in all {job.max_attempts} attempts, so the job is not "
            "retried (a spec that crashes the backend fails the same way every time)",
        )
        add_status_event(session, job, reason=what)
        log.warning("job %s: %s", job_id, what)
        return True


def requeue_interrupted(settings: Settings, job_id: uuid.UUID, host: str) -> bool:
    """This worker is shutting down while it runs ``job_id``: put the job back in the
    queue now, for any worker to resume from its checkpoint, instead of letting it wait
    out the heartbeat time-out. True if the row changed."""
    with transaction(settings.resolved_database_url) as session:
        job = session.get(Job, job_id, with_for_update=True)
        if job is None or job.status != JobStatus.RUNNING or job.worker_host != host:
            return False
        job.status = JobStatus.QUEUED
        job.dispatched_at = None  # a running worker's reconciler sends it
        reason = f"worker {host} shut down during attempt {job.attempt}"
        add_status_event(session, job, reason=reason)
        log.warning("job %s: %s; re-queued", job_id, reason)
        return True


class Reconciler(threading.Thread):
    """Sweeps every ``reconcile_interval``, and with each sweep says in the worker
    registry that this worker (``worker_id``) is alive."""

    def __init__(self, settings: Settings, celery: Celery, worker_id: str) -> None:
        super().__init__(name="netkiln-reconciler", daemon=True)
        self.settings = settings
        self.celery = celery
        self.worker_id = worker_id
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.wait(self.settings.reconcile_interval):
            try:
                with transaction(self.settings.resolved_database_url) as session:
                    workers.beat(session, self.worker_id)
            except Exception:  # the database is down: the sweep below fails and says so
                log.debug("worker heartbeat not recorded", exc_info=True)
            try:
                report = sweep(self.settings, self.celery)
            except Exception:  # a DB or broker blip must not end the thread
                log.exception(
                    "reconciler sweep failed; retrying in %ss", self.settings.reconcile_interval
                )
                continue
            if report.requeued or report.failed or report.dispatched:
                log.info(
                    "reconciler: requeued %d, failed %d, dispatched %d",
                    len(report.requeued),
                    len(report.failed),
                    len(report.dispatched),
                )
