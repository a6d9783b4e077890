"""How a job's fit runs on this worker: the execution plan, recorded on the job.

Keras runs one compiled train step per Python round trip by default; on a CPU the round
trip (callbacks, progress, the step's dispatch) costs as much as a small net's arithmetic.
``steps_per_execution`` runs N steps per round trip, with the same numerics (the same steps
in the same order), so the plan sizes N for about :data:`TARGET_SECONDS` per execution:
progress and the cancel check still come about every half second.

N comes from what this process measured when it started (:func:`device_speed`: the
throughput of a dense matmul, and the fixed cost of a train step of a trivial net) and the
model's arithmetic per step (~6 FLOP per parameter per example: forward, backward,
update), never from a guess. A per-step learning-rate schedule that a callback sets
(``ScheduleCallback`` with ``per: step``) must see every step, so it keeps N at 1 and the
plan says why.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import keras
import numpy as np

from models.workers import FLOP_PER_PARAM
from worker.errors import JobError

#: Seconds of training per execution the plan aims at.
TARGET_SECONDS = 0.5
#: Steps per execution at most: a step much faster than measured still reports in time.
MAX_STEPS_PER_EXECUTION = 128


@dataclass(frozen=True)
class DeviceSpeed:
    """What this worker process measured at start-up."""

    #: Dense float32 matmul throughput of the backend on this process's devices.
    gflops: float
    #: Seconds of a train step of a trivial net: the per-step cost arithmetic does not explain.
    step_overhead_s: float
    devices: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ExecutionPlan:
    steps_per_execution: int
    #: Why that many: the estimate it rests on, or what kept it at 1.
    reason: str
    backend: str
    devices: list[str]
    #: How batches reach the train step (:data:`INPUT_PIPELINES`).
    input_pipeline: str = ""
    precision: str = "float32"
    jit_compile: bool = False
    #: The estimated seconds of one train step, from the measured device speed.
    step_seconds: float | None = None
    #: What the worker measured at start-up (:class:`DeviceSpeed`).
    device_gflops: float | None = None
    step_overhead_s: float | None = None

    def record(self) -> dict[str, Any]:
        return asdict(self)


#: Per Keras backend: how a job's in-memory arrays become batches. Keras's own array
#: adapter, as a plain script's ``fit(x, y)`` gets it: the same shuffle, the same batches,
#: so the same numbers; on TensorFlow it already slices from memory and prefetches.
#: bench/overhead.py --options measured an explicit tf.data pipeline (cache, shuffle,
#: prefetch) against it at 128 steps per execution: 1.97–2.23 s an epoch against
#: 2.12–2.20 s over three runs, within the noise, and its shuffle is another order of
#: examples (other numbers), so the adapter stays.
INPUT_PIPELINES = {
    "tensorflow": "in-memory arrays through Keras's array adapter: a tf.data pipeline of "
    "batches sliced from memory, shuffled each epoch, prefetched (AUTOTUNE)",
    "jax": "in-memory arrays through Keras's array adapter: NumPy batches sliced from "
    "memory, shuffled each epoch (split over the job's devices when it has several)",
}


@functools.cache
def device_speed() -> DeviceSpeed:
    """Measured once per process (~0.3 s): when a pool process starts, before any job."""
    size = 512
    a = keras.ops.convert_to_tensor(np.random.default_rng(0).random((size, size), "float32"))
    keras.ops.convert_to_numpy(keras.ops.matmul(a, a))  # the first call compiles
    rounds, started = 0, time.perf_counter()
    while rounds < 3 or time.perf_counter() - started < 0.1:
        keras.ops.convert_to_numpy(keras.ops.matmul(a, a))
        rounds += 1
    gflops = rounds * 2 * size**3 / (time.perf_counter() - started) / 1e9
    return DeviceSpeed(gflops, _step_overhead(), _devices())


def _step_overhead() -> float:
    """The median seconds of a train step of a one-unit net on one example."""
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    x = np.zeros((1, 1), "float32")
    model.train_on_batch(x, x)  # traces the step
    times = []
    for _ in range(20):
        started = time.perf_counter()
        model.train_on_batch(x, x)
        times.append(time.perf_counter() - started)
    # No clear_session(): measured inside a job (first use), it would reset the job's own.
    return float(np.median(times))


def _devices() -> list[str]:
    try:
        return [str(device) for device in keras.distribution.list_devices()]
    except Exception:  # a backend without the distribution API
        return [keras.backend.backend()]


@contextmanager
def dtype_policy(precision: str) -> Iterator[None]:
    """Keras's global dtype policy for the layers a job builds, back to float32 after it:
    a pool process trains job after job."""
    keras.config.set_dtype_policy(precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy("float32")


@contextmanager
def data_parallel(replicas: int) -> Iterator[list[str]]:
    """Train on ``replicas`` devices of this process (its GPUs, else logical CPUs): the
    batch split among them, the gradients averaged, with the backend's own machinery.
    Yields the devices the job trains on. The model must be built, loaded and fitted
    inside: variables are placed when they are created."""
    if replicas <= 1:
        yield device_speed().devices[:1]
        return
    devices = _replica_devices(replicas)
    with DATA_PARALLEL[keras.backend.backend()](devices):
        yield devices


def _replica_devices(replicas: int) -> list[str]:
    available = keras.distribution.list_devices("gpu") if _has_gpus() else []
    if len(available) < replicas:
        available = keras.distribution.list_devices("cpu")
    if len(available) < replicas:
        raise JobError(
            "resources_unavailable",
            f"the job asks for {replicas} devices; this worker process has "
            f"{len(available)} ({', '.join(available)}): start the worker with --gpus and "
            "--gpus-per-job to match (or NETKILN_WORKER_LOGICAL_CPUS for CPU devices)",
        )
    return list(available[:replicas])


def _has_gpus() -> bool:
    try:
        return bool(keras.distribution.list_devices("gpu"))
    except Exception:  # a backend that has no GPU platform here
        return False


@contextmanager
def _mirrored(devices: list[str]) -> Iterator[None]:
    with _mirrored_strategy(tuple(devices)).scope():
        yield


@functools.cache
def _mirrored_strategy(devices: tuple[str, ...]) -> Any:
    """One per device set for the life of the process: a second MirroredStrategy over the
    same devices reuses the first one's collective instance keys, and its all-reduces then
    meet the earlier job's (TensorFlow aborts them: "Shape mismatch in the collective")."""
    import tensorflow as tf

    names = [f"/{device.replace('cpu', 'CPU').replace('gpu', 'GPU')}" for device in devices]
    return tf.distribute.MirroredStrategy(devices=names)


