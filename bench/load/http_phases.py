"""Phases (a), (a0) and (b) of ``api_load``: status reads of a finished job under load,
the ``/healthz`` floor beside them, and sequential submits; each read row with the CPU the
server, the load generator and everything else used meanwhile."""

from __future__ import annotations

import statistics
import time
from typing import Any

import httpx
from procstats import children_cpu_s, machine_busy_s, session_cpu_s

from load.base import BENCH_SPEC, BenchError, percentile
from load.loadgen import LoadGen
from models.spec.examples import BN_AFTER_ACTIVATION
from netkiln.harness import Process

TARGET_GET_RPS = 1500.0
TARGET_GET_P99_MS = 10.0


def measured(
    loadgen: LoadGen, url: str, server: Process, connections: int, duration: float
) -> dict[str, Any]:
    """One load-generator run, plus the CPU the server tree, the load generator and the
    whole machine used meanwhile (in cores)."""
    server_before, loadgen_before, busy_before = (
        session_cpu_s(server.pid),
        children_cpu_s(),
        machine_busy_s(),
    )
    result = loadgen.run(url, connections, duration)
    seconds = result["seconds"]
    server_cores = (session_cpu_s(server.pid) - server_before) / seconds
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
    loadgen: LoadGen, base_url: str, job_id: str, server: Process, args: Any, label: str
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
    loadgen: LoadGen, base_url: str, server: Process, args: Any, label: str
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


def post_phase(client: httpx.Client, posts: int) -> dict[str, Any]:
    for _ in range(5):  # warm-up, not recorded
        client.post("/v1/jobs", json=BENCH_SPEC)
    latencies, failures = [], 0
    for _ in range(posts):
        start = time.perf_counter()
        response = client.post("/v1/jobs", json=BENCH_SPEC)
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


#: The dry run answers a person at a prompt: p50 under this (#14).
TARGET_DRY_RUN_P50_MS = 20.0


def dry_run_phase(client: httpx.Client, runs: int) -> dict[str, Any]:
    """(b') ``POST /v1/jobs?dry_run=true`` of the BN example (Fashion-MNIST, 784-300-100-10
    with batch norm): validation, layer summary, lint and the data preflight, no storage."""
    for _ in range(5):  # warm-up, not recorded
        client.post("/v1/jobs", params={"dry_run": True}, json=BN_AFTER_ACTIVATION)
    latencies, failures = [], 0
    for _ in range(runs):
        start = time.perf_counter()
        response = client.post("/v1/jobs", params={"dry_run": True}, json=BN_AFTER_ACTIVATION)
        latencies.append((time.perf_counter() - start) * 1e3)
        failures += response.status_code != 200
    p50 = percentile(latencies, 50)
    return {
        "runs": runs,
        "p50_ms": p50,
        "p90_ms": percentile(latencies, 90),
        "p99_ms": percentile(latencies, 99),
        "non_200": failures,
        "meets_p50": p50 is not None and p50 < TARGET_DRY_RUN_P50_MS,
    }
