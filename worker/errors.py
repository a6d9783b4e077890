"""Failures a job can end with. ``code`` is stable (clients branch on it); ``message`` is
for people."""

from __future__ import annotations

from typing import Literal

ErrorCode = Literal[
    "invalid_data", "nan_loss", "out_of_memory", "timeout", "worker_lost", "internal"
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
