"""How fast does netkiln's API answer, and does its worker's memory grow?

In one run, per backend (the embedded default, SQLite + filesystem broker, and PostgreSQL +
Redis), against real processes started the way the product starts them:

(c) worker RSS: ``netkiln api`` + ``netkiln worker``; ``--jobs`` (100) small ``digits`` MLP
    jobs, one epoch each, POSTed one after another, each awaited; the RSS of the Celery pool
    process(es) that train is sampled after job 1, 10, 50 and 100.
(a) status reads: the worker is stopped, then ``GET /v1/jobs/{id}`` of the last succeeded job
    is driven by a load generator in its own process (``wrk``, else a Python asyncio client)
    at each of ``--connections`` (1, 8, 32) for ``--duration`` (10 s) seconds.
(b) submits: with no worker running (jobs only queue), ``--posts`` (200) sequential
    ``POST /v1/jobs`` of the same small spec.
(a') the same status reads against ``netkiln api --workers 2`` (two uvicorn processes).

Every request sends an API key that the bench creates with ``netkiln keys create`` after
migrating (the API's default is ``NETKILN_AUTH=keys``). ``--only rss`` runs phase (c) alone.

Run from anywhere: ``.venv/bin/python bench/api_load.py [--backend both] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
TERMINAL = {"succeeded", "failed", "cancelled"}

REDIS_DB_URL = "redis://127.0.0.1:6379/{}"
REDIS_DBS = [n for n in range(15, 0, -1) if n != 13]

TARGET_GET_RPS = 1500.0
TARGET_GET_P99_MS = 10.0
TARGET_RSS_GROWTH_MB = 50.0

#: tests/e2e/test_train.py's DIGITS_SPEC, one epoch: scikit-learn's bundled 8×8 digits,
#: nothing to download.
DIGITS_SPEC: dict[str, Any] = {
    "name": "bench-digits",
    "seed": 7,
    "dataset": {"name": "digits", "preprocessing": "standardize"},
    "model": {
        "input_shape": [8, 8],
        "layers": [
            {"type": "Flatten"},
            {"type": "Dense", "units": 32, "activation": "elu", "kernel_initializer": "he_normal"},
            {"type": "BatchNormalization"},
            {"type": "Dropout", "rate": 0.1},
            {"type": "Dense", "units": 10, "activation": "softmax"},
        ],
    },
    "compile": {
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "SGD", "learning_rate": 0.05, "momentum": 0.9, "nesterov": True},
    },
    "fit": {"epochs": 1, "batch_size": 32, "validation_split": 0.1},
}

#: Prints wrk's result as one JSON line (times in microseconds).
WRK_SCRIPT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %.0f, "duration_us": %.0f, "bytes": %.0f, "connect": %.0f, ' ..
    '"read": %.0f, "write": %.0f, "status": %.0f, "timeout": %.0f, "p50_us": %.1f, ' ..
    '"p90_us": %.1f, "p99_us": %.1f, "max_us": %.1f, "mean_us": %.1f}\n',
    summary.requests, summary.duration, summary.bytes, e.connect, e.read, e.write, e.status,
    e.timeout, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean))
end
"""


class BenchError(Exception):
    """A phase could not run (the message says why, with logs)."""


# --------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def machine_busy_s() -> float:
    """CPU seconds spent non-idle by the whole machine since boot (all cores)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    return (sum(values) - values[3] - values[4]) / CLOCK_TICKS


def children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def tree(pid: int) -> list[Any]:
    """psutil processes: ``pid`` and all its descendants that are alive."""
    import psutil

    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu_s(pid: int) -> float:
    import psutil

    total = 0.0
    for proc in tree(pid):
        with contextlib.suppress(psutil.Error):
            times = proc.cpu_times()
            total += times.user + times.system
    return total


def other_bench_processes() -> list[str]:
    """netkiln / plain_keras processes on this machine that this run did not start."""
    import psutil

    mine = {proc.pid for proc in tree(os.getpid())}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        argv = proc.info["cmdline"] or []
        cmdline = " ".join(argv)
        if proc.info["pid"] in mine or "api_load.py" in cmdline:
            continue
        if not argv or not Path(argv[0]).name.startswith(("python", "netkiln")):
            continue  # a shell or grep that merely mentions the name
        if "netkiln" in cmdline or "plain_keras" in cmdline:
            found.append(f"{proc.info['pid']}: {cmdline[:120]}")
    return found


@dataclass
class Started:
    """A process this bench started in its own session (so its children die with it)."""

    name: str
    process: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self) -> str:
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return f"--- {self.log.name}\n{text[-4000:]}"

    def stop(self) -> None:
        if self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        # Pool children share the session: wait until they are gone too.
        deadline = time.monotonic() + 30
        while _session_alive(self.process.pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            if _session_alive(self.process.pid):
                os.killpg(self.process.pid, signal.SIGKILL)


def _session_alive(sid: int) -> bool:
    import psutil

    for proc in psutil.process_iter(["pid"]):
        with contextlib.suppress(psutil.Error, OSError):
            if os.getsid(proc.info["pid"]) == sid and proc.status() != psutil.STATUS_ZOMBIE:
                return True
    return False


def spawn(name: str, command: list[str], env: dict[str, str], logs: Path) -> Started:
    log = logs / f"{name}.log"
    with log.open("ab") as handle:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=REPO,
            stdout=handle,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Started(name, process, log)


def wait_ready(base_url: str, started: Started, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.TransportError):
            if httpx.get(f"{base_url}/readyz", timeout=2).status_code == 200:
                return
        if started.process.poll() is not None:
            break
        time.sleep(0.2)
    raise BenchError(f"{started.name} did not become ready:\n{started.tail()}")


# --------------------------------------------------------------------------- backends


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


def base_env(keras_home: Path) -> dict[str, str]:
    """The caller's environment without NETKILN_*, plus a private Keras cache."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("NETKILN_")}
    env.update(KERAS_HOME=str(keras_home), TF_CPP_MIN_LOG_LEVEL="2", PYTHONUNBUFFERED="1")
    return env


