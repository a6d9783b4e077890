"""Event streams share one database poll per job and API process.

Each ``GET /v1/jobs/{id}/events`` used to poll ``job_events`` on its own, twice a second, so
a few hundred open streams (a dashboard, a CLI ``--follow`` per job) kept the thread pool
and the database busy and slowed every other request. Here the first stream of a job starts
a *feed*: one task that polls the job's new events and hands each batch to every stream
following the job, and ends when the job has ended and its last events went out, or when
its last stream closed.

A stream that joins later reads only its own backlog (the events between the id it resumes
after and the feed's position when it joined), then takes the feed's batches; ids are
filtered per stream, so nothing is sent twice or skipped.
"""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from api.read_lane import ReadLane
from models.db import session_factory
from models.tables import Job, JobEvent, JobStatus

#: Events one query reads at most.
PAGE = 500


@dataclass(frozen=True)
class Event:
    id: int
    kind: str
    data: str  # JSON


@dataclass(frozen=True)
class Batch:
    events: list[Event]
    #: The job has ended and every event it will have is in this batch or earlier ones.
    ended: bool


@dataclass
class _Feed:
    cursor: int
    followers: set[asyncio.Queue[Batch]] = field(default_factory=set)
    task: asyncio.Task[None] | None = None


class EventFeeds:
    def __init__(self, database_url: str, lane: ReadLane, poll_seconds: float = 0.5) -> None:
        self._factory = session_factory(database_url)
        self._lane = lane
        self.poll_seconds = poll_seconds
        self._feeds: dict[uuid.UUID, _Feed] = {}

    @property
    def active(self) -> int:
        """Jobs being polled now (one feed each, however many streams follow them)."""
        return len(self._feeds)

    def followers(self, job_id: uuid.UUID) -> int:
        feed = self._feeds.get(job_id)
        return len(feed.followers) if feed else 0

    async def follow(self, job_id: uuid.UUID, after: int) -> AsyncIterator[Batch]:
        """The job's events after ``after``, batch by batch, until it has ended."""
        queue: asyncio.Queue[Batch] = asyncio.Queue()
        feed = self._feeds.get(job_id)
        if feed is None:
            feed = self._feeds[job_id] = _Feed(cursor=after)
            feed.task = asyncio.create_task(self._poll(job_id, feed))
        # Joined with no await in between: every batch the feed sends from here on holds
        # only ids past ``joined_at``.
        feed.followers.add(queue)
        joined_at = feed.cursor
        last = after
        try:
            while last < joined_at:
                backlog = await self._lane.run(self._read, job_id, last, joined_at)
                if not backlog:
                    break
                yield Batch(backlog, ended=False)
                last = backlog[-1].id
            last = max(last, joined_at)
            while True:
                batch = await queue.get()
                fresh = [event for event in batch.events if event.id > last]
                if fresh:
                    last = fresh[-1].id
                # Empty batches too: each is a moment for the stream to check its caller.
                yield Batch(fresh, batch.ended)
                if batch.ended:
                    return
        finally:
            feed.followers.discard(queue)
            if not feed.followers and self._feeds.get(job_id) is feed:
                del self._feeds[job_id]
                if feed.task is not None:
                    feed.task.cancel()

    async def _poll(self, job_id: uuid.UUID, feed: _Feed) -> None:
        while True:
            events, ended = await self._lane.run(self._read_new, job_id, feed.cursor)
            if events:
                feed.cursor = events[-1].id
            batch = Batch(events, ended=ended and len(events) < PAGE)
            for queue in feed.followers:
                queue.put_nowait(batch)
            if batch.ended:
                if self._feeds.get(job_id) is feed:
                    del self._feeds[job_id]
                return
            if len(events) < PAGE:
                await asyncio.sleep(self.poll_seconds)

    def _read_new(self, job_id: uuid.UUID, after: int) -> tuple[list[Event], bool]:
        """New events, and whether the job had ended before they were read (so none can
        follow them)."""
        with self._factory() as session:
            status = session.scalar(select(Job.status).where(Job.id == job_id))
            ended = status is None or JobStatus(status).is_terminal
            return self._events(session, job_id, after, None), ended

    def _read(self, job_id: uuid.UUID, after: int, until: int) -> list[Event]:
        with self._factory() as session:
            return self._events(session, job_id, after, until)

    @staticmethod
    def _events(session: Session, job_id: uuid.UUID, after: int, until: int | None) -> list[Event]:
        query = select(JobEvent).where(JobEvent.job_id == job_id, JobEvent.id > after)
        if until is not None:
            query = query.where(JobEvent.id <= until)
        rows = session.scalars(query.order_by(JobEvent.id).limit(PAGE))
        return [Event(row.id, row.kind, json.dumps(row.data)) for row in rows]
