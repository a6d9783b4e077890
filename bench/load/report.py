"""The tables ``api_load`` prints, one per phase, and the notes under them."""

from __future__ import annotations

import os
from typing import Any

from load.http_phases import TARGET_DRY_RUN_P50_MS, TARGET_GET_P99_MS, TARGET_GET_RPS
from load.list_streams import (
    LIST_PATH,
    TARGET_LIST_P99_MS,
    TARGET_LIST_RPS,
    TARGET_STREAMS_P50_RATIO,
)
from load.loadgen import LoadGen
from load.worker_rss import TARGET_RSS_GROWTH_MB


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
    dry_rows = [
        [
            r["backend"],
            str(d["runs"]),
            _f(d["p50_ms"]),
            _f(d["p90_ms"]),
            _f(d["p99_ms"]),
            str(d["non_200"]),
            _ok(d["meets_p50"]),
        ]
        for r in results
        if (d := r.get("dry_run"))
    ]
    _table(
        f"(b') POST /v1/jobs?dry_run=true, BN example, sequential  "
        f"[target: p50 < {TARGET_DRY_RUN_P50_MS:g} ms]",
        ["backend", "runs", "p50 ms", "p90 ms", "p99 ms", "non-200", "<20ms"],
        dry_rows,
    )
    list_rows = [
        [
            *_load_cells(r, row),
            str(row["jobs_in_table"]),
            _ok(row["meets_rps"]),
            _ok(row["meets_p99"]),
        ]
        for r in results
        for row in r.get("list", [])
    ]
    _table(
        f"(d) GET {LIST_PATH}, uncached, c=8  "
        f"[targets: ≥ {TARGET_LIST_RPS:.0f} req/s, p99 < {TARGET_LIST_P99_MS:g} ms]",
        [*LOAD_HEADERS, "jobs", "≥1000/s", "p99<50ms"],
        list_rows,
    )
    stream_rows = [
        [
            r["backend"],
            f"{s['streams']} over {s['stream_jobs']} jobs",
            _f(s["idle"]["p50_ms"]),
            _f(s["with_streams"]["p50_ms"]),
            _f(s["p50_ratio"]),
            _f(s["idle"]["rps"], 0),
            _f(s["with_streams"]["rps"], 0),
            _ok(s["meets_ratio"]),
        ]
        for r in results
        if (s := r.get("streams"))
    ]
    _table(
        "(e) GET /v1/jobs/{id}, c=8, netkiln api: idle vs event streams open  "
        f"[target: p50 ratio ≤ {TARGET_STREAMS_P50_RATIO:g}]",
        ["backend", "streams", "idle p50", "streams p50", "ratio", "idle req/s", "req/s", "≤2x"],
        stream_rows,
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
