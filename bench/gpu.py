"""Training throughput on one device: float32 vs mixed precision vs steps per execution, on
the BN example (784-300-100-10, BatchNormalization after each activation) and a wider net
(784-2048-2048-10), in examples per second of steady epochs. Every ratio is against the
first row of its net, measured in the same run.

Plain Keras 3 on the JAX backend by default: the GPU machines this is for have JAX with
CUDA and no TensorFlow, and no package registry — bring Keras's wheels along
(bench/README.md, "gpu.py"). ``--device cpu`` runs the same table on this machine's CPU.

    python bench/gpu.py                         # the GPU, JAX backend
    python bench/gpu.py --device cpu --examples 12000 --epochs 3
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

#: Per ``--device``: JAX's platform (read when JAX initializes, so set before Keras loads).
PLATFORMS = {"gpu": "cuda", "cpu": "cpu"}

#: The variants per net: (label, dtype policy, steps per execution).
VARIANTS: list[tuple[str, str, int]] = [
    ("float32, 1 step per execution (a plain script)", "float32", 1),
    ("float32, 32 steps per execution", "float32", 32),
    ("mixed_bfloat16, 32 steps per execution", "mixed_bfloat16", 32),
    ("mixed_float16, 32 steps per execution", "mixed_float16", 32),
]
#: The nets: hidden layer widths.
NETS: dict[str, list[int]] = {"bn-example": [300, 100], "wide": [2048, 2048]}
DEFAULT_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=sorted(PLATFORMS), default="gpu")
    parser.add_argument("--backend", choices=["jax", "tensorflow"], default="jax")
    parser.add_argument("--epochs", type=int, default=3, help="the first one compiles")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument(
        "--examples", type=int, default=60_000, help="training examples (of Fashion-MNIST's)"
    )
    parser.add_argument(
        "--datasets",
        type=Path,
        default=DEFAULT_DATASETS,
        help="a folder holding fashion-mnist/*-ubyte.gz (shared/datasets)",
    )
    parser.add_argument("--json", type=Path, help="also write the rows here")
    return parser.parse_args()


def load_fashion_mnist(folder: Path, examples: int) -> tuple[Any, Any, str]:
    """The training split read from the IDX files (no download: the GPU machine has no
    network), scaled to [0, 1]; random data of the same shape when the files are absent."""
    import numpy as np

    images = folder / "fashion-mnist" / "train-images-idx3-ubyte.gz"
    labels = folder / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    if images.exists() and labels.exists():
        with gzip.open(images) as handle:
            x = np.frombuffer(handle.read(), np.uint8, offset=16).reshape(-1, 784)
        with gzip.open(labels) as handle:
            y = np.frombuffer(handle.read(), np.uint8, offset=8)
        source = f"Fashion-MNIST from {folder}"
    else:
        rng = np.random.default_rng(0)
        x = rng.integers(0, 256, (60_000, 784), dtype=np.uint8)
        y = rng.integers(0, 10, 60_000, dtype=np.uint8)
        source = f"random data of Fashion-MNIST's shape ({images} not found)"
    return x[:examples].astype("float32") / 255.0, y[:examples].astype("int32"), source


def build(keras: Any, widths: list[int]) -> Any:
    layers: list[Any] = [keras.Input((784,))]
    for width in widths:
        layers += [
            keras.layers.Dense(width, activation="elu", kernel_initializer="he_normal"),
            keras.layers.BatchNormalization(),
        ]
    # The softmax in float32 under any policy, as Keras's mixed-precision guide advises.
    layers.append(keras.layers.Dense(10, activation="softmax", dtype="float32"))
    return keras.Sequential(layers)


class EpochClock:
    def __init__(self, keras: Any) -> None:
        outer = self

        class Clock(keras.callbacks.Callback):  # type: ignore[misc, name-defined]
            def on_epoch_begin(self, epoch: int, logs: Any = None) -> None:
                outer.started = time.perf_counter()

            def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
                outer.seconds.append(time.perf_counter() - outer.started)

        self.started = 0.0
        self.seconds: list[float] = []
        self.callback = Clock()


def run(args: argparse.Namespace) -> dict[str, Any]:
    os.environ["KERAS_BACKEND"] = args.backend
    if args.backend == "jax":
        os.environ["JAX_PLATFORMS"] = PLATFORMS[args.device]
    else:
        os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
        if args.device == "cpu":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""
    import keras

    x, y, source = load_fashion_mnist(args.datasets, args.examples)
    devices = keras.distribution.list_devices()
    rows = []
    for net, widths in NETS.items():
        for label, policy, steps in VARIANTS:
            keras.utils.set_random_seed(42)
            keras.config.set_dtype_policy(policy)
            model = build(keras, widths)
            keras.config.set_dtype_policy("float32")
            optimizer = keras.optimizers.SGD(learning_rate=0.01, momentum=0.9)
            if policy == "mixed_float16":
                optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
            model.compile(
                optimizer=optimizer,
                loss="sparse_categorical_crossentropy",
                metrics=["accuracy"],
                steps_per_execution=steps,
            )
            clock = EpochClock(keras)
            history = model.fit(
                x,
                y,
                batch_size=args.batch_size,
                epochs=args.epochs,
                callbacks=[clock.callback],
                verbose=0,
            )
            steady = sorted(clock.seconds[1:] or clock.seconds)[len(clock.seconds[1:]) // 2]
            rows.append(
                {
                    "net": net,
                    "variant": label,
                    "policy": policy,
                    "steps_per_execution": steps,
                    "params": int(model.count_params()),
                    "first_epoch_s": clock.seconds[0],
                    "steady_epoch_s": steady,
                    "examples_per_s": len(x) / steady,
                    "final_loss": float(history.history["loss"][-1]),
                    "final_accuracy": float(history.history["accuracy"][-1]),
                }
            )
            print(f"  {net}: {label}: {len(x) / steady:,.0f} examples/s", flush=True)
            del model
            keras.backend.clear_session()
    return {
        "device": args.device,
        "devices": [str(device) for device in devices],
        "backend": keras.backend.backend(),
        "keras": keras.__version__,
        "data": source,
        "examples": len(x),
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "rows": rows,
    }


def print_table(result: dict[str, Any]) -> None:
    print(
        f"\n{result['backend']} backend on {', '.join(result['devices'])} "
        f"(Keras {result['keras']}); {result['examples']:,} examples of {result['data']}, "
        f"batch {result['batch_size']}, {result['epochs']} epochs (steady = median of 2..N)"
    )
    print(f"  {'net':<12}{'variant':<50}{'examples/s':>12}{'vs first':>10}{'loss':>8}")
    base: dict[str, float] = {}
    for row in result["rows"]:
        first = base.setdefault(row["net"], row["examples_per_s"])
        print(
            f"  {row['net']:<12}{row['variant']:<50}{row['examples_per_s']:>12,.0f}"
            f"{row['examples_per_s'] / first:>9.2f}×{row['final_loss']:>8.4f}"
        )


def main() -> None:
    args = parse_args()
    if args.epochs < 2:
        sys.exit("--epochs must be at least 2: the first epoch compiles")
    result = run(args)
    print_table(result)
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
