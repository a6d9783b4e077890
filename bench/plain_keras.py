"""The plain-Keras baseline for ``bench/overhead.py``: the BN_AFTER_ACTIVATION MLP written
with ordinary Keras calls (no netkiln code), trained the way a notebook would train it.

Same unit of work as a netkiln job: load Fashion-MNIST through
``keras.datasets.fashion_mnist.load_data()`` (so ``$KERAS_HOME/datasets/fashion-mnist``),
scale by 1/255, build, compile, fit with ``validation_split``, evaluate on the test split,
save ``.keras`` and ``.h5``. The last stdout line is ``PLAIN_RESULT <json>`` with phase
times (``time.perf_counter`` seconds) for the caller to parse.
"""

from __future__ import annotations

import time

T_START = time.perf_counter()  # before the heavy imports: import time is part of the work

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
from itertools import pairwise  # noqa: E402
from pathlib import Path  # noqa: E402
from typing import Any  # noqa: E402

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

T_IMPORTED = time.perf_counter()


class EpochClock(keras.callbacks.Callback):
    """Epoch-end timestamps only (no batch hooks, so it adds no per-step work)."""

    def __init__(self) -> None:
        super().__init__()
        self.ends: list[float] = []

    def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        self.ends.append(time.perf_counter())


def _tf_data(prefetch: bool) -> Any:
    def pipelines(train: Any, validation: Any, batch_size: int, seed: int) -> tuple[Any, Any]:
        import tensorflow as tf

        def batched(arrays: Any, shuffle: bool) -> Any:
            dataset = tf.data.Dataset.from_tensor_slices(arrays).cache()
            if shuffle:
                dataset = dataset.shuffle(len(arrays[0]), seed=seed, reshuffle_each_iteration=True)
            dataset = dataset.batch(batch_size)
            return dataset.prefetch(tf.data.AUTOTUNE) if prefetch else dataset

        return batched(train, True), batched(validation, False)

    return pipelines


#: Input pipelines to compare with Keras's array adapter (bench/overhead.py --options).
PIPELINES = {
    "arrays": None,
    "tf-data-cache-prefetch": _tf_data(prefetch=True),
    "tf-data-cache": _tf_data(prefetch=False),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--validation-split", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--out", type=Path, required=True, help="folder for the saved models")
    parser.add_argument("--steps-per-execution", type=int, default=1)
    parser.add_argument(
        "--pipeline",
        choices=sorted(PIPELINES),
        default="arrays",
        help="arrays: fit(x, y), Keras's array adapter (what the service uses); the others "
        "an explicit tf.data pipeline",
    )
    args = parser.parse_args()

    keras.utils.set_random_seed(args.seed)
    t_load = time.perf_counter()
    (x_train, y_train), (x_test, y_test) = keras.datasets.fashion_mnist.load_data()
    x_train = x_train.astype("float32") / 255.0
    x_test = x_test.astype("float32") / 255.0

    t_build = time.perf_counter()
    model = keras.Sequential(
        [
            keras.Input(shape=(28, 28)),
            keras.layers.Flatten(),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(300, activation="elu", kernel_initializer="he_normal"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(100, activation="elu", kernel_initializer="he_normal"),
            keras.layers.BatchNormalization(),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )
    model.compile(
        loss="sparse_categorical_crossentropy",
        optimizer=keras.optimizers.SGD(learning_rate=0.001, momentum=0.9),
        metrics=["accuracy"],
        steps_per_execution=args.steps_per_execution,
    )

    clock = EpochClock()
    t_fit = time.perf_counter()
    if args.pipeline == "arrays":
        model.fit(
            x_train,
            y_train,
            epochs=args.epochs,
            batch_size=args.batch_size,
            validation_split=args.validation_split,
            callbacks=[clock],
            verbose=0,
        )
    else:
        # Keras's validation_split holds out the last examples; so does this.
        kept = int(len(x_train) * (1 - args.validation_split))
        train, validation = PIPELINES[args.pipeline](
            (x_train[:kept], y_train[:kept]),
            (x_train[kept:], y_train[kept:]),
            args.batch_size,
            args.seed,
        )
        model.fit(
            train,
            epochs=args.epochs,
            validation_data=validation,
            callbacks=[clock],
            verbose=0,
        )
    t_evaluate = time.perf_counter()
    test = model.evaluate(x_test, y_test, batch_size=args.batch_size, return_dict=True, verbose=0)

    t_save = time.perf_counter()
    args.out.mkdir(parents=True, exist_ok=True)
    model.save(args.out / "model.keras")
    model.save(args.out / "model.h5")
    t_end = time.perf_counter()

    result = {
        "import_s": T_IMPORTED - T_START,
        "load_s": t_build - t_load,
        "build_s": t_fit - t_build,
        "fit_s": t_evaluate - t_fit,
        "evaluate_s": t_save - t_evaluate,
        "save_s": t_end - t_save,
        # load → saved: the span a netkiln job's started_at → finished_at covers.
        "work_s": t_end - t_load,
        "epoch_s": [end - start for start, end in pairwise([t_fit, *clock.ends])],
        "test": {key: float(value) for key, value in test.items()},
        "params": int(model.count_params()),
        "keras": keras.__version__,
        "backend": keras.backend.backend(),
    }
    print("PLAIN_RESULT " + json.dumps(result), flush=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
