"""Phase (c) of ``api_load``: the RSS (and USS) of the worker's Celery pool process(es)
over many sequential small jobs, warm and idle first, then after job 1, 10, 50, 100."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections import Counter
from typing import Any

import httpx

from load.base import BENCH_SPEC, BenchError, percentile
from netkiln.harness import HarnessError, Process, wait_for_job

TARGET_RSS_GROWTH_MB = 50.0


def pool_processes(worker: Process) -> list[Any]:
    """The Celery pool processes: children of the ``netkiln worker`` main process."""
    import psutil

    try:
        return psutil.Process(worker.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def api_rss_mb(api: Process) -> float:
    """The API's processes together (one, or uvicorn's supervisor and its workers)."""
    import psutil

    root = psutil.Process(api.pid)
    return sum(proc.memory_info().rss for proc in [root, *root.children(recursive=True)]) / 2**20


def job_rss(worker: Process, api: Process) -> dict[str, Any]:
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
    client: httpx.Client, worker: Process, api: Process, jobs: int
) -> tuple[dict[str, Any], str]:
    checkpoints = sorted({n for n in (1, 10, 50, 100) if n <= jobs} | {jobs})
    samples: dict[int, dict[str, Any]] = {0: job_rss(worker, api)}  # warm, before job 1
    durations, statuses = [], Counter[str]()
    last_ok = ""
    for index in range(1, jobs + 1):
        start = time.perf_counter()
        response = client.post("/v1/jobs", json=BENCH_SPEC)
        if response.status_code != 202:
            raise BenchError(f"POST /v1/jobs: {response.status_code} {response.text[:300]}")
        job_id = response.json()["id"]
        try:
            job = wait_for_job(client, job_id, timeout=300, poll=0.05)
        except HarnessError as exc:
            raise BenchError(f"job {index}: {exc}:\n{worker.tail()}") from None
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
