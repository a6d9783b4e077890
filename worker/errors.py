"""Failures a job can end with. ``code`` is stable (clients branch on it); ``message`` is
for people."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "invalid_data",
    "nan_loss",
    "out_of_memory",
    # Past the worker's per-job memory ceiling (NETKILN_JOB_MEMORY_LIMIT_MB).
    "resource_limit",
    "timeout",
    "worker_lost",
    # The pool process died running the job (a crash in the backend) in every attempt.
    "worker_crashed",
    # A built-in dataset neither in the worker's Keras cache nor downloadable from it.
    "dataset_unavailable",
    # The artifact store refused or did not answer for NETKILN_STORE_RETRY_SECONDS while
    # the job read its inputs or wrote a checkpoint or its model.
    "storage_unavailable",
    # The job asks for more devices (resources.gpus) than the worker process that took it
    # has: a worker advertising GPUs it does not have.
    "resources_unavailable",
    "internal",
]


class JobError(Exception):
    def __init__(self, code: ErrorCode, message: str) -> None:
        super().__init__(message)
        self.code: ErrorCode = code
        self.message = message

    #: Infrastructure failures are worth another attempt; bad specs and data are not.
    @property
    def retryable(self) -> bool:
        return self.code in {"worker_lost"}
