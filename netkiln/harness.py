"""Start a local netkiln stack as real processes: ``netkiln api`` and ``netkiln worker`` (or
``netkiln up``), each in a session of its own, with a private Keras cache and the
``NETKILN_*`` settings the caller chooses, then wait for it, talk to it and stop it.

The end-to-end tests (``tests/e2e``) and the benchmarks (``bench/``) both start netkiln
through this module, so what a benchmark measures is what the tests check. It imports
neither TensorFlow nor the tests; the database helpers import SQLAlchemy when called.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx

TERMINAL = frozenset({"succeeded", "failed", "cancelled"})
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


class HarnessError(RuntimeError):
    """The stack did not do what was waited for; the message carries the logs' tails."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def process_env(keras_home: Path, settings: Mapping[str, str]) -> dict[str, str]:
    """The environment of every process of a stack: the caller's, without its ``NETKILN_*``
    (so only ``settings`` configure netkiln), with ``KERAS_HOME`` pointing at a cache of the
    caller's making, so no dataset is downloaded."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("NETKILN_")}
    env.update(KERAS_HOME=str(keras_home), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    env.update(settings)
    return env


# --- processes ---------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcessStat:
    pid: int
    ppid: int
    cpu_s: float


def session_processes(sid: int) -> list[ProcessStat]:
    """The live (not zombie) processes of session ``sid``: a started command and all it
    forked, such as the worker's pool processes or uvicorn's workers. Linux only."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may hold spaces and parentheses: the fields start after the last ")".
        fields = raw[raw.rfind(")") + 2 :].split()
        if int(fields[3]) == sid and fields[0] != "Z":
            cpu_s = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS
            found.append(ProcessStat(int(entry.name), int(fields[1]), cpu_s))
    return found


