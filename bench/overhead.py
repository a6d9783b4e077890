"""How much slower is a netkiln job than the same training as a plain Keras script?

Trains the BN_AFTER_ACTIVATION Fashion-MNIST MLP (a) as ``bench/plain_keras.py`` in a fresh
process and (b) through ``netkiln up`` (embedded default: SQLite + filesystem broker), the
arms alternating for ``--repeats`` rounds, and prints the medians and service/plain ratios.

Both arms read the same four IDX files through Keras's ``get_file`` cache: a temporary
``KERAS_HOME`` whose ``datasets/fashion-mnist/`` links to ``--datasets`` (default
``<repo>/../shared/datasets/fashion-mnist``), so nothing is downloaded.

Run from anywhere: ``.venv/bin/python bench/overhead.py [--repeats 3] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import os
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import httpx
from keras_cache import DEFAULT_DATASETS, REPO, make_keras_home
from procstats import children_cpu_s, machine_busy_s, wait_until_warm

from models.spec.examples import BN_AFTER_ACTIVATION
from netkiln.harness import (
    TERMINAL,
    HarnessError,
    ProcessStat,
    process_env,
    session_processes,
    start_up,
)


class ArmFailed(Exception):
    """One arm of a round did not produce a result (its message says why, with logs)."""


# --------------------------------------------------------------------------- plain arm


def run_plain(
    round_dir: Path, env: dict[str, str], epochs: int, batch_size: int, *extra: str
) -> dict[str, Any]:
    command = [
        sys.executable,
        str(REPO / "bench" / "plain_keras.py"),
        f"--epochs={epochs}",
        f"--batch-size={batch_size}",
        f"--validation-split={BN_AFTER_ACTIVATION['fit']['validation_split']}",
        f"--seed={BN_AFTER_ACTIVATION['seed']}",
        f"--out={round_dir / 'plain-models'}",
        *extra,
    ]
    busy_before, own_before = machine_busy_s(), children_cpu_s()
    start = time.perf_counter()
    process = subprocess.run(command, env=env, cwd=round_dir, capture_output=True, text=True)
    wall = time.perf_counter() - start
    own = children_cpu_s() - own_before
    foreign = machine_busy_s() - busy_before - own
    (round_dir / "plain.log").write_text(process.stdout + process.stderr)
    lines = [line for line in process.stdout.splitlines() if line.startswith("PLAIN_RESULT ")]
    if process.returncode != 0 or not lines:
        raise ArmFailed(f"plain arm failed ({process.returncode}):\n{process.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(lines[-1].removeprefix("PLAIN_RESULT "))
    result["wall_s"] = wall
    result["cpu_s"] = own
    # CPU other processes on this machine used meanwhile: noise, if it is large.
    result["foreign_cpu_s"] = foreign
    result["accuracy"] = result["test"].get("accuracy")
    result["steady_epoch_s"] = _steady(result["epoch_s"])
    return result


# --------------------------------------------------------------------------- service arm


def run_service(
    round_dir: Path, env: dict[str, str], spec: dict[str, Any], poll: float, timeout: float
) -> dict[str, Any]:
    data_dir = round_dir / "service-data"
    spawned = time.perf_counter()
    try:
        process, base_url, key = start_up(data_dir, env, round_dir / "service.log")
    except HarnessError as exc:
        raise ArmFailed(str(exc)) from None
    try:
        ready = time.perf_counter()
        wait_until_warm(process)
        warmed = time.perf_counter()

        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
            cpu_before = {p.pid: p for p in session_processes(process.pid)}
            busy_before = machine_busy_s()
            submitted = time.perf_counter()
            response = client.post("/v1/jobs", json=spec)
            response.raise_for_status()
            job_id = response.json()["id"]
            posted = time.perf_counter()
            polls = 0
            while True:
                job = client.get(f"/v1/jobs/{job_id}").json()
                polls += 1
                if job["status"] in TERMINAL:
                    observed = time.perf_counter()
                    cpu_after = session_processes(process.pid)
                    busy = machine_busy_s() - busy_before
                    break
                if time.perf_counter() - submitted > timeout:
                    raise ArmFailed(f"job {job_id} still {job['status']} after {timeout}s")
                time.sleep(poll)
        if job["status"] != "succeeded":
            raise ArmFailed(f"job {job_id} {job['status']}: {job.get('error')}\n{process.tail()}")
    except HarnessError as exc:
        raise ArmFailed(str(exc)) from None
    finally:
        stopping = time.perf_counter()
        process.stop()
        shutdown_s = time.perf_counter() - stopping

    cpu_by_role = _cpu_by_role(process.pid, cpu_before, cpu_after)
    own_cpu = sum(cpu_by_role.values())
    started, finished = _instant(job["started_at"]), _instant(job["finished_at"])
    created = _instant(job["created_at"])
    test = job.get("test_metrics") or {}
    epoch_ends = _epoch_ends(data_dir / "netkiln.db")
    epoch_s = [(end - start).total_seconds() for start, end in pairwise([started, *epoch_ends])]
    return {
        "job_id": job_id,
        "submit_to_succeeded_s": observed - submitted,
        "post_s": posted - submitted,
        "polls": polls,
        "started_to_finished_s": (finished - started).total_seconds(),
        "queued_s": (started - created).total_seconds(),
        # From the last epoch's metrics row to finished_at: evaluate, save both files, commit.
        "after_fit_s": (finished - epoch_ends[-1]).total_seconds() if epoch_ends else None,
        "epoch_s": epoch_s,
        "steady_epoch_s": _steady(epoch_s),
        "test": test,
        "accuracy": test.get("accuracy"),
        "params": (job.get("params") or {}).get("total"),
        "execution": job.get("execution"),
        "versions": job.get("versions"),
        "cpu_s": own_cpu,
        "cpu_by_role_s": cpu_by_role,
        # The bench's own polling client is counted here too (small).
        "foreign_cpu_s": busy - own_cpu,
        "startup_to_ready_s": ready - spawned,
        "ready_to_warm_s": warmed - ready,
        "shutdown_rc": process.poll(),
        "shutdown_s": shutdown_s,
        "log": str(process.log),
    }


def _cpu_by_role(
    root: int, before: dict[int, ProcessStat], after: list[ProcessStat]
) -> dict[str, float]:
    """CPU seconds each service process used during the job: ``netkiln up`` (API +
    supervisor), the Celery main process, and its pool process(es) that train."""
    roles: dict[str, float] = {}
    by_pid = {p.pid: p for p in after}
    for proc in after:
        if proc.pid == root:
            role = "api (netkiln up)"
        elif proc.ppid == root:
            role = "celery main"
        elif by_pid.get(proc.ppid) is not None and by_pid[proc.ppid].ppid == root:
            role = "celery pool (training)"
        else:
            role = "other"
        start = before[proc.pid].cpu_s if proc.pid in before else 0.0
        roles[role] = roles.get(role, 0.0) + proc.cpu_s - start
    return roles


def _instant(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _epoch_ends(db_path: Path) -> list[datetime]:
    """When each epoch's metrics row was written (best effort: reads the embedded DB)."""
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db_path}?mode=ro", uri=True)) as db:
            rows = db.execute("SELECT created_at FROM epoch_metrics ORDER BY epoch").fetchall()
    except sqlite3.Error:
        return []
    return [_instant(str(row[0])) for row in rows]


