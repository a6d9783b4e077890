"""What a job needs of the worker that trains it: the accelerator kind, how many, which
type. The queue contract (:func:`core.queue.queue_for`) turns it into the queue the job
waits in; only workers that advertise those devices consume that queue."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from models.spec.base import StrictModel

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
