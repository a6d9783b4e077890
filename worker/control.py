"""The running job's link to its row: a thread that heartbeats with batch progress about
once a second and learns of cancellation, time-outs and lost ownership; the training loop
asks it, after every batch, whether to stop."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Literal

from worker.errors import JobError
from worker.jobstore import JobStore, LostOwnership

log = logging.getLogger(__name__)

StopReason = Literal["cancelled", "timeout", "lost"]


class JobCancelled(Exception):
    """A user cancelled the job; it ends ``cancelled`` with its checkpoint and metrics."""


@dataclass
class Progress:
    """Written by the training loop (cheap attribute sets), read by the control thread."""

    epoch: int = 0
    batch: int = 0
    steps: int = 0


class Control(threading.Thread):
    def __init__(self, store: JobStore, interval: float, max_runtime: float | None) -> None:
        super().__init__(name=f"control-{store.job_id}", daemon=True)
        self.store = store
        self.interval = interval
        self.max_runtime = max_runtime
        self.progress = Progress()
        self.stop_reason: StopReason | None = None
        self._began = time.monotonic()
        self._stopped = threading.Event()

    def run(self) -> None:
        while not self._stopped.wait(self.interval):
            self.check()
            if self.stop_reason == "lost":
                return

    def check(self) -> None:
        try:
            cancel = self.store.tick(self.progress.epoch, self.progress.batch, self.progress.steps)
        except LostOwnership:
            self.stop_reason = "lost"
            return
        except Exception:  # a DB blip: the next tick may get through
            log.warning("job %s: heartbeat failed", self.store.job_id, exc_info=True)
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
        if self.stop_reason == "timeout":
            raise JobError(
                "timeout",
                f"stopped after {self.elapsed:.0f}s, past the spec's max_runtime of "
                f"{self.max_runtime:g}s",
            )

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=self.interval + 5)