@contextmanager
def _jax_data_parallel(devices: list[str]) -> Iterator[None]:
    keras.distribution.set_distribution(keras.distribution.DataParallel(devices=devices))
    try:
        yield
    finally:
        keras.distribution.set_distribution(None)


#: Per Keras backend: how a job trains on several devices of one host.
DATA_PARALLEL = {"tensorflow": _mirrored, "jax": _jax_data_parallel}


def shards_need_even_splits(devices: int) -> bool:
    """Whether every batch, the last partial one included, must split evenly over the
    devices: JAX shards a batch as one array (MirroredStrategy splits a ragged one)."""
    return devices > 1 and keras.backend.backend() == "jax"


def plan_execution(
    params: int,
    batch_size: int,
    steps_per_epoch: int,
    per_step_callbacks: bool,
    asked: Literal["auto"] | int = "auto",
    *,
    precision: str = "float32",
    jit_compile: bool = False,
    devices: list[str] | None = None,
) -> ExecutionPlan:
    """``asked``: the spec's ``fit.steps_per_execution``; ``precision`` and ``jit_compile``
    as the model runs (the latter as Keras resolved it)."""
    speed = device_speed()
    step_seconds = speed.step_overhead_s + FLOP_PER_PARAM * params * batch_size / (
        speed.gflops * 1e9
    )
    base: dict[str, Any] = {
        "backend": keras.backend.backend(),
        "devices": devices or speed.devices,
        "input_pipeline": INPUT_PIPELINES.get(keras.backend.backend(), "Keras's array adapter"),
        "precision": precision,
        "jit_compile": jit_compile,
        "device_gflops": speed.gflops,
        "step_overhead_s": speed.step_overhead_s,
    }
    if per_step_callbacks:
        return ExecutionPlan(
            1,
            "a learning-rate schedule set per step by a callback must see every step",
            step_seconds=step_seconds,
            **base,
        )
    if devices and len(devices) > 1 and keras.backend.backend() == "tensorflow":
        return ExecutionPlan(
            1,
            "data-parallel on TensorFlow: Keras's multi-step train function fails under "
            "MirroredStrategy (checked with Keras 3.15, TensorFlow 2.21)",
            step_seconds=step_seconds,
            **base,
        )
    if asked != "auto":
        steps = max(1, min(asked, steps_per_epoch))
        return ExecutionPlan(
            steps, "fit.steps_per_execution in the spec", step_seconds=step_seconds, **base
        )
    steps = max(
        1, min(MAX_STEPS_PER_EXECUTION, steps_per_epoch, int(TARGET_SECONDS / step_seconds))
    )
    reason = (
        f"~{step_seconds * 1000:.2f} ms a step ({speed.step_overhead_s * 1000:.2f} ms fixed "
        f"+ {FLOP_PER_PARAM}·{params:,} params·{batch_size} examples at "
        f"{speed.gflops:.1f} GFLOP/s measured): {steps} steps ≈ "
        f"{steps * step_seconds:.2f} s between progress reports"
    )
    return ExecutionPlan(steps, reason, step_seconds=step_seconds, **base)
