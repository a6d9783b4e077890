"""Engine and session factory. Callers own their transactions (``with session.begin()``)."""

from __future__ import annotations

import logging
import time
import weakref
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, TypeVar

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import InterfaceError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

log = logging.getLogger(__name__)

T = TypeVar("T")

#: What a database that restarts, fails over or drops connections raises (and SQLite's
#: "database is locked" past its busy timeout): the same statement may work again soon.
UNREACHABLE = (OperationalError, InterfaceError)

#: Every engine of this process, for :func:`forget_inherited_connections`.
_engines: weakref.WeakSet[Engine] = weakref.WeakSet()


def make_engine(url: str, **overrides: Any) -> Engine:
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if "poolclass" not in overrides:
        # Above SQLAlchemy's 5: an API process serves 8+ concurrent reads, and each read
        # past the pool's size would open (and close) a connection of its own.
        kwargs.update(pool_size=10, max_overflow=10)
    kwargs.update(overrides)
    if url.startswith("sqlite"):
        # API threads and the worker share one file: wait on locks instead of failing.
        kwargs["connect_args"] = {"check_same_thread": False, "timeout": 30}
    engine = create_engine(url, **kwargs)
    if url.startswith("sqlite"):
        event.listen(engine, "connect", _sqlite_pragmas)
    _engines.add(engine)
    return engine


def forget_inherited_connections() -> None:
    """Call first thing in a forked child (a Celery pool process): the pools it inherited
    hold the parent's connections, and a socket or SQLite handle used by two processes
    corrupts both sides. Each engine gets a fresh pool; the parent's connections are left
    open for the parent (SQLAlchemy's recipe for ``os.fork``: ``dispose(close=False)``)."""
    for engine in list(_engines):
        engine.dispose(close=False)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (status polls) proceed while the worker writes metrics.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


@lru_cache(maxsize=8)
def session_factory(url: str) -> sessionmaker[Session]:
    return sessionmaker(bind=make_engine(url), expire_on_commit=False)


@lru_cache(maxsize=8)
def reader_factory(url: str) -> sessionmaker[Session]:
    """Sessions for one-statement reads that write nothing (listings): autocommit, so a
    read costs no BEGIN and ROLLBACK round trips to the server, only its query."""
    # A pool of its own (8, +4 in bursts): with the main one's 10 (+10), an API process
    # holds at most 32 PostgreSQL connections.
    engine = make_engine(url, isolation_level="AUTOCOMMIT", pool_size=8, max_overflow=4)
    return sessionmaker(bind=engine)


@contextmanager
def transaction(url: str) -> Iterator[Session]:
    """A session in one transaction: committed on success, rolled back on error."""
    with session_factory(url)() as session, session.begin():
        yield session


def retrying(operation: Callable[[], T], seconds: float, what: str) -> T:
    """Run ``operation`` (a whole transaction), again with backoff while the database is
    unreachable, for up to ``seconds``; then its error stands. Only for operations whose
    repeat is harmless: a connection lost during COMMIT leaves it unknown whether the
    first try took effect."""
    deadline = time.monotonic() + seconds
    delay = 0.25
    while True:
        try:
            return operation()
        except UNREACHABLE as exc:
            if time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unreachable (%s); retrying in %.1f s", what, exc.orig, delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