@dataclass
class Process:
    """A ``netkiln`` command started in a new session, so that stopping it reaches what it
    forked too; its output goes to ``log``."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def poll(self) -> int | None:
        return self.popen.poll()

    def tail(self, chars: int = 4000) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.log.name}\n{text[-chars:]}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 60) -> None:
        """Send ``sig`` to the whole session and wait until none of it is left (SIGKILL for
        what outlives ``timeout``)."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.pid, sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.pid, signal.SIGKILL)
                self.popen.wait()
        # Pool processes exit after their parent: wait for them, so that the next process
        # started on this data directory or port does not meet them.
        deadline = time.monotonic() + timeout
        while session_processes(self.pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        for leftover in session_processes(self.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(leftover.pid, signal.SIGKILL)


def spawn(args: list[str], env: Mapping[str, str], log: Path) -> Process:
    """``netkiln <args>`` in a new session, appending its output to ``log``."""
    return spawn_command([sys.executable, "-m", "netkiln", *args], env, log)


def spawn_command(command: list[str], env: Mapping[str, str], log: Path) -> Process:
    """Any program in a new session, appending its output to ``log``."""
    with log.open("ab") as handle:
        popen = subprocess.Popen(
            command,
            env=dict(env),
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Process(log.stem, popen, log)


def wait_ready(base_url: str, api: Process, timeout: float = 120) -> None:
    """Until ``/readyz`` answers 200; fails at once if the API process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        if api.poll() is not None:
            break
        time.sleep(0.2)
    raise HarnessError(f"{api.name} did not become ready at {base_url}:\n{api.tail()}")


def wait_for_job(
    client: httpx.Client,
    job_id: str,
    *,
    timeout: float = 300,
    poll: float = 0.3,
    until: frozenset[str] = TERMINAL,
) -> dict[str, Any]:
    """The job's status document once its status is one of ``until``."""
    deadline = time.monotonic() + timeout
    while True:
        job: dict[str, Any] = client.get(f"/v1/jobs/{job_id}").json()
        if job["status"] in until:
            return job
        if time.monotonic() > deadline:
            raise HarnessError(f"job {job_id} still {job['status']} after {timeout:g} s")
        time.sleep(poll)


# --- a stack -----------------------------------------------------------------------------


class Stack:
    """``netkiln api`` and ``netkiln worker`` sharing one environment, on one port. The
    processes are named ``api`` and ``worker``; each logs to ``<logs>/<name>.log``."""

    def __init__(
        self,
        env: Mapping[str, str],
        logs: Path,
        *,
        base_url: str | None = None,
        processes: dict[str, Process] | None = None,
    ) -> None:
        self.env = dict(env)
        self.logs = logs
        self.base_url = base_url or f"http://127.0.0.1:{free_port()}"
        self.processes = processes if processes is not None else {}

    @property
    def port(self) -> int:
        return int(self.base_url.rsplit(":", 1)[1])

    def start(self, *, worker: bool = True, timeout: float = 120) -> None:
        """The API and (unless ``worker`` is false) a worker; returns once the API is
        ready. Both start at once: the worker's TensorFlow import overlaps the API's."""
        self.spawn_api()
        if worker:
            self.start_worker()
        try:
            self.wait_ready(timeout)
        except HarnessError:
            self.stop()
            raise

    def spawn_api(self, workers: int = 1) -> Process:
        """``netkiln api`` (one uvicorn process, the default) or ``--workers N`` (N
        processes sharing the port); not yet ready."""
        args = ["api", "--port", str(self.port)]
        if workers > 1:
            args += ["--workers", str(workers)]
        process = spawn(args, self.env, self.logs / "api.log")
        self.processes["api"] = process
        return process

    def start_api(self, workers: int = 1, timeout: float = 120) -> Process:
        process = self.spawn_api(workers)
        self.wait_ready(timeout)
        return process

    def restart_api(self, timeout: float = 120) -> None:
        self.processes["api"].stop()
        self.start_api(timeout=timeout)

    def start_worker(self, name: str = "worker", **settings: str) -> Process:
        """A worker named ``name``; ``settings`` (``NETKILN_*``) override the stack's for
        it alone, e.g. a data folder of its own, as a worker on another host has."""
        process = spawn(["worker"], {**self.env, **settings}, self.logs / f"{name}.log")
        self.processes[name] = process
        return process

    def wait_ready(self, timeout: float = 120) -> None:
        wait_ready(self.base_url, self.processes["api"], timeout)

    def client(self, api_key: str | None = None, timeout: float = 30) -> httpx.Client:
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        return httpx.Client(base_url=self.base_url, timeout=timeout, headers=headers)

    def tail(self) -> str:
        return "\n".join(
            f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}"
            for path in sorted(self.logs.glob("*.log"))
        )

    def stop(self) -> None:
        """Every process, the last started first."""
        for process in reversed(list(self.processes.values())):
            process.stop()

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()


class Up(NamedTuple):
    process: Process
    base_url: str
    api_key: str


def start_up(data_dir: Path, env: Mapping[str, str], log: Path, timeout: float = 120) -> Up:
    """``netkiln up`` (the API with a worker beside it; by default the embedded database and
    broker) on a free port, once ready, with the key it made on its first start, as a user
    would take it."""
    port = free_port()
    process = spawn(["up", "--data-dir", str(data_dir), "--port", str(port)], env, log)
    base_url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base_url, process, timeout)
    except HarnessError:
        process.stop()
        raise
    return Up(process, base_url, (data_dir / "api-key").read_text().strip())


# --- storage -----------------------------------------------------------------------------


def create_api_key(database_url: str, tenant: str = "default", name: str = "harness") -> str:
    """A new key of ``tenant``, made as ``netkiln keys create`` makes it."""
    from models.db import transaction
    from models.tenancy import create_key

    with transaction(database_url) as session:
        _, key = create_key(session, tenant, name=name)
    return key


def create_database(admin_url: str, prefix: str) -> str:
    """A new, empty PostgreSQL database named ``<prefix>_<hex>``; its URL. ``admin_url``
    names a database of the same server whose user may ``CREATE DATABASE``."""
    from sqlalchemy.engine import make_url

    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    _as_admin(admin_url, f'CREATE DATABASE "{name}"')
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def drop_database(admin_url: str, url: str) -> None:
    """Drop the database of ``url``, ending the sessions still connected to it."""
    from sqlalchemy.engine import make_url

    _as_admin(admin_url, f'DROP DATABASE IF EXISTS "{make_url(url).database}" WITH (FORCE)')


def _as_admin(admin_url: str, statement: str) -> None:
    """One statement outside a transaction (as CREATE and DROP DATABASE must run)."""
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(text(statement))
    finally:
        admin.dispose()
