"""What a worker trains on: its GPUs (given, or detected), how they are split among its pool
processes, the queues that follows from, and the pinning of each pool process to its
GPUs before the backend is imported. No TensorFlow or JAX at import: the worker's main
process reads this to start Celery, and never imports a backend.

A GPU host runs one pool process per GPU group (``gpus_per_job`` GPUs each), each process
seeing only its own group through ``CUDA_VISIBLE_DEVICES``, set before the backend
initializes CUDA. Jobs reach them through queues named by what they need
(:func:`core.queue.queue_for`): a worker holding groups of two H200s consumes
``netkiln.gpu.x2`` and ``netkiln.gpu.h200.x2``, and the CPU queue too unless its queues
are given.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass

from core.queue import JOB_QUEUE, gpu_queues
from core.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Gpu:
    #: As ``CUDA_VISIBLE_DEVICES`` names it: an index or a UUID.
    id: str
    name: str = ""


@dataclass(frozen=True)
class WorkerDevices:
    gpus: tuple[Gpu, ...]
    gpus_per_job: int
    gpu_type: str | None
    #: Given with ``--queues``: these, not the ones the devices imply.
    given_queues: tuple[str, ...] = ()

    @property
    def groups(self) -> list[tuple[Gpu, ...]]:
        """The GPUs of each pool process."""
        size = self.gpus_per_job
        return [self.gpus[start : start + size] for start in range(0, len(self.gpus), size)]

    @property
    def queues(self) -> list[str]:
        if self.given_queues:
            return list(self.given_queues)
        if not self.gpus:
            return [JOB_QUEUE]
        return [*gpu_queues(self.gpus_per_job, self.gpu_type), JOB_QUEUE]

    def concurrency(self, asked: int) -> int:
        """Pool processes: one per GPU group; ``asked`` (``--concurrency``) on a CPU worker."""
        return len(self.groups) if self.gpus else asked

    def visible_devices(self, process_index: int) -> str:
        """``CUDA_VISIBLE_DEVICES`` for pool process ``process_index`` (Celery replaces a
        dead process with one of the same index, so a group is never shared); empty on a
        CPU worker, so that it never takes a GPU another worker's process holds."""
        if not self.gpus:
            return ""
        group = self.groups[process_index % len(self.groups)]
        return ",".join(gpu.id for gpu in group)


def worker_devices(settings: Settings) -> WorkerDevices:
    """From ``NETKILN_WORKER_GPUS`` (``auto``: those ``nvidia-smi`` lists; ``none``; or ids,
    ``0,1``) and the rest of the worker's settings. Given ids are trusted as they are: a
    worker may advertise GPUs this process cannot check (a container without
    ``nvidia-smi``); its jobs' execution plans record what the backend actually saw."""
    asked = settings.worker_gpus.strip().lower()
    if asked == "auto":
        gpus = tuple(detect_gpus())
    elif asked in ("none", ""):
        gpus = ()
    else:
        # nvidia-smi only for the names a GPU type is derived from, when none was given.
        detected = {} if settings.worker_gpu_type else {gpu.id: gpu for gpu in detect_gpus()}
        gpus = tuple(detected.get(part.strip(), Gpu(part.strip())) for part in asked.split(","))
    per_job = settings.worker_gpus_per_job
    if gpus and len(gpus) % per_job:
        raise ValueError(
            f"{len(gpus)} GPUs do not split into groups of {per_job} "
            "(NETKILN_WORKER_GPUS_PER_JOB / --gpus-per-job)"
        )
    gpu_type = settings.worker_gpu_type or (gpu_type_of(gpus[0].name) if gpus else None)
    queues = tuple(q.strip() for q in (settings.worker_queues or "").split(",") if q.strip())
    return WorkerDevices(gpus, per_job, gpu_type or None, queues)


def detect_gpus() -> list[Gpu]:
    """The host's NVIDIA GPUs, as ``nvidia-smi`` lists them; none without it."""
    command = shutil.which("nvidia-smi")
    if command is None:
        return []
    try:
        listing = subprocess.run(
            [command, "--query-gpu=index,name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("nvidia-smi could not list GPUs (%s); serving as a CPU worker", exc)
        return []
    gpus = []
    for line in listing.splitlines():
        index, _, name = line.partition(",")
        if index.strip():
            gpus.append(Gpu(index.strip(), name.strip()))
    return gpus


def gpu_type_of(name: str) -> str | None:
    """A device name as a queue word: ``NVIDIA H200`` → ``h200``,
    ``NVIDIA A100-SXM4-80GB`` → ``a100-sxm4-80gb``."""
    words = re.sub(r"^(nvidia|tesla)\s+", "", name.strip().lower())
    words = re.sub(r"^(nvidia|tesla)\s+", "", words)
    slug = re.sub(r"[^a-z0-9]+", "-", words).strip("-")[:32].strip("-")
    return slug or None


def pin_pool_process(settings: Settings, process_index: int) -> str:
    """Set this pool process's devices before the backend is imported: its GPU group, and
    (``NETKILN_WORKER_LOGICAL_CPUS``) its CPU split into logical devices — data parallelism
    without GPUs, for tests. Returns the ``CUDA_VISIBLE_DEVICES`` it set."""
    visible = worker_devices(settings).visible_devices(process_index)
    os.environ["CUDA_VISIBLE_DEVICES"] = visible
    if settings.worker_logical_cpus > 1:
        # JAX reads this when it initializes; TensorFlow is configured after its import
        # (split_cpu below).
        flag = f"--xla_force_host_platform_device_count={settings.worker_logical_cpus}"
        os.environ["XLA_FLAGS"] = f"{os.environ.get('XLA_FLAGS', '')} {flag}".strip()
    return visible


def split_cpu(count: int) -> None:
    """TensorFlow: the CPU as ``count`` logical devices. Call after importing TensorFlow and
    before its runtime starts (the first op)."""
    if count <= 1:
        return
    import tensorflow as tf

    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(
        cpu, [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    )
