"""The running job's link to its row, and its watchdog: a thread that heartbeats with batch
progress about once a second, learns of cancellation, time-outs and lost ownership, and
watches the process's memory. The training loop asks it, after every batch, whether to stop.

Not every phase of a job has batches: building the model, loading data and evaluating run
in the backend's native code, where no callback can interrupt them. So a stop the loop does
not honour within ``grace`` seconds (a hung build, a data load that never ends) is carried
out by the thread itself: it records the outcome on the row and ends the process, which the
worker replaces. A job past its memory ceiling is ended at once, before it can take the
machine down with it.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from dataclasses import dataclass
from typing import Literal

from worker.errors import JobError
from worker.jobstore import JobStore, LostOwnership

log = logging.getLogger(__name__)

StopReason = Literal["cancelled", "timeout", "memory", "lost"]


class JobCancelled(Exception):
    """A user cancelled the job; it ends ``cancelled`` with its checkpoint and metrics."""


@dataclass
class Progress:
    """Written by the training loop (cheap attribute sets), read by the control thread."""

    epoch: int = 0
    batch: int = 0
    steps: int = 0


def resident_bytes() -> int:
    """This process's resident memory now (not its peak)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class Control(threading.Thread):
    def __init__(
        self,
        store: JobStore,
        interval: float,
        max_runtime: float | None,
        *,
        memory_limit: int | None = None,
        grace: float = 10.0,
    ) -> None:
        super().__init__(name=f"control-{store.job_id}", daemon=True)
        self.store = store
        self.interval = interval
        self.max_runtime = max_runtime
        self.memory_limit = memory_limit
        self.grace = grace
        self.progress = Progress()
        self.stop_reason: StopReason | None = None
        self._began = time.monotonic()
        self._stop_seen_at: float | None = None
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.check()
            if self.stop_reason == "lost":
                return
            self._enforce()

    def check(self) -> None:
        if self.memory_limit is not None and resident_bytes() > self.memory_limit:
            self.stop_reason = "memory"
        try:
            cancel = self.store.tick(self.progress.epoch, self.progress.batch, self.progress.steps)
        except LostOwnership:
            self.stop_reason = "lost"
            return
        except Exception:  # a DB blip: the next tick may get through
            log.warning("job %s: heartbeat failed", self.store.job_id, exc_info=True)
            return
        if self.stop_reason is not None:
            return
        if cancel:
            self.stop_reason = "cancelled"
        elif self.max_runtime is not None and self.elapsed > self.max_runtime:
            self.stop_reason = "timeout"

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self._began

    def raise_if_stopping(self) -> None:
        if self.stop_reason == "lost":
            raise LostOwnership(self.store.job_id)
        if self.stop_reason == "cancelled":
            raise JobCancelled()
        if self.stop_reason is not None:
            raise self.failure()

    def failure(self) -> JobError:
        if self.stop_reason == "memory":
            limit_mb = (self.memory_limit or 0) // (1024 * 1024)
            return JobError(
                "resource_limit",
                f"the job's process passed the worker's memory ceiling of {limit_mb} MB "
                "(NETKILN_JOB_MEMORY_LIMIT_MB); lower batch_size or the layer sizes",
            )
        return JobError(
            "timeout",
            f"stopped after {self.elapsed:.0f}s, past the spec's max_runtime of "
            f"{self.max_runtime or 0:g}s",
        )

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=self.interval + 5)

    def _enforce(self) -> None:
        """End the process once a stop is overdue; a memory stop is never waited out."""
        if self.stop_reason is None or self._stopped.is_set():
            return
        now = time.monotonic()
        if self._stop_seen_at is None:
            self._stop_seen_at = now
        if self.stop_reason != "memory" and now - self._stop_seen_at < self.grace:
            return
        try:
            if self.stop_reason == "cancelled":
                self.store.cancel()
            else:
                self.store.fail(self.failure())
        except LostOwnership:
            pass
        log.error(
            "job %s: %s, and the job did not stop by itself; ending its process",
            self.store.job_id,
            self.stop_reason,
        )
        _kill_this_process()


def _kill_this_process() -> None:
    # SIGKILL, not an exception: the main thread may be inside native code that never
    # returns. The worker forks a fresh pool process; the job's row already says how it
    # ended, so neither the reconciler nor a redelivered message runs it again.
    os.kill(os.getpid(), signal.SIGKILL)
