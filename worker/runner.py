"""One job, start to end: claim the row, train, store artifacts, record the outcome.

Safe to run twice for the same id: only the run that claims the queued row trains.
"""

from __future__ import annotations

import logging
import socket
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from pydantic import ValidationError

from core.settings import Settings
from core.storage import StorageUnavailable, open_store
from models.spec import job_spec_adapter
from worker.artifacts import JobArtifacts
from worker.control import Control, JobCancelled
from worker.errors import JobError
from worker.execution import data_parallel, dtype_policy
from worker.jobstore import JobStore, LostOwnership
from worker.memory import registered_gradients, release
from worker.resolve import Resolver
from worker.rungs import RungCallback
from worker.sweeps import advance_sweep
from worker.train import Resume, library_versions, train

log = logging.getLogger(__name__)


def run_job(job_id: uuid.UUID, settings: Settings) -> None:
    store = JobStore(settings.resolved_database_url, job_id, settings.database_retry_seconds)
    claim = store.claim(socket.gethostname(), settings.default_limits)
    if claim is None:
        log.info("job %s is not to run now (not queued, or its tenant is busy)", job_id)
        return
    artifact_store = open_store(settings)
    artifacts = JobArtifacts(artifact_store, claim.tenant, job_id)
    max_runtime = claim.spec.get("max_runtime")
    control = Control(
        store,
        settings.heartbeat_interval,
        max_runtime,
        memory_limit=settings.job_memory_limit_bytes,
        grace=settings.stop_grace,
    )
    gradients_before = registered_gradients()
    ended = False
    try:
        control.start()
        with job_log_events(store):
            log.info("job %s: attempt %d started", job_id, claim.attempt)
            if claim.reuse and (found := store.reusable(library_versions())) is not None:
                store.take_result(found.job_id, artifacts.copy(found.uris))
                log.info("job %s: took the result of job %s", job_id, found.job_id)
                ended = True
                return
            spec = job_spec_adapter.validate_python(claim.spec)
            resolver = Resolver(settings.resolved_database_url, artifact_store)
            resume = (
                Resume(
                    claim.checkpoint_epoch,
                    claim.checkpoint_uri,
                    claim.best_uri,
                    claim.callback_state,
                )
                if claim.checkpoint_epoch and claim.checkpoint_uri
                else None
            )
            # A trial of an ASHA sweep stops at a rung unless it is among the best there.
            rungs = (
                [RungCallback(settings.resolved_database_url, claim.asha, store.log)]
                if claim.asha
                else []
            )
            # The layers the job builds take its precision, and its variables live on its
            # devices, for this job only.
            with (
                dtype_policy(spec.fit.precision),
                data_parallel(spec.resources.device_count) as devices,
            ):
                result = train(
                    spec,
                    store,
                    control,
                    artifacts,
                    resolver,
                    resume,
                    devices,
                    extra_callbacks=rungs,
                )
            log.info("job %s: trained; test metrics %s", job_id, result.test_metrics)
            # The status event is the stream's last word, so nothing is logged after it.
            store.succeed(result.test_metrics, artifacts.save_model(result.model), result.chance)
            ended = True
            del result  # its model holds the job's graphs, which the teardown below frees
    except LostOwnership:
        log.warning("job %s: re-queued to another attempt; dropping this one", job_id)
    except JobCancelled:
        log.info("job %s: cancelled", job_id)
        ended = _record(store.cancel, job_id)
    except Exception as exc:  # every failure ends the job, never the worker
        error = classify(exc)
        log.log(
            logging.ERROR if error.code == "internal" else logging.WARNING,
            "job %s failed (%s): %s",
            job_id,
            error.code,
            error.message,
            exc_info=error.code == "internal",
        )
        ended = _record(lambda: store.fail(error), job_id)
    finally:
        control.stop()
        if ended:
            _prune(store, artifacts)
            if claim.parent_id is not None:
                _advance_sweep(settings, claim.parent_id)
        # A pool process killed mid-checkpoint (by its watchdog, or a crash) left its
        # staging folder; this one's are gone, since they are context managers.
        artifact_store.clean_staging()
        # Free the graphs and weights of this job before the next one arrives. Not just
        # clear_session(): each job's train graph stays pinned by TensorFlow's gradient
        # registry (~4.5 MB a small job, without end) unless release() unpins it.
        release(gradients_before)


def _record(outcome: Callable[[], None], job_id: uuid.UUID) -> bool:
    """Whether the outcome was recorded (this attempt still owned the job)."""
    try:
        outcome()
    except LostOwnership:
        log.warning("job %s: could not record the outcome, no longer owned", job_id)
        return False
    return True


def _advance_sweep(settings: Settings, sweep_id: uuid.UUID) -> None:
    """A trial ended: its sweep schedules the next one now, not at the next reconciler
    pass (which still does, if this fails)."""
    try:
        advance_sweep(settings, sweep_id)
    except Exception:
        log.exception("sweep %s: not moved on after its trial; the reconciler will", sweep_id)


def _prune(store: JobStore, artifacts: JobArtifacts) -> None:
    """The job ended under this attempt: no other attempt writes its objects any more, so
    whatever no row names (a best model the trained one replaced, checkpoints of killed
    attempts) can go. Only an ended job: a running one may have written an object it has
    not recorded yet."""
    try:
        artifacts.prune(store.artifact_uris())
    except Exception as exc:  # a store or database outage: the next delete takes them
        log.warning("job %s: unreferenced artifacts not pruned: %s", store.job_id, exc)


class JobLogHandler(logging.Handler):
    """Copies the worker's log lines about this job into its event stream."""

    def __init__(self, store: JobStore) -> None:
        super().__init__(level=logging.INFO)
        self.store = store

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.store.log(record.levelname.lower(), record.getMessage())
        except Exception:
            self.handleError(record)


@contextmanager
def job_log_events(store: JobStore) -> Iterator[None]:
    handler = JobLogHandler(store)
    loggers = [logging.getLogger("worker"), logging.getLogger("py.warnings")]
    logging.captureWarnings(True)
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeHandler(handler)


def classify(exc: BaseException) -> JobError:
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, MemoryError) or _looks_like_oom(exc):
        return JobError(
            "out_of_memory",
            "the model or batch did not fit in memory; lower batch_size or the layer sizes",
        )
    if isinstance(exc, StorageUnavailable):
        return JobError(
            "storage_unavailable",
            f"the artifact store stayed unavailable: {exc}",
        )
    if isinstance(exc, ValidationError):
        return JobError("internal", f"stored spec no longer validates: {exc}")
    if type(exc).__name__ == "InvalidArgumentError":
        # TensorFlow's text leads with the graph trace; the cause is its last line.
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return JobError("invalid_data", f"the data does not fit the model: {lines[-1]}")
    return JobError("internal", f"{type(exc).__name__}: {exc}")


def _looks_like_oom(exc: BaseException) -> bool:
    # TensorFlow raises ResourceExhaustedError, JAX an XlaRuntimeError "RESOURCE_EXHAUSTED".
    return type(exc).__name__ == "ResourceExhaustedError" or "RESOURCE_EXHAUSTED" in str(exc)
