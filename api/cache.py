"""Short-lived, per-process memory of the hottest reads: which tenant an API key belongs
to, and job status documents. Clients poll a running job about once a second, and its
worker writes progress at most once a second too, so answering a poll from a copy at most
``NETKILN_READ_CACHE_SECONDS`` old loses nothing while sparing the database (and the
thread pool) almost every query. A finished job never changes: its document is kept for
longer. ``0`` turns the cache off."""

from __future__ import annotations

import threading
import uuid
from dataclasses import dataclass

from cachetools import TLRUCache, TTLCache

from models.tenancy import Caller

#: How long a finished job's document is kept: it cannot change any more.
FINISHED_JOB_SECONDS = 60.0
MAX_ENTRIES = 10_000


@dataclass(frozen=True)
class JobDocument:
    tenant: str
    body: bytes
    finished: bool


class ReadCache:
    def __init__(self, seconds: float) -> None:
        self.enabled = seconds > 0
        self._seconds = seconds
        self._lock = threading.Lock()  # cachetools caches are not thread-safe
        self._callers: TTLCache[str, Caller] = TTLCache(MAX_ENTRIES, ttl=seconds or 1)
        self._jobs: TLRUCache[uuid.UUID, JobDocument] = TLRUCache(MAX_ENTRIES, ttu=self._expiry)

    def _expiry(self, _: uuid.UUID, document: JobDocument, now: float) -> float:
        return now + (FINISHED_JOB_SECONDS if document.finished else self._seconds)

    def caller(self, key_hash: str) -> Caller | None:
        if not self.enabled:
            return None
        with self._lock:
            return self._callers.get(key_hash)

    def remember_caller(self, key_hash: str, caller: Caller) -> None:
        if self.enabled:
            with self._lock:
                self._callers[key_hash] = caller

    def job(self, job_id: uuid.UUID) -> JobDocument | None:
        if not self.enabled:
            return None
        with self._lock:
            return self._jobs.get(job_id)

    def remember_job(self, job_id: uuid.UUID, document: JobDocument) -> None:
        if self.enabled:
            with self._lock:
                self._jobs[job_id] = document

    def forget_job(self, job_id: uuid.UUID) -> None:
        """After this process changed the job (cancel): the next read sees the change."""
        with self._lock:
            self._jobs.pop(job_id, None)
