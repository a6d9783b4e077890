"""One job, start to end: claim the row, train, store artifacts, record the outcome.

Safe to run twice for the same id: only the run that claims the queued row trains.
"""

from __future__ import annotations

import gc
import logging
import socket
import threading
import uuid

import keras
from pydantic import ValidationError

from models.settings import Settings
from models.spec import TrainJobSpec
from worker.artifacts import ArtifactStore
from worker.errors import JobError
from worker.jobstore import JobStore, LostOwnership
from worker.train import train

log = logging.getLogger(__name__)


def run_job(job_id: uuid.UUID, settings: Settings) -> None:
    store = JobStore(settings.resolved_database_url, job_id)
    raw_spec = store.claim(socket.gethostname())
    if raw_spec is None:
        log.info("job %s is not queued; nothing to do", job_id)
        return
    log.info("job %s: attempt %d started", job_id, store.attempt)
    heartbeat = Heartbeat(store, settings.heartbeat_interval)
    heartbeat.start()
    try:
        spec = TrainJobSpec.model_validate(raw_spec)
        result = train(spec, store, heartbeat.lost)
        artifacts = ArtifactStore(settings.artifacts_dir).save_model(result.model, job_id)
        store.succeed(result.test_metrics, artifacts)
        log.info("job %s succeeded: %s", job_id, result.test_metrics)
    except LostOwnership:
        log.warning("job %s: taken over or cancelled while running; dropping this attempt", job_id)
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
        try:
            store.fail(error)
        except LostOwnership:
            log.warning("job %s: could not record failure, no longer owned", job_id)
    finally:
        heartbeat.stop()
        # Free the graph and weights of this job before the next one arrives.
        keras.backend.clear_session()
        gc.collect()


class Heartbeat(threading.Thread):
    """Proves the attempt alive while it runs, whatever phase it is in (loading data,
    a long batch, saving); sets ``lost`` when the row says the job is no longer ours."""

    def __init__(self, store: JobStore, interval: float) -> None:
        super().__init__(name=f"heartbeat-{store.job_id}", daemon=True)
        self.store = store
        self.interval = interval
        self.lost = threading.Event()
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            try:
                self.store.heartbeat()
            except LostOwnership:
                self.lost.set()
                return
            except Exception:  # a DB blip: the next beat may get through
                log.warning("job %s: heartbeat failed", self.store.job_id, exc_info=True)

    def stop(self) -> None:
        self._stopped.set()
        self.join(timeout=self.interval + 5)


def classify(exc: BaseException) -> JobError:
    if isinstance(exc, JobError):
        return exc
    if isinstance(exc, MemoryError) or _looks_like_oom(exc):
        return JobError(
            "out_of_memory",
            "the model or batch did not fit in memory; lower batch_size or the layer sizes",
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