def make_backend(name: str, root: Path, args: Any) -> Backend:
    """A fresh data dir, and for ``postgres`` a fresh database and an empty Redis db."""
    data_dir = root / "data"
    data_dir.mkdir(parents=True)
    keras_home = root / "keras_home"
    keras_home.mkdir()
    env = base_env(keras_home)
    env["NETKILN_DATA_DIR"] = str(data_dir)
    env["NETKILN_READ_CACHE_SECONDS"] = str(args.read_cache_seconds)
    if name == "embedded":
        return Backend(name, root, env, f"sqlite:///{data_dir / 'netkiln.db'}")

    import redis
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    # An explicit --redis-url must be an empty db; by default the highest empty one of
    # 15..1 (13 is the tests'). Either way the bench flushes it afterwards.
    candidates = [args.redis_url] if args.redis_url else [REDIS_DB_URL.format(n) for n in REDIS_DBS]
    client, redis_url = None, ""
    for candidate in candidates:
        attempt = redis.Redis.from_url(candidate, socket_connect_timeout=2)
        try:
            keys = attempt.dbsize()
        except Exception as exc:
            raise BenchError(f"Redis at {candidate}: {type(exc).__name__}: {exc}") from exc
        if not keys:
            client, redis_url = attempt, candidate
            break
        attempt.close()
    if client is None:
        raise BenchError(f"no empty Redis db among {', '.join(candidates)} (pass --redis-url)")
    admin = create_engine(args.postgres_url, isolation_level="AUTOCOMMIT")
    database = f"netkiln_bench_{uuid.uuid4().hex[:10]}"
    try:
        with admin.connect() as connection:
            connection.execute(text(f'CREATE DATABASE "{database}"'))
    except Exception as exc:
        raise BenchError(f"PostgreSQL at {args.postgres_url}: {exc}") from exc
    url = make_url(args.postgres_url).set(database=database).render_as_string(hide_password=False)

    def drop() -> None:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()

    def flush() -> None:
        client.flushdb()
        client.close()

    env.update(NETKILN_DATABASE_URL=url, NETKILN_BROKER_URL=redis_url)
    return Backend(name, root, env, url, cleanup=[drop, flush])


