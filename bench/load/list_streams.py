"""Phases (d) and (e) of ``api_load``: the job listing the web page polls, with the table
filled to ``--list-jobs`` jobs, and status reads while hundreds of event streams are open.

The streams are held by ``api_load.py _streams`` in a process of its own (asyncio, one
connection per stream), so that nothing measured shares its interpreter.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import httpx

from load.base import BENCH_SPEC, BenchError
from load.http_phases import measured
from load.loadgen import ENTRY, LoadGen
from netkiln.harness import Process

TARGET_LIST_RPS = 1000.0
TARGET_LIST_P99_MS = 50.0
#: p50 of a status read with the streams open, at most this many times the idle p50.
TARGET_STREAMS_P50_RATIO = 2.0
LIST_PATH = "/v1/jobs?limit=50"


def fill_jobs(client: httpx.Client, total: int) -> int:
    """POST the bench spec until the tenant has ``total`` jobs (no worker: they queue).
    Returns how many there are."""
    have = _count_jobs(client)
    for _ in range(max(total - have, 0)):
        response = client.post("/v1/jobs", json=BENCH_SPEC)
        if response.status_code != 202:
            raise BenchError(f"POST /v1/jobs: {response.status_code} {response.text[:300]}")
    return _count_jobs(client)


def _count_jobs(client: httpx.Client) -> int:
    count, cursor = 0, None
    while True:
        page = client.get(
            "/v1/jobs", params={"limit": 200, **({"cursor": cursor} if cursor else {})}
        )
        page.raise_for_status()
        body = page.json()
        count += len(body["items"])
        cursor = body["next_cursor"]
        if cursor is None:
            return count


def list_load(
    loadgen: LoadGen, base_url: str, server: Process, args: Any, label: str, jobs: int
) -> dict[str, Any]:
    """``GET /v1/jobs?limit=50`` at c=8: every request queries the database (listings are
    never served from the read cache)."""
    url = base_url + LIST_PATH
    check = httpx.get(url, timeout=10, headers=loadgen.headers)
    if check.status_code != 200 or len(check.json()["items"]) != 50:
        raise BenchError(f"GET {url}: {check.status_code} {check.text[:300]}")
    loadgen.run(url, 8, args.warmup)
    row = measured(loadgen, url, server, 8, args.duration)
    row.update(
        server=label,
        jobs_in_table=jobs,
        meets_rps=row["rps"] >= TARGET_LIST_RPS,
        meets_p99=row["p99_ms"] is not None and row["p99_ms"] < TARGET_LIST_P99_MS,
    )
    print(
        f"    {label:<22} list c=8 {row['rps']:8.0f} req/s  p50 {row['p50_ms']:.2f} ms  "
        f"p99 {row['p99_ms']:.2f} ms  ({jobs} jobs, {row['bytes_per_response']:.0f} B)",
        flush=True,
    )
    return row


def streams_phase(
    loadgen: LoadGen,
    base_url: str,
    job_id: str,
    stream_job_ids: list[str],
    server: Process,
    args: Any,
) -> dict[str, Any]:
    """p50 of ``GET /v1/jobs/{id}`` at c=8 with no stream open, then with ``--streams``
    open over ``stream_job_ids`` (queued jobs: their streams stay open), in one run."""
    url = f"{base_url}/v1/jobs/{job_id}"
    loadgen.run(url, 8, args.warmup)
    idle = measured(loadgen, url, server, 8, args.duration)
    with hold_streams(base_url, loadgen.key, args.streams, stream_job_ids) as opened:
        loadgen.run(url, 8, args.warmup)
        busy = measured(loadgen, url, server, 8, args.duration)
    ratio = busy["p50_ms"] / idle["p50_ms"]
    print(
        f"    GET job c=8 p50 {idle['p50_ms']:.2f} ms idle, {busy['p50_ms']:.2f} ms with "
        f"{opened} streams open over {len(stream_job_ids)} jobs: {ratio:.2f}x "
        f"({idle['rps']:.0f} vs {busy['rps']:.0f} req/s)",
        flush=True,
    )
    return {
        "streams": opened,
        "stream_jobs": len(stream_job_ids),
        "idle": idle,
        "with_streams": busy,
        "p50_ratio": ratio,
        "meets_ratio": ratio <= TARGET_STREAMS_P50_RATIO,
    }


@contextlib.contextmanager
def hold_streams(base_url: str, key: str | None, count: int, job_ids: list[str]) -> Iterator[int]:
    """``count`` event streams, spread round-robin over ``job_ids``, open until exit.
    Yields how many opened (all of them, or it raises)."""
    command = [sys.executable, str(ENTRY), "_streams", base_url, key or "", str(count), *job_ids]
    holder = subprocess.Popen(
        command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    assert holder.stdout is not None
    assert holder.stdin is not None
    try:
        line = holder.stdout.readline().strip()
        if not line.startswith("OPEN "):
            raise BenchError(f"stream holder failed: {line}\n{holder.stderr.read()[-3000:]}")
        yield int(line.removeprefix("OPEN "))
    finally:
        holder.stdin.close()  # the holder's signal to close its streams
        try:
            holder.wait(timeout=30)
        except subprocess.TimeoutExpired:
            holder.kill()


def streams_main(argv: list[str]) -> None:
    """``api_load.py _streams BASE_URL KEY COUNT JOB_ID…``: open COUNT streams, print
    ``OPEN n`` once every one has its response headers, hold them until stdin closes."""
    base_url, key, count, job_ids = argv[0], argv[1], int(argv[2]), argv[3:]
    asyncio.run(_hold(base_url, key, count, job_ids))


async def _hold(base_url: str, key: str, count: int, job_ids: list[str]) -> None:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    limits = httpx.Limits(max_connections=count + 10, max_keepalive_connections=0)
    opened = asyncio.Semaphore(0)
    async with httpx.AsyncClient(
        base_url=base_url, headers=headers, limits=limits, timeout=None
    ) as client:

        async def follow(job_id: str) -> None:
            async with client.stream("GET", f"/v1/jobs/{job_id}/events") as response:
                if response.status_code != 200:
                    raise BenchError(f"events of {job_id}: {response.status_code}")
                opened.release()
                async for _ in response.aiter_bytes():
                    pass

        tasks = [asyncio.create_task(follow(job_ids[i % len(job_ids)])) for i in range(count)]
        for _ in range(count):
            waiter = asyncio.create_task(opened.acquire())
            done, _ = await asyncio.wait(
                [waiter, *tasks], timeout=60, return_when=asyncio.FIRST_COMPLETED
            )
            if waiter not in done:
                failed = [task for task in tasks if task.done()]
                raise SystemExit(
                    f"streams did not open: {failed[0].exception() if failed else 'timeout'}"
                )
        print(f"OPEN {count}", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
