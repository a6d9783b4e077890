"""What a job needs of the worker that trains it: the accelerator kind, how many, which
type; and the queue that follows (:func:`queue_for`, part of the queue contract in
``core/queue.py``): only workers that advertise those devices consume it."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from models.spec.base import StrictModel

#: The queue of jobs that train on a CPU (``resources.accelerator: cpu``, the default).
JOB_QUEUE = "netkiln.jobs"
#: Queues of GPU jobs start with this: ``netkiln.gpu.x2`` (two GPUs of any type),
#: ``netkiln.gpu.h200.x2`` (two H200s).
GPU_QUEUE_PREFIX = "netkiln.gpu."
#: GPUs one job may ask for: one host's worth (data parallelism stays within a host).
MAX_GPUS = 16


class ResourcesSpec(StrictModel):
    accelerator: Literal["cpu", "gpu"] = Field(
        default="cpu",
        description='"cpu": any CPU worker; "gpu": a worker with GPUs (netkiln worker '
        "--gpus), one pool process per GPU group.",
    )
    gpus: int | None = Field(
        default=None,
        ge=1,
        le=MAX_GPUS,
        description="GPUs of one host the job trains on (accelerator gpu; default 1). More "
        "than one: data-parallel (MirroredStrategy on TensorFlow, DataParallel on JAX), the "
        "batch split across them.",
    )
    gpu_type: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
        description='A kind of GPU, as workers advertise it (e.g. "h200", "a100-80gb"); '
        "default any.",
    )

    @model_validator(mode="after")
    def _gpu_fields_only_for_gpus(self) -> ResourcesSpec:
        if self.accelerator == "cpu" and (self.gpus is not None or self.gpu_type is not None):
            raise ValueError('gpus and gpu_type need accelerator "gpu"')
        return self

    @property
    def device_count(self) -> int:
        """Devices the job trains on: its GPUs, or one CPU."""
        if self.accelerator == "gpu":
            return self.gpus or 1
        return 1


def queue_for(resources: ResourcesSpec) -> str:
    """The queue a job with these resources waits in."""
    if resources.accelerator == "cpu":
        return JOB_QUEUE
    return gpu_queue(resources.device_count, resources.gpu_type)


def gpu_queue(gpus: int, gpu_type: str | None = None) -> str:
    return f"{GPU_QUEUE_PREFIX}{gpu_type + '.' if gpu_type else ''}x{gpus}"


def gpu_queues(gpus_per_job: int, gpu_type: str | None) -> list[str]:
    """What a worker whose pool processes each hold ``gpus_per_job`` GPUs of ``gpu_type``
    serves: jobs that ask for that many GPUs of any type, and of its type."""
    queues = [gpu_queue(gpus_per_job)]
    if gpu_type:
        queues.append(gpu_queue(gpus_per_job, gpu_type))
    return queues
