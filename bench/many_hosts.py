"""Many hosts on the real stack: PostgreSQL + Redis + an S3-compatible store (SeaweedFS on
127.0.0.1), the API and two workers, each process on a data folder of its own (no shared
disk), as ``tests/e2e/test_many_hosts.py`` runs them.

(1) burst: ``--jobs`` (200) tiny digits jobs (one epoch) POSTed at once; every one must
    succeed exactly once (attempt 1, one epoch row). Reports the wall time, jobs/s, the
    queue wait (created → started) and the pick-up gap (a job's start after the latest
    job end before it: what dispatch costs while the queue is full).
(2) dispatch latency: ``--single`` (20) jobs submitted one at a time to idle workers, each
    awaited: queued → running (created_at → started_at) p50/p99.
(3) store throughput for a ``--model-mb`` (10) MB Keras model, ``--repeats`` (10) times: put,
    fetch into the host's cache (a miss each time) and stream (a download's read), on the
    s3:// store and on the local-folder store (``file://``, where a fetch is no copy at
    all), against the baseline of copying the file on the same disk in the same run: MB/s
    and the s3 ratio to that copy.

Run: ``.venv/bin/python bench/many_hosts.py [--jobs 200] [--json out.json]``. Needs the dev
extra (``weed``) and PostgreSQL and Redis (``--postgres-url``, ``--redis-url``).
"""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from load.backends import _empty_redis_db

from core.settings import Settings
from core.storage import ArtifactStore, job_key, open_store
from models.migrate import upgrade
from models.spec.examples import DIGITS_SPEC
from netkiln.harness import Stack, create_api_key, create_database, drop_database, process_env
from netkiln.servers import ObjectStoreServer

POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--single", type=int, default=20)
    parser.add_argument("--model-mb", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--postgres-url", default=POSTGRES_URL)
    parser.add_argument("--redis-url", default=None, help="an empty Redis db (default: found)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="netkiln-hosts-"))
    cleanup: list[Callable[[], None]] = []
    results: dict[str, Any] = {}
    try:
        store_server = ObjectStoreServer(root / "store")
        store_server.start()
        cleanup.append(store_server.stop)
        database_url = create_database(args.postgres_url, "netkiln_bench")
        cleanup.append(lambda: drop_database(args.postgres_url, database_url))
        broker_url, flush = _empty_redis_db(args.redis_url)
        cleanup.append(flush)
        upgrade(database_url)
        (root / "keras_home").mkdir()
        (root / "logs").mkdir()
        settings = {
            "NETKILN_DATABASE_URL": database_url,
            "NETKILN_BROKER_URL": broker_url,
            **store_server.settings(prefix="bench"),
        }
        env = process_env(root / "keras_home", settings)
        stack = Stack({**env, "NETKILN_DATA_DIR": str(root / "api-host")}, root / "logs")
        cleanup.append(stack.stop)
        stack.start(worker=False)
        for name in ("worker-a", "worker-b"):
            stack.start_worker(name, NETKILN_DATA_DIR=str(root / name))
        key = create_api_key(database_url)
        with stack.client(key, timeout=60) as client:
            warm_up(client)
            results["burst"] = burst(client, args.jobs)
            results["dispatch"] = one_at_a_time(client, args.single)
        results["store"] = store_throughput(root, store_server, args.model_mb, args.repeats)
    finally:
        for action in reversed(cleanup):
            try:
                action()
            except Exception as exc:
                print(f"cleanup failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    report(results)


def tiny_spec(name: str) -> dict[str, Any]:
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": name}
    spec["fit"] = {**spec["fit"], "epochs": 1}
    return spec


def warm_up(client: httpx.Client) -> None:
    """One job per worker first, so the burst measures warm workers (TensorFlow loaded)."""
    ids = [submit(client, tiny_spec(f"warm-{n}")) for n in range(2)]
    wait_all(client, ids)


def submit(client: httpx.Client, spec: dict[str, Any]) -> str:
    response = client.post("/v1/jobs", json=spec)
    response.raise_for_status()
    return str(response.json()["id"])


def wait_all(client: httpx.Client, ids: list[str], timeout: float = 3600) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout
    pending = set(ids)
    while pending:
        if time.monotonic() > deadline:
            raise SystemExit(f"{len(pending)} jobs did not end within {timeout:.0f} s")
        for job_id in list(pending):
            if client.get(f"/v1/jobs/{job_id}").json()["status"] in TERMINAL:
                pending.discard(job_id)
        time.sleep(0.5)
    return [client.get(f"/v1/jobs/{job_id}").json() for job_id in ids]


TERMINAL = {"succeeded", "failed", "cancelled"}


def burst(client: httpx.Client, count: int) -> dict[str, Any]:
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        ids = list(pool.map(lambda n: submit(client, tiny_spec(f"burst-{n}")), range(count)))
    jobs = wait_all(client, ids)
    wall = time.monotonic() - started
    failures = [job for job in jobs if job["status"] != "succeeded"]
    retried = [job for job in jobs if job["attempt"] != 1]
    epoch_rows = [len(client.get(f"/v1/jobs/{j['id']}/metrics").json()["epochs"]) for j in jobs]
    starts = sorted(stamp(job["started_at"]) for job in jobs)
    ends = sorted(stamp(job["finished_at"]) for job in jobs)
    gaps = []
    for start in starts:
        before = [end for end in ends if end <= start]
        if before:
            gaps.append(start - before[-1])
    waits = [stamp(job["started_at"]) - stamp(job["created_at"]) for job in jobs]
    return {
        "jobs": count,
        "succeeded": count - len(failures),
        "failed": [(job["id"], job["status"], job["error"]) for job in failures],
        "attempts_above_1": len(retried),
        "epoch_rows_not_1": sum(1 for rows in epoch_rows if rows != 1),
        "wall_s": wall,
        "jobs_per_s": count / wall,
        "queue_wait_s": percentiles(waits),
        "pickup_gap_ms": {k: v * 1000 for k, v in percentiles(gaps).items()},
    }


def one_at_a_time(client: httpx.Client, count: int) -> dict[str, Any]:
    latencies = []
    for n in range(count):
        job = wait_all(client, [submit(client, tiny_spec(f"single-{n}"))])[0]
        if job["status"] != "succeeded":
            raise SystemExit(f"single job {n} {job['status']}: {job['error']}")
        latencies.append(stamp(job["started_at"]) - stamp(job["created_at"]))
    return {
        "jobs": count,
        "queued_to_running_ms": {k: v * 1000 for k, v in percentiles(latencies).items()},
    }


def store_throughput(
    root: Path, server: ObjectStoreServer, model_mb: float, repeats: int
) -> dict[str, Any]:
    model_file = keras_model_file(root, model_mb)
    size_mb = model_file.stat().st_size / 1e6
    stores = {
        "s3": open_store(Settings.from_environment(server.settings("tp"), data_dir=root / "tp-s3")),
        "file": open_store(
            Settings(data_dir=root / "tp-file", artifacts_url=(root / "tp-store").as_uri())
        ),
    }
    measured = {name: measure_store(store, model_file, repeats) for name, store in stores.items()}
    out: dict[str, Any] = {
        "model_mb": size_mb,
        "disk_copy": size_mb / disk_copy(model_file, repeats),
    }
    for name, seconds in measured.items():
        out[name] = {op: size_mb / statistics.median(times) for op, times in seconds.items()}
    out["s3_over_disk_copy"] = {op: out["s3"][op] / out["disk_copy"] for op in out["s3"]}
    return out


def disk_copy(model_file: Path, repeats: int) -> float:
    """The baseline: the median seconds of copying the file on this disk."""
    times = []
    for n in range(repeats):
        target = model_file.with_name(f"copy-{n}")
        started = time.perf_counter()
        shutil.copyfile(model_file, target)
        times.append(time.perf_counter() - started)
        target.unlink()
    return statistics.median(times)


def keras_model_file(root: Path, model_mb: float) -> Path:
    """A real ``.keras`` file of about ``model_mb`` MB: one wide Dense layer."""
    import keras

    units = int(model_mb * 1e6 / 4 / 785)
    model = keras.Sequential([keras.Input((784,)), keras.layers.Dense(units)])
    path = root / "model.keras"
    model.save(path)
    return path


def measure_store(store: ArtifactStore, model_file: Path, repeats: int) -> dict[str, list[float]]:
    import uuid

    times: dict[str, list[float]] = {"write": [], "fetch": [], "stream": []}
    cache = getattr(store, "cache", None)
    for _ in range(repeats):
        with store.staging() as folder:
            staged = folder / "model.keras"
            shutil.copyfile(model_file, staged)
            started = time.perf_counter()
            stored = store.put(job_key("bench", uuid.uuid4(), "model.keras"), staged)
            times["write"].append(time.perf_counter() - started)
        if cache is not None:
            shutil.rmtree(cache.root, ignore_errors=True)  # a cache miss each time
        started = time.perf_counter()
        store.local_path(stored.uri).stat()
        times["fetch"].append(time.perf_counter() - started)
        started = time.perf_counter()
        for _ in store.stream(stored.uri):
            pass
        times["stream"].append(time.perf_counter() - started)
        store.delete(stored.uri)
    return times


def stamp(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {}
    ordered = sorted(values)
    return {
        "p50": statistics.median(ordered),
        "p99": ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def report(results: dict[str, Any]) -> None:
    burst_ = results.get("burst")
    if burst_:
        print(
            f"(1) burst: {burst_['succeeded']}/{burst_['jobs']} succeeded, "
            f"{burst_['attempts_above_1']} retried, {burst_['epoch_rows_not_1']} with other than "
            f"one epoch row; {burst_['wall_s']:.1f} s, {burst_['jobs_per_s']:.2f} jobs/s over 2 "
            "workers"
        )
        gap = burst_["pickup_gap_ms"]
        if gap:  # none when every job started before the first one ended
            print(f"    pick-up gap p50 {gap['p50']:.0f} ms, p99 {gap['p99']:.0f} ms")
        wait = burst_["queue_wait_s"]
        print(f"    queue wait p50 {wait['p50']:.1f} s, p99 {wait['p99']:.1f} s")
    single = results.get("dispatch")
    if single:
        latency = single["queued_to_running_ms"]
        print(
            f"(2) dispatch to an idle worker (queued → running), {single['jobs']} jobs: "
            f"p50 {latency['p50']:.0f} ms, p99 {latency['p99']:.0f} ms"
        )
    store = results.get("store")
    if store:
        print(f"(3) store, {store['model_mb']:.1f} MB .keras model, MB/s (median):")
        print(f"    {'':10}{'write':>10}{'fetch':>10}{'stream':>10}")
        for name in ("s3", "file"):
            row = store[name]
            print(f"    {name:10}{row['write']:>10.0f}{row['fetch']:>10.0f}{row['stream']:>10.0f}")
        print(f"    disk copy (baseline): {store['disk_copy']:.0f} MB/s")
        ratio = store["s3_over_disk_copy"]
        print(
            f"    s3 / copy {ratio['write']:>10.2f}{ratio['fetch']:>10.2f}{ratio['stream']:>10.2f}"
        )


if __name__ == "__main__":
    main()