def _steady(epoch_s: list[float]) -> float | None:
    """Median epoch time without the first epoch (tracing, warm-up)."""
    return statistics.median(epoch_s[1:]) if len(epoch_s) > 1 else None


# --------------------------------------------------------------------------- report


def _median(runs: list[dict[str, Any]], key: str) -> float | None:
    values = [run[key] for run in runs if run.get(key) is not None]
    return statistics.median(values) if values else None


def summarize(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    plain = [r["plain"] for r in rounds]
    service = [r["service"] for r in rounds]
    p = {
        k: _median(plain, k)
        for k in (
            "cpu_s",
            "foreign_cpu_s",
            "wall_s",
            "fit_s",
            "work_s",
            "import_s",
            "load_s",
            "evaluate_s",
            "save_s",
            "steady_epoch_s",
            "accuracy",
        )
    }
    s = {
        k: _median(service, k)
        for k in (
            "cpu_s",
            "foreign_cpu_s",
            "submit_to_succeeded_s",
            "started_to_finished_s",
            "queued_s",
            "after_fit_s",
            "steady_epoch_s",
            "accuracy",
            "startup_to_ready_s",
            "ready_to_warm_s",
        )
    }

    def ratio(a: float | None, b: float | None) -> float | None:
        return a / b if a is not None and b else None

    return {
        "plain": p,
        "service": s,
        "ratios": {
            "submit_to_succeeded_over_plain_wall": ratio(s["submit_to_succeeded_s"], p["wall_s"]),
            "started_to_finished_over_plain_fit": ratio(s["started_to_finished_s"], p["fit_s"]),
            "started_to_finished_over_plain_work": ratio(s["started_to_finished_s"], p["work_s"]),
            "steady_epoch": ratio(s["steady_epoch_s"], p["steady_epoch_s"]),
        },
    }


def _fmt(value: float | None, unit: str = "s") -> str:
    if value is None:
        return "-"
    return (
        f"{value:.4f}" if unit == "acc" else (f"{value:.3f}×" if unit == "x" else f"{value:.2f} s")
    )


def _roles(roles: dict[str, float] | None) -> str:
    return ", ".join(f"{name} {value:.1f} s" for name, value in (roles or {}).items())


def print_report(summary: dict[str, Any], rounds: list[dict[str, Any]], args: Any) -> None:
    p, s, r = summary["plain"], summary["service"], summary["ratios"]
    rows = [
        (
            "plain wall (process start→exit) vs service POST→succeeded seen",
            _fmt(p["wall_s"]),
            _fmt(s["submit_to_succeeded_s"]),
            _fmt(r["submit_to_succeeded_over_plain_wall"], "x"),
        ),
        (
            "plain fit (model.fit) vs service started_at→finished_at",
            _fmt(p["fit_s"]),
            _fmt(s["started_to_finished_s"]),
            _fmt(r["started_to_finished_over_plain_fit"], "x"),
        ),
        (
            "like for like: plain load→saved vs service started_at→finished_at",
            _fmt(p["work_s"]),
            _fmt(s["started_to_finished_s"]),
            _fmt(r["started_to_finished_over_plain_work"], "x"),
        ),
        (
            "steady epoch (median of epochs 2..N)",
            _fmt(p["steady_epoch_s"]),
            _fmt(s["steady_epoch_s"]),
            _fmt(r["steady_epoch"], "x"),
        ),
        ("test accuracy", _fmt(p["accuracy"], "acc"), _fmt(s["accuracy"], "acc"), ""),
    ]
    title = (
        f"netkiln overhead: BN_AFTER_ACTIVATION, {args.epochs} epochs, batch {args.batch_size}, "
        f"median of {len(rounds)} round(s)"
    )
    try:
        from rich.console import Console
        from rich.table import Table

        table = Table(title=title)
        for header, justify in (
            ("measure", "left"),
            ("plain Keras", "right"),
            ("netkiln service", "right"),
            ("service / plain", "right"),
        ):
            table.add_column(header, justify=justify)  # type: ignore[arg-type]
        for row in rows:
            table.add_row(*row)
        Console(width=120).print(table)
    except ImportError:
        print(title)
        for row in rows:
            print(f"  {row[0]:<68} {row[1]:>10} {row[2]:>10} {row[3]:>8}")

    plain0, service0 = rounds[0]["plain"], rounds[0]["service"]
    print(
        "\nnotes:\n"
        f"- plain wall includes interpreter start + TF/Keras import ({_fmt(p['import_s'])}), "
        f"data load ({_fmt(p['load_s'])}), evaluate ({_fmt(p['evaluate_s'])}), "
        f"save .keras+.h5 ({_fmt(p['save_s'])}).\n"
        "- service worker is warm: TF is imported when the Celery pool process starts; the bench"
        " waits until the worker has TF loaded and is idle before POSTing"
        f" (startup→/readyz {_fmt(s['startup_to_ready_s'])}, then →warm"
        f" {_fmt(s['ready_to_warm_s'])}; not counted).\n"
        f"- service POST→succeeded includes queue latency created→started ({_fmt(s['queued_s'])},"
        f" filesystem broker polls every 0.25 s), evaluate+save+commit after the last epoch"
        f" ({_fmt(s['after_fit_s'])}), and up to {args.poll:g} s of status polling.\n"
        f"- params: plain {plain0.get('params')}, service {service0.get('params')}; "
        f"service shutdown rc {service0.get('shutdown_rc')}"
        f" in {_fmt(service0.get('shutdown_s'))}.\n"
        f"- machine: {os.cpu_count()} CPUs; versions {service0.get('versions')}\n"
        f"- CPU used by the arm itself: plain {_fmt(p['cpu_s'])}, service {_fmt(s['cpu_s'])}"
        f" (round 1 by process: {_roles(service0.get('cpu_by_role_s'))}).\n"
        f"- CPU used by other processes on this machine meanwhile (noise):"
        f" plain {_fmt(p['foreign_cpu_s'])}, service {_fmt(s['foreign_cpu_s'])}."
    )
    if len(rounds) > 1:
        print("\nper round: plain wall / fit, service submit→succeeded / started→finished")
        for index, round_ in enumerate(rounds, 1):
            pl, sv = round_["plain"], round_["service"]
            print(
                f"  {index}: {_fmt(pl['wall_s'])} / {_fmt(pl['fit_s'])}, "
                f"{_fmt(sv['submit_to_succeeded_s'])} / {_fmt(sv['started_to_finished_s'])}"
            )
    print("\nper-epoch seconds, round 1:")
    print("  plain:  ", " ".join(f"{x:.2f}" for x in plain0["epoch_s"]))
    print("  service:", " ".join(f"{x:.2f}" for x in service0["epoch_s"]))
    print("  (service epoch 1 counts from started_at, so it includes data load and build)")


# --------------------------------------------------------------------------- main


def run_round(
    root: Path, index: int, args: Any, env: dict[str, str], spec: dict[str, Any]
) -> dict[str, Any]:
    round_dir = root / f"round-{index}"
    round_dir.mkdir()
    print(f"round {index}/{args.repeats}: plain Keras …", flush=True)
    plain = run_plain(round_dir, env, args.epochs, args.batch_size)
    print(
        f"  wall {_fmt(plain['wall_s'])}, fit {_fmt(plain['fit_s'])}, "
        f"accuracy {_fmt(plain['accuracy'], 'acc')}",
        flush=True,
    )
    print(f"round {index}/{args.repeats}: netkiln service …", flush=True)
    service = run_service(round_dir, env, spec, args.poll, args.timeout)
    print(
        f"  submit→succeeded {_fmt(service['submit_to_succeeded_s'])}, "
        f"started→finished {_fmt(service['started_to_finished_s'])}, "
        f"accuracy {_fmt(service['accuracy'], 'acc')}",
        flush=True,
    )
    return {"plain": plain, "service": service}


#: The execution options the per-option table compares (``fit`` fields), the first the
#: baseline: one step per execution, as a plain script runs.
OPTIONS: list[tuple[str, dict[str, Any]]] = [
    ("steps_per_execution 1 (a plain script's)", {"steps_per_execution": 1}),
    ("steps_per_execution auto (the default plan)", {}),
    ("auto + jit_compile true (XLA)", {"jit_compile": True}),
    ("auto + precision mixed_bfloat16", {"precision": "mixed_bfloat16"}),
]
#: Fashion-MNIST's training examples after the spec's validation_split of 0.1.
TRAIN_EXAMPLES = 54_000


def run_options(
    root: Path, args: Any, env: dict[str, str], spec: dict[str, Any]
) -> list[dict[str, Any]]:
    results = []
    for index, (label, fit) in enumerate(OPTIONS):
        option_spec = copy.deepcopy(spec)
        option_spec["fit"].update(epochs=args.option_epochs, **fit)
        option_dir = root / f"option-{index}"
        option_dir.mkdir()
        print(f"option {index + 1}/{len(OPTIONS)}: {label} …", flush=True)
        result = run_service(option_dir, env, option_spec, args.poll, args.timeout)
        [plan] = result["execution"]
        achieved = 6 * result["params"] * TRAIN_EXAMPLES / result["steady_epoch_s"] / 1e9
        results.append(
            {
                "option": label,
                "fit": fit,
                "steady_epoch_s": result["steady_epoch_s"],
                "accuracy": result["accuracy"],
                "steps_per_execution": plan["steps_per_execution"],
                "achieved_gflops": achieved,
                "device_gflops": plan["device_gflops"],
                "params": result["params"],
            }
        )
    return results


#: Input pipelines the table compares in plain Keras (bench/plain_keras.py --pipeline), at
#: the steps per execution the default plan chose: the service's (Keras's array adapter,
#: which prefetches from memory) against explicit tf.data pipelines.
PIPELINE_ROWS: list[tuple[str, str]] = [
    ("input: arrays, Keras's adapter (the service's)", "arrays"),
    ("input: tf.data cache + shuffle + prefetch", "tf-data-cache-prefetch"),
    ("input: tf.data cache + shuffle, no prefetch", "tf-data-cache"),
]


def run_pipelines(
    root: Path, args: Any, env: dict[str, str], steps_per_execution: int, params: int
) -> list[dict[str, Any]]:
    results = []
    for index, (label, pipeline) in enumerate(PIPELINE_ROWS):
        row_dir = root / f"pipeline-{index}"
        row_dir.mkdir()
        print(f"pipeline {index + 1}/{len(PIPELINE_ROWS)}: {label} …", flush=True)
        result = run_plain(
            row_dir,
            env,
            args.option_epochs,
            args.batch_size,
            f"--pipeline={pipeline}",
            f"--steps-per-execution={steps_per_execution}",
        )
        achieved = 6 * params * TRAIN_EXAMPLES / result["steady_epoch_s"] / 1e9
        results.append(
            {
                "option": label,
                "steady_epoch_s": result["steady_epoch_s"],
                "accuracy": result["accuracy"],
                "steps_per_execution": steps_per_execution,
                "achieved_gflops": achieved,
            }
        )
    return results


def print_plan(service: dict[str, Any]) -> None:
    """The service's execution plan, and the arithmetic rate it reached against the rate
    its worker measured on a dense matmul."""
    [plan] = service["execution"]
    achieved = 6 * service["params"] * TRAIN_EXAMPLES / service["steady_epoch_s"] / 1e9
    print(
        f"\nservice plan: {plan['steps_per_execution']} steps per execution "
        f"({plan['reason']}); achieved {achieved:.1f} GFLOP/s in a steady epoch, "
        f"{achieved / plan['device_gflops']:.0%} of the {plan['device_gflops']:.0f} GFLOP/s "
        "the worker measured on a dense matmul"
    )


def print_options(options: list[dict[str, Any]], args: Any) -> None:
    base = options[0]["steady_epoch_s"]
    print(f"\nper option, {args.option_epochs} epochs each (steady epoch = median of 2..N):")
    print(f"  {'option':<46}{'spe':>5}{'epoch s':>9}{'vs 1':>7}{'accuracy':>10}{'GFLOP/s':>9}")
    for row in options:
        print(
            f"  {row['option']:<46}{row['steps_per_execution']:>5}"
            f"{row['steady_epoch_s']:>9.2f}{row['steady_epoch_s'] / base:>6.2f}×"
            f"{row['accuracy']:>10.4f}{row['achieved_gflops']:>9.1f}"
        )
    print(
        f"  achieved GFLOP/s = 6 × params × {TRAIN_EXAMPLES:,} examples / steady epoch; the "
        f"worker measured {options[0]['device_gflops']:.0f} GFLOP/s on a dense 512² matmul"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of plain then service")
    parser.add_argument(
        "--datasets",
        type=Path,
        default=DEFAULT_DATASETS,
        help="folder with fashion-mnist/ (or the four IDX files themselves)",
    )
    parser.add_argument("--copy", action="store_true", help="copy the IDX files, not symlink")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--poll", type=float, default=0.2, help="job status poll interval (s)")
    parser.add_argument("--timeout", type=float, default=3600, help="per job (s)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument(
        "--options",
        action="store_true",
        help="also train through the service once per execution option (OPTIONS), "
        "--option-epochs each: the table that justifies the plan's defaults",
    )
    parser.add_argument("--option-epochs", type=int, default=5)
    args = parser.parse_args()

    # SIGTERM (timeout, a supervisor) unwinds like Ctrl-C: the service is stopped and the
    # temporary folder removed by the finally blocks.
    signal.signal(signal.SIGTERM, lambda signum, _frame: sys.exit(128 + signum))
    spec = copy.deepcopy(BN_AFTER_ACTIVATION)
    spec["fit"].update(epochs=args.epochs, batch_size=args.batch_size)

    root = Path(tempfile.mkdtemp(prefix="netkiln-bench-"))
    try:
        keras_home = make_keras_home(root, args.datasets, copy_files=args.copy)
        # No NETKILN_* from the caller: the service runs on its embedded default.
        env = process_env(keras_home, {})
        rounds = []
        failure = None
        for index in range(1, args.repeats + 1):
            try:
                rounds.append(run_round(root, index, args, env, spec))
            except ArmFailed as exc:
                failure = f"round {index} failed: {exc}"
                print(failure, file=sys.stderr, flush=True)
                break
        if not rounds:
            raise SystemExit(1)
        summary = summarize(rounds)
        if args.options:
            summary["options"] = run_options(root, args, env, spec)
            auto = summary["options"][1]
            summary["options"] += run_pipelines(
                root,
                args,
                env,
                auto["steps_per_execution"],
                auto["params"],
            )
        print()
        print_report(summary, rounds, args)
        print_plan(rounds[0]["service"])
        if args.options:
            print_options(summary["options"], args)
        if args.json:
            config = {k: v for k, v in vars(args).items() if k not in {"json"}}
            document = {"config": config, "rounds": rounds, "failure": failure, **summary}
            args.json.write_text(json.dumps(document, indent=2, default=str) + "\n")
            print(f"\nwrote {args.json}")
        if failure:
            print(f"\nonly {len(rounds)} of {args.repeats} rounds completed", file=sys.stderr)
            raise SystemExit(1)
    finally:
        if args.keep:
            print(f"kept {root}")
        else:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
