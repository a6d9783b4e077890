"""Real processes: ``netkiln api`` (uvicorn) and ``netkiln worker`` (Celery) per backend,
started by ``netkiln.harness``, as the benchmarks start them.

Deadlines here and in the tests are generous and only bound a hang: CI shares two cores
with other work, so a test waits for what it needs to see, however long a batch takes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from netkiln.client import parse_sse
from netkiln.harness import (
    TERMINAL,
    HarnessError,
    Process,
    Stack,
    create_api_key,
    free_port,
    process_env,
    wait_for_job,
)
from tests.conftest import Backend

__all__ = ["Service", "free_port", "parse_sse"]

#: How long a test waits for a job, a worker or a page before it calls it a hang.
PATIENCE = 300.0

#: The most epochs a spec may ask for: more than any machine trains before a test has seen
#: what it waits for and ended the job, so that no test depends on how fast the CPU is.
UNENDING = 10_000

#: Fast failure detection, so the worker-death tests take seconds, not minutes.
FAST_RECOVERY = {
    "NETKILN_HEARTBEAT_INTERVAL": "0.5",
    "NETKILN_HEARTBEAT_TIMEOUT": "8",
    "NETKILN_RECONCILE_INTERVAL": "1",
    "NETKILN_REDISPATCH_AFTER": "3",
}


class Service(Stack):
    """A stack on one test backend, with a key of tenant ``default`` made on first use
    (the tenant of the rows tests insert directly)."""

    def __init__(
        self,
        backend: Backend,
        base_url: str | None,
        env: dict[str, str],
        logs: Path,
        processes: dict[str, Process] | None = None,
    ) -> None:
        super().__init__(env, logs, base_url=base_url, processes=processes)
        self.backend = backend
        self._api_key: str | None = None

    @property
    def api_key(self) -> str:
        if self._api_key is None:
            self._api_key = create_api_key(self.backend.settings().resolved_database_url)
        return self._api_key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self, api_key: str | None = None, timeout: float = 30) -> httpx.Client:
        """A client of the API, with this service's key or the given one."""
        return super().client(api_key or self.api_key, timeout)

    def wait_for(
        self, job_id: str, *, timeout: float = PATIENCE, until: frozenset[str] = TERMINAL
    ) -> Any:
        with self.client() as client:
            try:
                return wait_for_job(client, job_id, timeout=timeout, until=until)
            except HarnessError as exc:
                raise AssertionError(f"{exc}:\n{self.tail()}") from None


@pytest.fixture(scope="module")
def service(
    backend: Backend, keras_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    env = process_env(keras_home, {**backend.env, **FAST_RECOVERY})
    logs = tmp_path_factory.mktemp(f"logs-{backend.name}")
    svc = Service(backend, None, env, logs)
    svc.start()
    yield svc
    svc.stop()
