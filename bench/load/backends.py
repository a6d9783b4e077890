"""What each backend's run starts from: a new data directory and Keras cache, and for
``postgres`` a new database and an empty Redis db, all removed or emptied at the end."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load.base import BenchError
from netkiln.harness import create_database, drop_database, process_env

REDIS_DB_URL = "redis://127.0.0.1:6379/{}"
#: Highest first, so 15 and 14 unless in use: the tests count down from 13, two dbs per
#: pytest-xdist worker (tests/conftest.py).
REDIS_DBS = [n for n in range(15, 0, -1) if n != 13]


@dataclass
class Backend:
    name: str
    root: Path
    env: dict[str, str]
    database_url: str
    cleanup: list[Callable[[], None]] = field(default_factory=list)

    def close(self) -> None:
        for action in reversed(self.cleanup):
            try:
                action()
            except Exception as exc:
                print(f"  cleanup of {self.name} failed: {type(exc).__name__}: {exc}")


def make_backend(name: str, root: Path, args: Any) -> Backend:
    """``embedded`` (SQLite + filesystem broker in the data dir) or ``postgres``."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    keras_home = root / "keras_home"  # empty: the digits come with scikit-learn
    keras_home.mkdir()
    settings = {
        "NETKILN_DATA_DIR": str(data_dir),
        "NETKILN_READ_CACHE_SECONDS": str(args.read_cache_seconds),
    }
    if name == "embedded":
        env = process_env(keras_home, settings)
        return Backend(name, root, env, f"sqlite:///{data_dir / 'netkiln.db'}")

    redis_url, flush = _empty_redis_db(args.redis_url)
    try:
        url = create_database(args.postgres_url, "netkiln_bench")
    except Exception as exc:
        flush()
        raise BenchError(f"PostgreSQL at {args.postgres_url}: {exc}") from exc

    def drop() -> None:
        drop_database(args.postgres_url, url)

    settings.update(NETKILN_DATABASE_URL=url, NETKILN_BROKER_URL=redis_url)
    return Backend(name, root, process_env(keras_home, settings), url, cleanup=[drop, flush])


def _empty_redis_db(explicit: str | None) -> tuple[str, Callable[[], None]]:
    """An explicit ``--redis-url`` must be an empty db; by default the highest empty one of
    15..1. Either way it is flushed afterwards, by the function returned with it."""
    import redis

    candidates = [explicit] if explicit else [REDIS_DB_URL.format(n) for n in REDIS_DBS]
    for candidate in candidates:
        client = redis.Redis.from_url(candidate, socket_connect_timeout=2)
        try:
            keys = client.dbsize()
        except Exception as exc:
            raise BenchError(f"Redis at {candidate}: {type(exc).__name__}: {exc}") from exc
        if not keys:

            def flush(client: redis.Redis = client) -> None:
                client.flushdb()
                client.close()

            return candidate, flush
        client.close()
    raise BenchError(f"no empty Redis db among {', '.join(candidates)} (pass --redis-url)")
