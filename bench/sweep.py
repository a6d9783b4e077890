"""Grid vs ASHA on the same space, in one run: the chapter's comparisons (activation ×
optimizer) on a Fashion-MNIST subset, through the real service. Both sweeps try the same
configurations; ASHA (Optuna's SuccessiveHalvingPruner, asynchronous) stops the worse
ones at its rungs. Reported: both trial tables, each sweep's best validation accuracy, the
epochs each trained, and the ratios — ASHA's epochs over the grid's, and the gap between
their best objectives in accuracy points.

    .venv/bin/python bench/sweep.py                  # ~4 min on 2 cores
    .venv/bin/python bench/sweep.py --train-examples 6000 --epochs 4   # quick check
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from keras_cache import DEFAULT_DATASETS, make_keras_home

from netkiln.harness import TERMINAL, Stack, create_api_key, process_env

ACTIVATIONS = ["relu", "leaky_relu", "elu", "selu"]
#: The chapter's optimizers, each at the learning rate the chapter uses it with.
OPTIMIZERS: list[dict[str, Any]] = [
    {"type": "SGD", "learning_rate": 0.01, "momentum": 0.9},
    {"type": "SGD", "learning_rate": 0.01, "momentum": 0.9, "nesterov": True},
    {"type": "RMSprop", "learning_rate": 0.001, "rho": 0.9},
    {"type": "Adam", "learning_rate": 0.001},
]


def base_spec(train_examples: int, epochs: int) -> dict[str, Any]:
    return {
        "name": "bench-sweep",
        "dataset": {
            "name": "fashion_mnist",
            "preprocessing": "scale",
            "limit": {"train": train_examples},
        },
        "model": {
            "input_shape": [28, 28],
            "layers": [
                {"type": "Flatten"},
                {
                    "type": "Dense",
                    "units": 100,
                    "activation": "relu",
                    "kernel_initializer": "he_normal",
                },
                {"type": "Dense", "units": 10, "activation": "softmax"},
            ],
        },
        "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
        "fit": {"epochs": epochs, "batch_size": 32, "validation_split": 0.1},
    }


def sweep_spec(args: argparse.Namespace, strategy: dict[str, Any]) -> dict[str, Any]:
    return {
        "kind": "sweep",
        "name": f"bench {strategy['type']}",
        "seed": 42,
        "base": base_spec(args.train_examples, args.epochs),
        "space": {
            "model.layers[1].activation": {"type": "choice", "values": ACTIVATIONS},
            "compile.optimizer": {"type": "choice", "values": OPTIMIZERS},
        },
        "objective": {"metric": "val_accuracy", "direction": "max"},
        "strategy": strategy,
        "parallelism": args.parallelism,
        # Both sweeps train the same trial specs: without this, ASHA would take the
        # grid's results (the reuse rule) instead of training.
        "reuse": False,
    }


def run_sweep(client: httpx.Client, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    started = time.perf_counter()
    response = client.post("/v1/jobs", json=spec)
    response.raise_for_status()
    sweep_id = response.json()["id"]
    while (job := client.get(f"/v1/jobs/{sweep_id}").json())["status"] not in TERMINAL:
        if time.perf_counter() - started > timeout:
            raise SystemExit(f"sweep {sweep_id} still {job['status']} after {timeout:.0f}s")
        time.sleep(1.0)
    wall = time.perf_counter() - started
    if job["status"] != "succeeded":
        raise SystemExit(f"sweep {sweep_id} {job['status']}: {job.get('error')}")
    table = client.get(f"/v1/jobs/{sweep_id}/trials").json()
    best = next(t for t in table["trials"] if t["number"] == table["best"])
    return {
        "sweep_id": sweep_id,
        "wall_s": wall,
        "epochs": sum(trial["epochs"] for trial in table["trials"]),
        "best": best,
        "trials": table["trials"],
    }


def _label(params: dict[str, Any]) -> str:
    optimizer = params["compile.optimizer"]
    name = optimizer["type"] + (" nesterov" if optimizer.get("nesterov") else "")
    return f"{params['model.layers[1].activation']:<10} {name} lr={optimizer['learning_rate']}"


def print_table(title: str, result: dict[str, Any]) -> None:
    print(
        f"\n{title}: {len(result['trials'])} trials, {result['epochs']} epochs, "
        f"{result['wall_s']:.0f} s"
    )
    print(f"  {'#':>3} {'state':<10} {'val_accuracy':>12} {'epochs':>6}  configuration")
    for trial in result["trials"]:
        objective = "" if trial["objective"] is None else f"{trial['objective']:.4f}"
        marker = " *" if trial["number"] == result["best"]["number"] else ""
        print(
            f"  {trial['number']:>3} {trial['state']:<10} {objective:>12} "
            f"{trial['epochs']:>6}  {_label(trial['params'])}{marker}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-examples", type=int, default=54_000)
    parser.add_argument("--epochs", type=int, default=8, help="the grid's, and ASHA's max")
    parser.add_argument("--min-epochs", type=int, default=1, help="ASHA's first rung")
    parser.add_argument("--reduction-factor", type=int, default=3)
    parser.add_argument("--parallelism", type=int, default=1, help="trials at once")
    parser.add_argument("--datasets", type=Path, default=DEFAULT_DATASETS)
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="netkiln-bench-sweep-"))
    try:
        keras_home = make_keras_home(root, args.datasets, copy_files=False)
        data_dir = root / "data"
        env = process_env(keras_home, {"NETKILN_DATA_DIR": str(data_dir)})
        (root / "logs").mkdir()
        stack = Stack(env, root / "logs")
        stack.start()
        try:
            key = create_api_key(f"sqlite:///{data_dir / 'netkiln.db'}")
            with stack.client(key, timeout=60) as client:
                print(
                    f"grid: {len(ACTIVATIONS) * len(OPTIMIZERS)} configurations × "
                    f"{args.epochs} epochs …",
                    flush=True,
                )
                grid = run_sweep(client, sweep_spec(args, {"type": "grid"}), args.timeout)
                asha_strategy = {
                    "type": "asha",
                    "min_epochs": args.min_epochs,
                    "max_epochs": args.epochs,
                    "reduction_factor": args.reduction_factor,
                    "configurations": "grid",
                }
                print("ASHA on the same configurations …", flush=True)
                asha = run_sweep(client, sweep_spec(args, asha_strategy), args.timeout)
        finally:
            stack.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print_table("grid", grid)
    print_table("ASHA", asha)
    gap = (grid["best"]["objective"] - asha["best"]["objective"]) * 100
    ratio = asha["epochs"] / grid["epochs"]
    print(
        f"\nbest val_accuracy: grid {grid['best']['objective']:.4f} "
        f"(#{grid['best']['number']}), ASHA {asha['best']['objective']:.4f} "
        f"(#{asha['best']['number']}): ASHA {gap:+.2f} points behind the grid\n"
        f"epochs: ASHA {asha['epochs']} / grid {grid['epochs']} = {ratio:.2f}× "
        f"(wall {asha['wall_s']:.0f} s / {grid['wall_s']:.0f} s = "
        f"{asha['wall_s'] / grid['wall_s']:.2f}×)\n"
        f"target: within 0.5 points using at most 1/3 of the epochs: "
        f"{'met' if gap <= 0.5 and ratio <= 1 / 3 else 'NOT met'}"
    )
    if args.json:
        args.json.write_text(
            json.dumps({"grid": grid, "asha": asha, "args": vars(args)}, indent=2, default=str)
        )


if __name__ == "__main__":
    main()
