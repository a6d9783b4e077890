"""The load generators of ``api_load``: ``wrk`` (one thread, keep-alive) or, where it is
missing, a raw asyncio HTTP/1.1 client run as ``api_load.py _loadgen`` in a process of its
own, so that it shares no GIL with anything measured. Both report the same fields."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from load.base import BenchError, percentile

ENTRY = Path(__file__).resolve().parents[1] / "api_load.py"

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
    """``api_load.py _loadgen`` (:func:`loadgen_main`) in a separate process."""
    command = [sys.executable, str(ENTRY), "_loadgen", url, str(connections), str(duration)]
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
