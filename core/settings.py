"""The one Settings object, read from ``NETKILN_*`` environment variables."""

from __future__ import annotations

import os
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.limits import Limits


class Settings(BaseSettings):
    """Where state lives. With nothing set, everything is embedded under ``data_dir``:
    a SQLite file and a filesystem broker, so ``netkiln up`` needs no servers."""

    model_config = SettingsConfigDict(env_prefix="NETKILN_", extra="ignore")

    data_dir: Path = Field(
        default=Path(".netkiln"),
        description="Artifacts, and the embedded database and broker when those are not set.",
    )
    database_url: str | None = Field(
        default=None, description="SQLAlchemy URL; default sqlite:///<data_dir>/netkiln.db."
    )
    broker_url: str | None = Field(
        default=None, description="Celery broker URL; default a filesystem broker in data_dir."
    )
    artifacts_url: str | None = Field(
        default=None,
        description="Where models, checkpoints and uploads are stored (core.storage): a "
        "folder (file:///srv/netkiln) or an S3-compatible bucket (s3://bucket/prefix); "
        "default the data folder (file://<data_dir>).",
    )
    s3_endpoint_url: str = Field(
        default="https://s3.amazonaws.com",
        description="The S3-compatible server of an s3:// artifacts URL (MinIO, Ceph, "
        "SeaweedFS: e.g. http://store:8333).",
    )
    s3_access_key_id: str | None = Field(
        default=None,
        description="With s3_secret_access_key; unset: AWS_ACCESS_KEY_ID/"
        "AWS_SECRET_ACCESS_KEY or the host's IAM role.",
    )
    s3_secret_access_key: SecretStr | None = None
    s3_region: str | None = Field(default=None, description="Default: asked of the server.")
    store_retry_seconds: float = Field(
        default=120,
        ge=0,
        description="How long a store that does not answer (or answers 5xx) is retried, with "
        "backoff, before the operation fails; a job then ends storage_unavailable.",
    )
    cache_max_mb: int = Field(
        default=4096,
        ge=0,
        description="Per host: objects fetched from an s3:// store (base models, datasets, "
        "checkpoints) are kept under <data_dir>/cache by their sha256, the least recently "
        "used removed past this size.",
    )
    auth: Literal["keys", "none"] = Field(
        default="keys",
        description="keys: every /v1 request needs 'Authorization: Bearer <key>' and sees "
        "only its tenant's jobs and uploads; none: single-tenant, no keys (tenant 'default').",
    )
    max_upload_bytes: int = Field(
        default=256 * 1024 * 1024, gt=0, description="Per uploaded file, for every tenant."
    )
    max_request_bytes: int = Field(
        default=1024 * 1024, gt=0, description="JSON request bodies (job specs)."
    )
    read_cache_seconds: float = Field(
        default=0.5,
        ge=0,
        le=60,
        description="Per API process: how long a running job's status document and an API "
        "key's tenant are answered from memory (a revoked key stops working within this "
        "time); 0 turns it off.",
    )
    api_read_threads: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Per API process: threads for the reads that clients poll (job listing, "
        "status documents, event streams). More threads than one mostly trade the GIL back "
        "and forth (api/read_lane.py); raise it only for a database far enough away that "
        "its round trips dominate.",
    )
    max_json_depth: int = Field(default=32, ge=4, le=256, description="JSON nesting levels.")
    limit_max_running_jobs: int | None = Field(default=None, ge=1)
    limit_max_queued_jobs: int | None = Field(default=None, ge=1)
    limit_max_params: int | None = Field(default=None, ge=1)
    limit_max_epoch_examples: int | None = Field(default=None, ge=1)
    limit_max_upload_bytes: int | None = Field(default=None, ge=1)
    max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per job.")
    heartbeat_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between a running job's heartbeats (with batch progress and the "
        "check for cancellation).",
    )
    job_memory_limit_mb: int | None = Field(
        default=None,
        ge=0,
        description="A job whose pool process's resident memory passes this many MB is "
        "ended at once, failed with resource_limit (not retried). Unset: 75% of the "
        "machine's memory; 0: no ceiling.",
    )
    datasets_mirror: str | None = Field(
        default=None,
        description="A base URL that serves the built-ins' IDX files under their standard "
        "names (an internal mirror), used instead of their public origins when a worker's "
        "Keras cache lacks them.",
    )
    dataset_download_timeout: float = Field(
        default=60.0, gt=0, description="Seconds a built-in's download may stall."
    )
    stop_grace: float = Field(
        default=10.0,
        gt=0,
        description="Seconds a cancelled or timed-out job's training loop has to stop by "
        "itself; past that (a hung build, data load or evaluation) its process is ended "
        "and the outcome recorded by the job's control thread.",
    )
    keras_backend: Literal["tensorflow", "jax"] = Field(
        default="tensorflow",
        description="The Keras backend a worker trains on (jax: the optional jax extra); "
        "the same jobs run on either.",
    )
    database_retry_seconds: float = Field(
        default=120,
        ge=0,
        description="How long a worker retries a job's writes (epochs, checkpoints, "
        "outcome) while the database is unreachable (a restart, a failover) before the "
        "job's attempt gives up.",
    )
    heartbeat_timeout: float = Field(
        default=60.0, gt=0, description="A running job silent this long lost its worker."
    )
    reconcile_interval: float = Field(
        default=10.0, gt=0, description="Seconds between sweeps for stranded jobs."
    )
    redispatch_after: float = Field(
        default=300.0,
        gt=0,
        description="A job still queued this long after its message was sent gets another.",
    )
    worker_max_tasks_per_child: int | None = Field(
        default=500,
        ge=0,
        description="A worker's pool process is replaced by a fresh one after this many jobs "
        "(0 or None: never). A backstop against memory a long-lived process accumulates; the "
        "new process imports TensorFlow again, a few seconds before it takes the next job.",
    )
    worker_max_memory_per_child_mb: int | None = Field(
        default=None,
        ge=0,
        description="A pool process whose peak resident memory (ru_maxrss) passed this many "
        "MB is replaced once its job ends (0 or None: never). The peak, not the current "
        "size: one big job is enough, so set it above what your largest job needs.",
    )
    worker_gpus: str = Field(
        default="auto",
        description="The GPUs a worker trains on: auto (those nvidia-smi lists; none "
        "without it), none, or ids as CUDA_VISIBLE_DEVICES takes them (0,1). With GPUs the "
        "worker runs one pool process per group of worker_gpus_per_job, pinned to it.",
    )
    worker_gpus_per_job: int = Field(
        default=1,
        ge=1,
        le=16,
        description="GPUs per pool process: the resources.gpus of the jobs it serves.",
    )
    worker_gpu_type: str | None = Field(
        default=None,
        pattern=r"^[a-z0-9][a-z0-9-]{0,31}$",
        description="The GPU type the worker advertises (resources.gpu_type); default the "
        "name nvidia-smi gives, as h200 or a100-sxm4-80gb.",
    )
    worker_queues: str | None = Field(
        default=None,
        description="Comma-separated queues a worker consumes instead of those its devices "
        "imply (a GPU worker: its GPU queues and the CPU queue netkiln.jobs).",
    )
    worker_logical_cpus: int = Field(
        default=1,
        ge=1,
        le=16,
        description="Split each pool process's CPU into this many logical devices, so "
        "multi-device (data-parallel) jobs run without GPUs: for tests, no faster.",
    )
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: lines for humans; json: one object per line, for log collectors.",
    )

    @classmethod
    def from_environment(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """The settings a process started with ``environ`` reads (its ``NETKILN_*``), with
        ``overrides`` (field names) on top: a harness opening what its processes use."""
        fields = {
            key.removeprefix("NETKILN_").lower(): value
            for key, value in environ.items()
            if key.startswith("NETKILN_")
        }
        return cls(**{**fields, **overrides})

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Worker and API may run from different working directories.
        return value.expanduser().resolve()

    @field_validator("worker_max_tasks_per_child", "worker_max_memory_per_child_mb")
    @classmethod
    def _zero_is_never(cls, value: int | None) -> int | None:
        # An environment variable cannot say None; 0 turns recycling off as well.
        return value or None

    @property
    def default_limits(self) -> Limits:
        """Every tenant's limits unless its own say otherwise (``NETKILN_LIMIT_*``)."""
        return Limits(
            max_running_jobs=self.limit_max_running_jobs,
            max_queued_jobs=self.limit_max_queued_jobs,
            max_params=self.limit_max_params,
            max_epoch_examples=self.limit_max_epoch_examples,
            max_upload_bytes=self.limit_max_upload_bytes,
        )

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.data_dir / 'netkiln.db'}"

    @property
    def uses_embedded_broker(self) -> bool:
        return self.broker_url is None

    @property
    def resolved_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def broker_transport_options(self) -> dict[str, Any]:
        if not self.uses_embedded_broker:
            # Long jobs outlive Redis's default one-hour visibility timeout; the
            # reconciler, not redelivery, is what rescues jobs of dead workers.
            return {"visibility_timeout": 12 * 3600}
        folder = str(self.broker_dir)
        return {
            "data_folder_in": folder,
            "data_folder_out": folder,
            "processed_folder": str(self.data_dir / "broker-processed"),
            # kombu's exchange tables; its default is ./control, wherever a process started.
            "control_folder": str(self.data_dir / "broker-control"),
            "store_processed": False,
            "polling_interval": 0.25,
        }

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def job_memory_limit_bytes(self) -> int | None:
        if self.job_memory_limit_mb == 0:
            return None
        if self.job_memory_limit_mb is not None:
            return self.job_memory_limit_mb * 1024 * 1024
        return int(0.75 * os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or self.data_dir.as_uri()

    @property
    def cache_dir(self) -> Path:
        """Local copies of objects of a remote artifact store, by content."""
        return self.data_dir / "cache"

    @property
    def staging_dir(self) -> Path:
        """Local scratch space for files being written to the artifact store."""
        return self.data_dir / "tmp"

    def ensure_dirs(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self.uses_embedded_broker:
            self.broker_dir.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
