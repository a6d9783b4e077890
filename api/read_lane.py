"""The threads the API's polled database reads run in: the job listing, a job's status
document, the shared event-stream polls.

Each read leaves the event loop for a thread, so that the loop never waits on the database.
Many such threads at once cost far more than they win: a thread gives up the GIL around
every row SQLite steps and every round trip psycopg waits on, and takes it back in a queue
of the others. Eight threads running the query of a 50-job listing spent 2.1 ms of CPU
per query where one thread spent 0.4 ms, and one API process served 220 listings a second
instead of 620, on SQLite; on PostgreSQL, whose rows come in one round trip, the lane left
the rate as it was and halved the p99 (55 → 24 ms) (``bench/README.md``, (d)). These
reads therefore queue for a lane of their own, ``NETKILN_API_READ_THREADS`` threads (1):
they run as serially as the GIL lets them run anyway, and waiting is free in the event
loop. Other routes (submits, uploads, downloads, curves) keep Starlette's shared pool, so
a slow one never holds up the polls.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Hashable
from typing import Any, ParamSpec, TypeVar

import anyio
import anyio.to_thread

P = ParamSpec("P")
T = TypeVar("T")


class ReadLane:
    def __init__(self, threads: int) -> None:
        self.threads = threads
        # Made outside an event loop (the app is built before uvicorn runs it): anyio
        # binds the limiter to the loop on first use.
        self._limiter = anyio.CapacityLimiter(threads)
        self._pending: dict[Hashable, asyncio.Future[Any]] = {}

    async def run(self, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """``read(*args, **kwargs)`` in one of the lane's threads, once one is free."""
        return await anyio.to_thread.run_sync(
            functools.partial(read, *args, **kwargs), limiter=self._limiter
        )

    async def shared(
        self, key: Hashable, read: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        """Like :meth:`run`, but calls with equal ``key`` made while one runs share its
        result (or error). For reads that fill a cache: when an entry expires under load,
        every request in flight misses it at once, and queueing each for a thread of its
        own — to find what the first one filled — made the slowest of them wait for all
        the others' thread hops (p99 0.37 s at 32 connections)."""
        pending = self._pending.get(key)
        if pending is None:
            pending = asyncio.ensure_future(self.run(read, *args, **kwargs))
            self._pending[key] = pending
            pending.add_done_callback(lambda _: self._pending.pop(key, None))
        # A caller that goes away (its client disconnected) leaves the read to the others.
        return await asyncio.shield(pending)

    @property
    def busy(self) -> int:
        """Reads running now (at most ``threads``)."""
        return self._limiter.statistics().borrowed_tokens

    @property
    def waiting(self) -> int:
        """Reads waiting for a thread."""
        return self._limiter.statistics().tasks_waiting
