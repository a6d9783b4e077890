"""Real processes: ``netkiln api`` (uvicorn) and ``netkiln worker`` (Celery) per backend."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from netkiln.client import parse_sse
from tests.conftest import Backend, new_api_key

__all__ = ["Service", "parse_sse"]

TERMINAL = {"succeeded", "failed", "cancelled"}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Service:
    backend: Backend
    base_url: str
    env: dict[str, str]
    logs: Path
    processes: dict[str, subprocess.Popen[bytes]]
    #: A key of tenant ``default``, made on first use.
    _api_key: str | None = None

    @property
    def api_key(self) -> str:
        if self._api_key is None:
            self._api_key = new_api_key(self.backend.settings().resolved_database_url)
        return self._api_key

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def client(self, api_key: str | None = None) -> httpx.Client:
        """A client of the API, with this service's key or the given one."""
        key = api_key or self.api_key
        return httpx.Client(
            base_url=self.base_url, timeout=30, headers={"Authorization": f"Bearer {key}"}
        )

    def restart_api(self) -> None:
        stop(self.processes["api"])
        port = self.base_url.rsplit(":", 1)[1]
        self.processes["api"] = _spawn(["api", "--port", port], self.env, self.logs / "api.log")
        wait_ready(self)

    def start_worker(self) -> subprocess.Popen[bytes]:
        process = _spawn(["worker"], self.env, self.logs / "worker.log")
        self.processes["worker"] = process
        return process

    def wait_for(self, job_id: str, *, timeout: float = 180, until: set[str] = TERMINAL) -> Any:
        deadline = time.monotonic() + timeout
        with self.client() as client:
            while time.monotonic() < deadline:
                job = client.get(f"/v1/jobs/{job_id}").json()
                if job["status"] in until:
                    return job
                time.sleep(0.3)
        raise AssertionError(f"job {job_id} still {job['status']} after {timeout}s:\n{self.tail()}")

    def tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )


def wait_ready(service: Service, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{service.base_url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or service.processes["api"].poll() is not None:
            pytest.fail(f"API did not become ready:\n{service.tail()}")
        time.sleep(0.3)


def _spawn(args: list[str], env: dict[str, str], log_path: Path) -> subprocess.Popen[bytes]:
    log = log_path.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "netkiln", *args],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # so stop() can signal the worker's pool children too
    )


def stop(process: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
    if process.poll() is None:
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()


@pytest.fixture(scope="module")
def service(
    backend: Backend, keras_home: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Service]:
    port = free_port()
    env = {
        **os.environ,
        **backend.env,
        "KERAS_HOME": str(keras_home),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        # Fast failure detection, so the worker-death test takes seconds, not minutes.
        "NETKILN_HEARTBEAT_INTERVAL": "0.5",
        "NETKILN_HEARTBEAT_TIMEOUT": "8",
        "NETKILN_RECONCILE_INTERVAL": "1",
        "NETKILN_REDISPATCH_AFTER": "3",
    }
    logs = tmp_path_factory.mktemp(f"logs-{backend.name}")
    processes = {
        "api": _spawn(["api", "--port", str(port)], env, logs / "api.log"),
        "worker": _spawn(["worker"], env, logs / "worker.log"),
    }
    svc = Service(backend, f"http://127.0.0.1:{port}", env, logs, processes)
    wait_ready(svc)
    yield svc
    for process in svc.processes.values():
        stop(process)
