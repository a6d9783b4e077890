"""Does transfer help on Géron's task B? net_B_on_A vs net_B from scratch.

On real Fashion-MNIST (``../shared/datasets``), through the service (``netkiln up``,
embedded default): net_A trains once on task A (8 classes, no sandals or shirts); then, for
each seed, net_B_on_A (net_A minus its output layer, a new sigmoid head, 4 epochs frozen
then 16 unfrozen) and net_B (the same architecture from scratch, 20 epochs) train on the
same 200 task-B images (sandal vs shirt). Both are evaluated on all 2,000 task-B test
images. Specs: ``examples/transfer_a_to_b/``.

Run: ``.venv/bin/python bench/transfer.py [--seeds 5] [--net-a-epochs 20] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

import httpx
from keras_cache import DEFAULT_DATASETS, REPO, make_keras_home

from netkiln.harness import HarnessError, process_env, start_up, wait_for_job

EXAMPLES = REPO / "examples" / "transfer_a_to_b"


def load(name: str) -> dict[str, Any]:
    spec: dict[str, Any] = json.loads((EXAMPLES / f"{name}.json").read_text())
    return spec


def run_job(client: httpx.Client, spec: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    response = client.post("/v1/jobs", json=spec)
    response.raise_for_status()
    try:
        job = wait_for_job(client, response.json()["id"], timeout=timeout, poll=0.5)
    except HarnessError as exc:
        raise SystemExit(f"{spec.get('name')}: {exc}") from None
    if job["status"] != "succeeded":
        raise SystemExit(f"{spec.get('name')} {job['status']}: {job['error']}")
    return job


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--net-a-epochs", type=int, default=20)
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="netkiln-transfer-"))
    env = process_env(make_keras_home(root, args.datasets, copy_files=False), {})
    try:
        service, base_url, key = start_up(root / "data", env, root / "service.log")
    except HarnessError as exc:
        raise SystemExit(str(exc)) from None
    results: dict[str, Any] = {"seeds": [], "net_a": {}}
    try:
        headers = {"Authorization": f"Bearer {key}"}
        with httpx.Client(base_url=base_url, timeout=30, headers=headers) as client:
            net_a_spec = load("net_A")
            net_a_spec["fit"]["epochs"] = args.net_a_epochs
            net_a = run_job(client, net_a_spec)
            results["net_a"] = {"epochs": args.net_a_epochs, **net_a["test_metrics"]}
            print(
                f"net_A on task A ({args.net_a_epochs} epochs): test accuracy "
                f"{net_a['test_metrics']['accuracy']:.4f}",
                flush=True,
            )
            for seed in range(1, args.seeds + 1):
                on_a = json.loads(
                    json.dumps(load("net_B_on_A")).replace("NET_A_JOB_ID", net_a["id"])
                )
                scratch = load("net_B")
                row: dict[str, Any] = {"seed": seed}
                for label, spec in (("net_B_on_A", on_a), ("net_B", scratch)):
                    spec["seed"] = seed
                    job = run_job(client, spec)
                    row[label] = job["test_metrics"]["accuracy"]
                results["seeds"].append(row)
                print(
                    f"seed {seed}: net_B_on_A {row['net_B_on_A']:.4f}  net_B {row['net_B']:.4f}",
                    flush=True,
                )
    finally:
        service.stop()

    accuracy_on_a: list[float] = [seed_row["net_B_on_A"] for seed_row in results["seeds"]]
    accuracy_scratch: list[float] = [seed_row["net_B"] for seed_row in results["seeds"]]
    error_ratio = (1 - statistics.mean(accuracy_on_a)) / max(
        1 - statistics.mean(accuracy_scratch), 1e-9
    )
    results["summary"] = {
        "net_B_on_A_mean": statistics.mean(accuracy_on_a),
        "net_B_on_A_stdev": statistics.pstdev(accuracy_on_a),
        "net_B_mean": statistics.mean(accuracy_scratch),
        "net_B_stdev": statistics.pstdev(accuracy_scratch),
        "error_rate_ratio": error_ratio,
        "wins": sum(a > b for a, b in zip(accuracy_on_a, accuracy_scratch, strict=True)),
    }
    summary = results["summary"]
    print(f"\ntask B test accuracy over {len(accuracy_on_a)} seeds (200 training images):")
    print(f"  net_B_on_A  {summary['net_B_on_A_mean']:.4f} ± {summary['net_B_on_A_stdev']:.4f}")
    print(f"  net_B       {summary['net_B_mean']:.4f} ± {summary['net_B_stdev']:.4f}")
    print(
        f"  error rate net_B_on_A / net_B: {error_ratio:.2f}; "
        f"transfer wins {summary['wins']} of {len(accuracy_on_a)} seeds"
    )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
