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
    ``POST /v1/jobs`` of the same small spec; then as many dry runs of the BN example
    (``?dry_run=true``, target p50 < 20 ms).
(d) the job listing the web page polls, ``GET /v1/jobs?limit=50``, at c=8 with the table
    filled (by POSTs) to ``--list-jobs`` (1,000) jobs; listings never use the read cache.
(e) ``GET /v1/jobs/{id}`` at c=8 with no event stream open, then with ``--streams`` (200)
    open over ``--stream-jobs`` (50) queued jobs: the p50 ratio.
(a') (d') the status reads and the listing against ``netkiln api --workers 2``.

Every request sends an API key that the bench creates after migrating, as ``netkiln keys
create`` does (the API's default is ``NETKILN_AUTH=keys``). ``--only rss`` runs phase (c)
alone; ``--jobs 0`` skips it (no worker; the status reads read a queued job). The
processes start through ``netkiln.harness``, as the end-to-end tests start them; each
phase lives in ``bench/load/``.

Run from anywhere: ``.venv/bin/python bench/api_load.py [--backend both] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from load.backends import make_backend
from load.base import BenchError
from load.http_phases import (
    TARGET_DRY_RUN_P50_MS,
    TARGET_GET_P99_MS,
    TARGET_GET_RPS,
    dry_run_phase,
    floor_load,
    get_load,
    post_phase,
)
from load.list_streams import (
    LIST_PATH,
    TARGET_LIST_P99_MS,
    TARGET_LIST_RPS,
    TARGET_STREAMS_P50_RATIO,
    fill_jobs,
    list_load,
    streams_main,
    streams_phase,
)
from load.loadgen import WRK_SCRIPT, LoadGen, loadgen_main
from load.profiling import profile_get
from load.report import print_report
from load.worker_rss import TARGET_RSS_GROWTH_MB, api_rss_mb, worker_rss_phase
from procstats import other_bench_processes, wait_until_warm

from netkiln.harness import HarnessError, Stack, create_api_key


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
    stack = Stack(backend.env, backend.root)
    try:
        from models.migrate import upgrade  # what `netkiln db upgrade` runs

        upgrade(backend.database_url)
        key = create_api_key(backend.database_url, tenant="bench", name="api_load")
        loadgen = replace(loadgen, key=key)
        # The API first, then the worker: its warm-up is timed from its own start.
        api = stack.start_api()
        api_rss_start = api_rss_mb(api)
        base_url = stack.base_url

        with stack.client(key) as client:
            if args.jobs:
                worker = stack.start_worker()
                result["worker_warm_s"] = wait_until_warm(worker)
                print(f"  (c) worker RSS over {args.jobs} sequential digits jobs …", flush=True)
                result["worker_rss"], job_id = worker_rss_phase(client, worker, api, args.jobs)
                if not job_id:
                    raise BenchError(f"no job succeeded:\n{worker.tail()}")
                worker.stop()
                if args.only == "rss":
                    return result
            else:  # --jobs 0: no worker; the status reads read a queued job
                job_id = fill_jobs(client, 1) and client.get("/v1/jobs").json()["items"][0]["id"]

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
            result["dry_run"] = dry_run_phase(client, args.posts)
            print(
                f"    dry run of the BN example: p50 {result['dry_run']['p50_ms']:.2f} ms, "
                f"p99 {result['dry_run']['p99_ms']:.2f} ms",
                flush=True,
            )

            print(f"  (d) GET {LIST_PATH}, {args.list_jobs} jobs in the table …", flush=True)
            jobs = fill_jobs(client, args.list_jobs)
            result["list"] = [list_load(loadgen, base_url, api, args, "netkiln api", jobs)]

            print(f"  (e) GET /v1/jobs/{{id}} with {args.streams} event streams open …", flush=True)
            queued = client.get("/v1/jobs", params={"status": "queued", "limit": args.stream_jobs})
            stream_jobs = [item["id"] for item in queued.json()["items"]]
            result["streams"] = streams_phase(loadgen, base_url, job_id, stream_jobs, api, args)
        result["api_rss_mb"] = {"start": api_rss_start, "end": api_rss_mb(api)}
        api.stop()

        if args.workers2:
            multi = stack.start_api(workers=2)
            print("  (a') GET against netkiln api --workers 2 …", flush=True)
            label = "netkiln api --workers 2"
            result["get"] += get_load(loadgen, base_url, job_id, multi, args, label)
            result["floor"].append(floor_load(loadgen, base_url, multi, args, label))
            result["list"].append(list_load(loadgen, base_url, multi, args, label, jobs))
            multi.stop()
    except (BenchError, HarnessError) as exc:
        result["error"] = str(exc)
        print(f"  {name} failed: {exc}", file=sys.stderr, flush=True)
    finally:
        stack.stop()
        backend.close()
    return result


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_loadgen":
        loadgen_main(sys.argv[2:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_streams":
        streams_main(sys.argv[2:])
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
    parser.add_argument(
        "--jobs", type=int, default=100, help="worker RSS phase (0: skip it, no worker)"
    )
    parser.add_argument("--list-jobs", type=int, default=1000, help="jobs in the table for (d)")
    parser.add_argument("--streams", type=int, default=200, help="event streams open in (e)")
    parser.add_argument(
        "--stream-jobs", type=int, default=50, help="queued jobs the (e) streams follow"
    )
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
                    "dry_run_p50_ms": TARGET_DRY_RUN_P50_MS,
                    "list_rps": TARGET_LIST_RPS,
                    "list_p99_ms": TARGET_LIST_P99_MS,
                    "streams_p50_ratio": TARGET_STREAMS_P50_RATIO,
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