def migrate(backend: Backend) -> None:
    process = subprocess.run(
        [sys.executable, "-m", "netkiln", "db", "upgrade"],
        env=backend.env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    if process.returncode != 0:
        raise BenchError(f"netkiln db upgrade failed:\n{process.stdout}{process.stderr}")


def create_api_key(backend: Backend) -> str:
    """A key of tenant ``bench``, as an operator makes one (the key is the last line)."""
    command = [sys.executable, "-m", "netkiln", "keys", "create", "--tenant", "bench"]
    process = subprocess.run(
        [*command, "--name", "api_load"], env=backend.env, cwd=REPO, capture_output=True, text=True
    )
    lines = process.stdout.split()
    if process.returncode != 0 or not lines:
        raise BenchError(f"netkiln keys create failed:\n{process.stdout}{process.stderr}")
    return lines[-1]


# --------------------------------------------------------------------------- servers


def start_api(backend: Backend, workers: int) -> tuple[Started, str]:
    """``netkiln api`` (one uvicorn process, as the product runs it by default) or, for
    ``workers`` > 1, ``netkiln api --workers N`` (N uvicorn processes on one port)."""
    port = free_port()
    command = [sys.executable, "-m", "netkiln", "api", "--port", str(port)]
    if workers == 1:
        name = "api"
    else:
        command += ["--workers", str(workers)]
        name = f"api-workers{workers}"
    started = spawn(name, command, backend.env, backend.root)
    base_url = f"http://127.0.0.1:{port}"
    wait_ready(base_url, started)
    return started, base_url


def start_worker(backend: Backend) -> Started:
    return spawn("worker", [sys.executable, "-m", "netkiln", "worker"], backend.env, backend.root)


def pool_processes(worker: Started) -> list[Any]:
    """The Celery pool processes: children of the ``netkiln worker`` main process."""
    import psutil

    try:
        return psutil.Process(worker.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def wait_until_warm(worker: Started, timeout: float = 180) -> float:
    """Seconds until a pool process has TensorFlow mapped and the worker has been idle (<10%
    of a core) for two consecutive seconds."""
    start = time.monotonic()
    quiet = 0
    previous = tree_cpu_s(worker.pid)
    while time.monotonic() - start < timeout:
        time.sleep(1.0)
        if worker.process.poll() is not None:
            raise BenchError(f"worker exited ({worker.process.returncode}):\n{worker.tail()}")
        total = tree_cpu_s(worker.pid)
        busy, previous = total - previous, total
        loaded = False
        for proc in pool_processes(worker):
            with contextlib.suppress(OSError):
                loaded = loaded or "libtensorflow" in Path(f"/proc/{proc.pid}/maps").read_text()
        quiet = quiet + 1 if loaded and busy < 0.1 else 0
        if quiet >= 2:
            return time.monotonic() - start
    raise BenchError(f"worker not warm after {timeout}s:\n{worker.tail()}")


# --------------------------------------------------------------------------- load generators


def run_wrk(
    url: str, connections: int, duration: float, script: Path, key: str | None
) -> dict[str, Any]:
    # wrk takes whole seconds only.
    whole = max(1, round(duration))
    command = ["wrk", "-t1", f"-c{connections}", f"-d{whole}s", "--timeout", "5s"]
    if key:
        command += ["-H", f"Authorization: Bearer {key}"]
    command += ["-s", str(script), url]
    process = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in process.stdout.splitlines() if line.startswith("WRK_RESULT ")]
    if process.returncode != 0 or not lines:
        raise BenchError(f"wrk failed ({process.returncode}):\n{process.stdout}{process.stderr}")
    raw = json.loads(lines[-1].removeprefix("WRK_RESULT "))
    seconds = raw["duration_us"] / 1e6
    errors = sum(raw[key] for key in ("connect", "read", "write", "timeout"))
    return {
        "requests": int(raw["requests"]),
        "seconds": seconds,
        "rps": raw["requests"] / seconds,
        "p50_ms": raw["p50_us"] / 1e3,
        "p90_ms": raw["p90_us"] / 1e3,
        "p99_ms": raw["p99_us"] / 1e3,
        "max_ms": raw["max_us"] / 1e3,
        "mean_ms": raw["mean_us"] / 1e3,
        "non_2xx": int(raw["status"]),
        "socket_errors": int(errors),
        "bytes_per_response": raw["bytes"] / raw["requests"] if raw["requests"] else None,
    }


def run_python_loadgen(
    url: str, connections: int, duration: float, key: str | None
) -> dict[str, Any]:
    """This file's ``_loadgen`` mode in a separate process (so it does not share a GIL with
    anything measured)."""
    command = [sys.executable, __file__, "_loadgen", url, str(connections), str(duration)]
    command += [key] if key else []
    process = subprocess.run(command, capture_output=True, text=True)
    if process.returncode != 0:
        raise BenchError(f"python load generator failed:\n{process.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(process.stdout.strip().splitlines()[-1])
    return result


async def _connection(
    host: str,
    port: int,
    path: str,
    key: str | None,
    deadline: float,
    latencies: list[float],
    tally: Counter[str],
) -> None:
    """One keep-alive HTTP/1.1 connection issuing GETs back to back until ``deadline``."""
    reader, writer = await asyncio.open_connection(host, port)
    auth = f"Authorization: Bearer {key}\r\n" if key else ""
    request = f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\n{auth}\r\n".encode()
    try:
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            body = await reader.readexactly(length)
            latencies.append(time.perf_counter() - start)
            tally["bytes"] += len(head) + len(body)
            if not head.startswith(b"HTTP/1.1 2"):
                tally["non_2xx"] += 1
    except (OSError, asyncio.IncompleteReadError):
        tally["socket_errors"] += 1
    finally:
        writer.close()


async def _loadgen(
    url: str, connections: int, duration: float, key: str | None = None
) -> dict[str, Any]:
    parsed = httpx.URL(url)
    latencies: list[float] = []
    tally: Counter[str] = Counter()
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(
        *(
            _connection(
                parsed.host,
                parsed.port or 80,
                parsed.raw_path.decode(),
                key,
                deadline,
                latencies,
                tally,
            )
            for _ in range(connections)
        )
    )
    seconds = time.perf_counter() - start
    ms = [value * 1e3 for value in latencies]
    return {
        "requests": len(ms),
        "seconds": seconds,
        "rps": len(ms) / seconds,
        "p50_ms": percentile(ms, 50),
        "p90_ms": percentile(ms, 90),
        "p99_ms": percentile(ms, 99),
        "max_ms": max(ms, default=None),
        "mean_ms": statistics.fmean(ms) if ms else None,
        "non_2xx": tally["non_2xx"],
        "socket_errors": tally["socket_errors"],
        "bytes_per_response": tally["bytes"] / len(ms) if ms else None,
    }


def loadgen_main(argv: list[str]) -> None:
    url, connections, duration = argv[0], int(argv[1]), float(argv[2])
    key = argv[3] if len(argv) > 3 else None
    with contextlib.suppress(ImportError):
        import uvloop

        uvloop.install()
    print(json.dumps(asyncio.run(_loadgen(url, connections, duration, key))))


@dataclass(frozen=True)
class LoadGen:
    kind: str  # "wrk" or "python"
    script: Path
    key: str | None = None  # sent as "Authorization: Bearer <key>"

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.key}"} if self.key else {}

    def run(self, url: str, connections: int, duration: float) -> dict[str, Any]:
        if self.kind == "wrk":
            return run_wrk(url, connections, duration, self.script, self.key)
        return run_python_loadgen(url, connections, duration, self.key)

    @property
    def label(self) -> str:
        if self.kind == "wrk":
            return "wrk (1 thread, keep-alive)"
        return "python asyncio raw HTTP/1.1 client (1 process, keep-alive)"


def measured(
    loadgen: LoadGen, url: str, server: Started, connections: int, duration: float
) -> dict[str, Any]:
    """One load-generator run, plus the CPU the server tree, the load generator and the
    whole machine used meanwhile (in cores)."""
    server_before, loadgen_before, busy_before = (
        tree_cpu_s(server.pid),
        children_cpu_s(),
        machine_busy_s(),
    )
    result = loadgen.run(url, connections, duration)
    seconds = result["seconds"]
    server_cores = (tree_cpu_s(server.pid) - server_before) / seconds
    loadgen_cores = (children_cpu_s() - loadgen_before) / seconds
    machine_cores = (machine_busy_s() - busy_before) / seconds
    result.update(
        connections=connections,
        server_cpu_cores=server_cores,
        loadgen_cpu_cores=loadgen_cores,
        machine_cpu_cores=machine_cores,
        # PostgreSQL/Redis, and anything else on the machine.
        other_cpu_cores=machine_cores - server_cores - loadgen_cores,
        meets_rps=result["rps"] >= TARGET_GET_RPS,
        meets_p99=result["p99_ms"] is not None and result["p99_ms"] < TARGET_GET_P99_MS,
    )
    return result


def get_load(
    loadgen: LoadGen, base_url: str, job_id: str, server: Started, args: Any, label: str
) -> list[dict[str, Any]]:
    url = f"{base_url}/v1/jobs/{job_id}"
    check = httpx.get(url, timeout=10, headers=loadgen.headers)
    if check.status_code != 200:
        raise BenchError(f"GET {url}: {check.status_code} {check.text[:300]}")
    loadgen.run(url, 8, args.warmup)  # warm-up, not recorded
    rows = []
    for connections in args.connections:
        row = measured(loadgen, url, server, connections, args.duration)
        row["server"] = label
        rows.append(row)
        print(
            f"    {label:<22} c={connections:<3} {row['rps']:8.0f} req/s  "
            f"p50 {row['p50_ms']:.2f} ms  p99 {row['p99_ms']:.2f} ms  "
            f"server {row['server_cpu_cores']:.2f} cores",
            flush=True,
        )
    return rows


def floor_load(
    loadgen: LoadGen, base_url: str, server: Started, args: Any, label: str
) -> dict[str, Any]:
    """``GET /healthz`` (a sync route: one threadpool hop, no database) at c=8: what this
    machine's FastAPI + uvicorn can do at best, to read the job numbers against."""
    url = f"{base_url}/healthz"
    loadgen.run(url, 8, args.warmup)
    row = measured(loadgen, url, server, 8, args.duration)
    row["server"] = label
    print(
        f"    {label:<22} /healthz c=8 {row['rps']:8.0f} req/s  p50 {row['p50_ms']:.2f} ms  "
        f"p99 {row['p99_ms']:.2f} ms",
        flush=True,
    )
    return row


# --------------------------------------------------------------------------- profile


def profile_get(
    loadgen: LoadGen, base_url: str, job_id: str, server: Started, seconds: float, out: Path
) -> dict[str, Any]:
    """py-spy (GIL-holding samples only) on the single API process under c=8 GET load."""
    py_spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(py_spy).exists():
        return {"error": "py-spy not installed (pip install py-spy)"}
    command = [py_spy, "record", "-p", str(server.pid), "-d", f"{seconds:g}", "-r", "200"]
    command += ["--gil", "--nolineno", "-f", "raw", "-o", str(out)]
    spy = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(0.5)
    load = loadgen.run(f"{base_url}/v1/jobs/{job_id}", 8, seconds + 1)
    output, _ = spy.communicate(timeout=seconds + 60)
    if spy.returncode != 0 or not out.exists():
        return {"error": f"py-spy failed ({spy.returncode}): {output[-2000:]}"}
    return {"raw": str(out), "rps_while_sampled": load["rps"], **summarize_profile(out)}


def _package(frame: str) -> str:
    """``func (path)`` → the top package of ``path`` (``sqlalchemy``, ``api``, ``json``…)."""
    path = frame[frame.rfind("(") + 1 : -1] if frame.endswith(")") else frame
    parts = Path(path).parts
    for index in range(len(parts) - 1, -1, -1):
        if parts[index] in ("site-packages", "dist-packages") or parts[index].startswith("python3"):
            parts = parts[index + 1 :]
            break
    return parts[0].removesuffix(".py") if parts else path


#: Frames at the root of every stack (start-up, the event loop, thread bootstrap, ASGI
#: plumbing), matched by file or name: left out of the inclusive ranking, where they would
#: all tie at the top.
ROOT_FRAMES = (
    "<frozen runpy>",
    "typer/",
    "click/",
    "netkiln/",
    "uvicorn/main.py",
    "uvicorn/server.py",
    "uvicorn/_compat.py",
    "asyncio/runners.py",
    "asyncio/base_events.py",
    "asyncio/events.py",
    "threading.py",
    # The ASGI plumbing between uvicorn and the route: every request passes through it.
    "uvicorn/protocols/",
    "uvicorn/middleware/",
    "Middleware.__call__",
    "Starlette.__call__",
    "FastAPI.__call__",
    "wrapped_app (",
    "Router.__call__",
    "APIRouter.app (",
    "Router.handle (",
    "Router._handle_selected (",
    "APIRoute.handle (",
    "request_response.<locals>.app",
)


def summarize_profile(raw: Path, top: int = 20) -> dict[str, Any]:
    """Self and inclusive sample shares per function, and self share per package."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    packages: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [frame for frame in stack.split(";") if frame and not frame.startswith("thread")]
        if not frames:
            continue
        total += count
        for frame in set(frames):
            if not any(marker in frame for marker in ROOT_FRAMES):
                inclusive[frame] += count
        own[frames[-1]] += count
        packages[_package(frames[-1])] += count

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(name, count / total) for name, count in counter.most_common(top)]

    return {
        "samples": total,
        "self": share(own),
        "inclusive": share(inclusive),
        "self_by_package": share(packages),
    }


# --------------------------------------------------------------------------- phases


def api_rss_mb(api: Started) -> float:
    return sum(proc.memory_info().rss for proc in tree(api.pid)) / 2**20


def job_rss(worker: Started, api: Started) -> dict[str, Any]:
    import psutil

    pool = []
    for proc in pool_processes(worker):
        with contextlib.suppress(psutil.Error):
            info = proc.memory_full_info()
            pool.append({"pid": proc.pid, "rss_mb": info.rss / 2**20, "uss_mb": info.uss / 2**20})
    main_rss = psutil.Process(worker.pid).memory_info().rss / 2**20
    return {
        "pool": pool,
        "pool_rss_mb": sum(item["rss_mb"] for item in pool),
        "pool_uss_mb": sum(item["uss_mb"] for item in pool),
        "worker_main_rss_mb": main_rss,
        "api_rss_mb": api_rss_mb(api),
    }


def worker_rss_phase(
    client: httpx.Client, worker: Started, api: Started, jobs: int
) -> tuple[dict[str, Any], str]:
    checkpoints = sorted({n for n in (1, 10, 50, 100) if n <= jobs} | {jobs})
    spec = copy.deepcopy(DIGITS_SPEC)
    samples: dict[int, dict[str, Any]] = {0: job_rss(worker, api)}  # warm, before job 1
    durations, statuses = [], Counter[str]()
    last_ok = ""
    for index in range(1, jobs + 1):
        start = time.perf_counter()
        response = client.post("/v1/jobs", json=spec)
        if response.status_code != 202:
            raise BenchError(f"POST /v1/jobs: {response.status_code} {response.text[:300]}")
        job_id = response.json()["id"]
        while True:
            job = client.get(f"/v1/jobs/{job_id}").json()
            if job["status"] in TERMINAL:
                break
            if time.perf_counter() - start > 300:
                raise BenchError(f"job {index} still {job['status']} after 300 s:\n{worker.tail()}")
            time.sleep(0.05)
        durations.append(time.perf_counter() - start)
        statuses[job["status"]] += 1
        if job["status"] == "succeeded":
            last_ok = job_id
        elif statuses[job["status"]] == 1:
            print(f"    job {index} {job['status']}: {job.get('error')}", flush=True)
        if index in checkpoints:
            time.sleep(0.5)  # let the task return and the pool process settle
            samples[index] = job_rss(worker, api)
            print(
                f"    after job {index:>3}: pool RSS {samples[index]['pool_rss_mb']:.1f} MB "
                f"(USS {samples[index]['pool_uss_mb']:.1f} MB)",
                flush=True,
            )
    first = samples[checkpoints[0]]["pool_rss_mb"]
    last = samples[checkpoints[-1]]["pool_rss_mb"]
    pids = [tuple(item["pid"] for item in samples[n]["pool"]) for n in sorted(samples)]
    result = {
        "jobs": jobs,
        "statuses": dict(statuses),
        "job_wall_s_median": statistics.median(durations),
        "job_wall_s_p99": percentile(durations, 99),
        "samples": {str(n): sample for n, sample in samples.items()},
        "growth_mb": last - first,
        "growth_uss_mb": samples[checkpoints[-1]]["pool_uss_mb"]
        - samples[checkpoints[0]]["pool_uss_mb"],
        "pool_pids_constant": len(set(pids)) == 1,
        "meets_growth": last - first < TARGET_RSS_GROWTH_MB,
    }
    return result, last_ok


def post_phase(client: httpx.Client, posts: int) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_SPEC)
    for _ in range(5):  # warm-up, not recorded
        client.post("/v1/jobs", json=spec)
    latencies, failures = [], 0
    for _ in range(posts):
        start = time.perf_counter()
        response = client.post("/v1/jobs", json=spec)
        latencies.append((time.perf_counter() - start) * 1e3)
        failures += response.status_code != 202
    return {
        "posts": posts,
        "p50_ms": percentile(latencies, 50),
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "max_ms": max(latencies),
        "mean_ms": statistics.fmean(latencies),
        "non_202": failures,
        "rps_sequential": 1e3 / statistics.fmean(latencies),
    }


def run_backend(name: str, root: Path, args: Any, loadgen: LoadGen) -> dict[str, Any]:
    result: dict[str, Any] = {"backend": name}
    try:
        backend = make_backend(name, root, args)
    except BenchError as exc:
        result["error"] = str(exc)
        print(f"  {name} failed: {exc}", file=sys.stderr, flush=True)
        return result
    result["database_url"] = backend.database_url
    result["broker_url"] = backend.env.get("NETKILN_BROKER_URL", "filesystem")
    started: list[Started] = []
    try:
        migrate(backend)
        loadgen = replace(loadgen, key=create_api_key(backend))
        api, base_url = start_api(backend, workers=1)
        started.append(api)
        worker = start_worker(backend)
        started.append(worker)
        result["worker_warm_s"] = wait_until_warm(worker)
        api_rss_start = api_rss_mb(api)

        with httpx.Client(base_url=base_url, timeout=30, headers=loadgen.headers) as client:
            print(f"  (c) worker RSS over {args.jobs} sequential digits jobs …", flush=True)
            result["worker_rss"], job_id = worker_rss_phase(client, worker, api, args.jobs)
            if not job_id:
                raise BenchError(f"no job succeeded:\n{worker.tail()}")
            worker.stop()
            started.remove(worker)
            if args.only == "rss":
                return result

            print(f"  (a) GET /v1/jobs/{{id}} (worker stopped), {loadgen.kind} …", flush=True)
            result["get"] = get_load(loadgen, base_url, job_id, api, args, "netkiln api")
            result["floor"] = [floor_load(loadgen, base_url, api, args, "netkiln api")]
            if args.profile:
                print(f"  profiling netkiln api with py-spy for {args.profile:g} s …", flush=True)
                result["profile"] = profile_get(
                    loadgen, base_url, job_id, api, args.profile, root / "profile.txt"
                )

            print(f"  (b) {args.posts} sequential POST /v1/jobs, no worker …", flush=True)
            result["post"] = post_phase(client, args.posts)
        result["api_rss_mb"] = {"start": api_rss_start, "end": api_rss_mb(api)}
        api.stop()
        started.remove(api)

        if args.workers2:
            multi, multi_url = start_api(backend, workers=2)
            started.append(multi)
            print("  (a') GET against netkiln api --workers 2 …", flush=True)
            result["get"] += get_load(
                loadgen, multi_url, job_id, multi, args, "netkiln api --workers 2"
            )
            result["floor"].append(
                floor_load(loadgen, multi_url, multi, args, "netkiln api --workers 2")
            )
            multi.stop()
            started.remove(multi)
    except BenchError as exc:
        result["error"] = str(exc)
        print(f"  {name} failed: {exc}", file=sys.stderr, flush=True)
    finally:
        for process in reversed(started):
            process.stop()
        backend.close()
    return result


# --------------------------------------------------------------------------- report


def _f(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _ok(flag: bool | None) -> str:
    return "-" if flag is None else ("yes" if flag else "NO")


def _table(title: str, headers: list[str], rows: list[list[str]]) -> None:
    if not rows:  # a phase that did not run (--only)
        return
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title, title_justify="left")
        for index, header in enumerate(headers):
            table.add_column(header, justify="left" if index < 2 else "right")
        for row in rows:
            table.add_row(*row)
        Console(width=160).print(table)
    except ImportError:
        print(title)
        print("  " + " | ".join(headers))
        for row in rows:
            print("  " + " | ".join(row))


#: The columns of :func:`_load_cells`.
LOAD_HEADERS = [
    "backend",
    "server",
    "conns",
    "req/s",
    "p50 ms",
    "p90 ms",
    "p99 ms",
    "errors",
    "server cores",
]


def _load_cells(result: dict[str, Any], row: dict[str, Any]) -> list[str]:
    """The cells a GET row and a floor row share: who served, how fast, at what cost."""
    return [
        result["backend"],
        row["server"],
        str(row["connections"]),
        _f(row["rps"], 0),
        _f(row["p50_ms"]),
        _f(row["p90_ms"]),
        _f(row["p99_ms"]),
        str(row["non_2xx"] + row["socket_errors"]),
        _f(row["server_cpu_cores"]),
    ]


def print_report(results: list[dict[str, Any]], args: Any, loadgen: LoadGen) -> None:
    get_rows = [
        [
            *_load_cells(r, g),
            _f(g["loadgen_cpu_cores"]),
            _f(g["other_cpu_cores"]),
            _ok(g["meets_rps"]),
            _ok(g["meets_p99"]),
        ]
        for r in results
        for g in r.get("get", [])
    ]
    _table(
        f"(a) GET /v1/jobs/{{id}}, {args.duration:g} s per row, load: {loadgen.label}  "
        f"[targets: ≥ {TARGET_GET_RPS:.0f} req/s, p99 < {TARGET_GET_P99_MS:g} ms]",
        [
            *LOAD_HEADERS,
            "loadgen cores",
            "other cores",
            "≥1500/s",
            "p99<10ms",
        ],
        get_rows,
    )
    floor_rows = [_load_cells(r, g) for r in results for g in r.get("floor", [])]
    _table(
        "(a0) floor for comparison: GET /healthz (sync route, no database), same servers",
        LOAD_HEADERS,
        floor_rows,
    )
    post_rows = [
        [
            r["backend"],
            "netkiln api, no worker",
            str(p["posts"]),
            _f(p["p50_ms"]),
            _f(p["p90_ms"]),
            _f(p["p99_ms"]),
            _f(p["max_ms"]),
            _f(p["rps_sequential"], 0),
            str(p["non_202"]),
        ]
        for r in results
        if (p := r.get("post"))
    ]
    _table(
        "(b) POST /v1/jobs, sequential, one httpx client (jobs only queue)  [no target]",
        ["backend", "server", "posts", "p50 ms", "p90 ms", "p99 ms", "max ms", "req/s", "non-202"],
        post_rows,
    )
    rss_rows = []
    checkpoints = sorted(
        {int(key) for r in results for key in r.get("worker_rss", {}).get("samples", {})}
    )
    for r in results:
        w = r.get("worker_rss")
        if not w:
            continue
        samples = w["samples"]
        cells = [
            _f(samples[key]["pool_rss_mb"], 1) if key in samples else "-"
            for key in map(str, checkpoints)
        ]
        rss_rows.append(
            [
                r["backend"],
                str(w["jobs"]),
                *cells,
                _f(w["growth_mb"], 1),
                _f(w["growth_uss_mb"], 1),
                _ok(w["meets_growth"]),
                ", ".join(f"{k} {v}" for k, v in w["statuses"].items()),
                _f(w["job_wall_s_median"]),
                "yes" if w["pool_pids_constant"] else "NO (recycled)",
            ]
        )
    _table(
        f"(c) Celery pool process RSS (MB), sequential 1-epoch digits jobs  "
        f"[target: growth job 1→last < {TARGET_RSS_GROWTH_MB:g} MB]",
        [
            "backend",
            "jobs",
            *(f"job {n}" if n else "warm idle" for n in checkpoints),
            "growth",
            "USS growth",
            "<50MB",
            "statuses",
            "job s (med)",
            "same pid",
        ],
        rss_rows,
    )
    for r in results:
        prof = r.get("profile")
        if not prof:
            continue
        if "error" in prof:
            print(f"\nprofile ({r['backend']}): {prof['error']}")
            continue
        print(
            f"\nprofile of netkiln api ({r['backend']}), py-spy --gil, {prof['samples']} samples, "
            f"c=8 ({_f(prof['rps_while_sampled'], 0)} req/s while sampled); raw: {prof['raw']}"
        )
        for key, heading in (
            ("self_by_package", "self time by package"),
            ("inclusive", "inclusive time by function"),
            ("self", "self time by function"),
        ):
            print(f"  {heading}:")
            for name, share in prof[key]:
                print(f"    {share * 100:5.1f}%  {name}")

    print("\nnotes:")
    print(f"- machine: {os.cpu_count()} CPUs; load generator: {loadgen.label}.")
    print(
        "- server cores / loadgen cores / other cores: CPU used during the row by the API "
        "process tree, the load generator, and everything else (PostgreSQL, Redis, noise)."
    )
    for r in results:
        if "error" in r:
            print(f"- {r['backend']}: FAILED: {r['error'].splitlines()[0]}")
            continue
        ar = r.get("api_rss_mb", {})
        w = r.get("worker_rss", {}).get("samples", {})
        last = w.get(str(r.get("worker_rss", {}).get("jobs")), {})
        print(
            f"- {r['backend']}: worker warm after {_f(r.get('worker_warm_s'), 1)} s; API RSS "
            f"{_f(ar.get('start'), 1)} → {_f(ar.get('end'), 1)} MB over the run; worker main "
            f"process RSS after the last job {_f(last.get('worker_main_rss_mb'), 1)} MB."
        )
    for r in results:
        gets = [g for g in r.get("get", []) if g["server"] == "netkiln api"]
        if gets:
            met = [g for g in gets if g["meets_rps"] and g["meets_p99"]]
            verdict = (
                f"met at c={', '.join(str(g['connections']) for g in met)}"
                if met
                else "NOT met at any concurrency"
            )
            print(f"- GET target on {r['backend']} with netkiln api: {verdict}.")
    if args.others:
        print("- other netkiln/plain_keras processes were running at start (numbers may be noisy):")
        for line in args.others:
            print(f"    {line}")
    else:
        print("- no other netkiln/plain_keras processes were running at start.")


# --------------------------------------------------------------------------- main


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("embedded", "postgres", "both"), default="both")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per GET level")
    parser.add_argument("--warmup", type=float, default=2.0, help="GET warm-up seconds")
    parser.add_argument(
        "--connections",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[1, 8, 32],
        help="comma-separated GET concurrency levels",
    )
    parser.add_argument("--posts", type=int, default=200)
    parser.add_argument("--jobs", type=int, default=100, help="worker RSS phase")
    parser.add_argument(
        "--only",
        choices=("rss",),
        help="run one phase: rss = (c) worker RSS only (no load generator needed)",
    )
    parser.add_argument("--loadgen", choices=("auto", "wrk", "python"), default="auto")
    parser.add_argument(
        "--no-workers2",
        dest="workers2",
        action="store_false",
        help="skip the netkiln api --workers 2 comparison",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="py-spy the netkiln api process under c=8 GET load for this long",
    )
    parser.add_argument(
        "--postgres-url", default="postgresql+psycopg://postgres@127.0.0.1:5432/test"
    )
    parser.add_argument(
        "--redis-url",
        help="an empty Redis db, flushed afterwards (default: the highest empty db of 15..1 "
        "at 127.0.0.1:6379, skipping 13, the tests')",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument(
        "--read-cache-seconds",
        type=float,
        default=0.5,
        help="the API's NETKILN_READ_CACHE_SECONDS (0: every status read goes to the database)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (logs)")
    args = parser.parse_args()

    try:
        import psutil  # noqa: F401
    except ImportError:
        raise SystemExit("pip install psutil (the dev extra has it)") from None

    if args.only == "rss":
        args.workers2 = False
    if args.loadgen == "wrk" and not shutil.which("wrk"):
        raise SystemExit("wrk is not installed (apt-get install -y wrk)")
    kind = (
        "wrk"
        if args.loadgen == "wrk" or (args.loadgen == "auto" and shutil.which("wrk"))
        else "python"
    )
    args.others = other_bench_processes()
    if args.others:
        print("warning: other netkiln/plain_keras processes are running:", *args.others, sep="\n  ")

    root = Path(tempfile.mkdtemp(prefix="netkiln-api-load-"))
    script = root / "report.lua"
    script.write_text(WRK_SCRIPT)
    loadgen = LoadGen(kind, script)
    names = ["embedded", "postgres"] if args.backend == "both" else [args.backend]
    results = []
    try:
        for name in names:
            print(f"{name}:", flush=True)
            results.append(run_backend(name, root / name, args, loadgen))
        print()
        print_report(results, args, loadgen)
        if args.json:
            config = {k: v for k, v in vars(args).items() if k != "json"}
            document = {
                "config": config,
                "loadgen": loadgen.label,
                "cpus": os.cpu_count(),
                "targets": {
                    "get_rps": TARGET_GET_RPS,
                    "get_p99_ms": TARGET_GET_P99_MS,
                    "rss_growth_mb": TARGET_RSS_GROWTH_MB,
                },
                "results": results,
            }
            args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
            print(f"\nwrote {args.json}")
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)
    if any("error" in r for r in results):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
