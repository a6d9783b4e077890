"""The one Settings object, read from ``NETKILN_*`` environment variables."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

#: The queue every training task goes to; GPU workers consume it.
JOB_QUEUE = "netkiln.jobs"


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
    max_upload_bytes: int = Field(default=256 * 1024 * 1024, gt=0)
    max_attempts: int = Field(default=3, ge=1, le=20, description="Tries per job.")
    heartbeat_interval: float = Field(
        default=1.0,
        gt=0,
        description="Seconds between a running job's heartbeats (with batch progress and the "
        "check for cancellation).",
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
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = Field(
        default="text",
        description="text: lines for humans; json: one object per line, for log collectors.",
    )

    @field_validator("data_dir")
    @classmethod
    def _absolute_data_dir(cls, value: Path) -> Path:
        # Worker and API may run from different working directories.
        return value.expanduser().resolve()

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
            "store_processed": False,
            "polling_interval": 0.25,
        }

    @property
    def broker_dir(self) -> Path:
        return self.data_dir / "broker"

    @property
    def artifacts_dir(self) -> Path:
        return self.data_dir / "artifacts"

    def ensure_dirs(self) -> None:
        for folder in (self.data_dir, self.artifacts_dir):
            folder.mkdir(parents=True, exist_ok=True)
        if self.uses_embedded_broker:
            self.broker_dir.mkdir(parents=True, exist_ok=True)


@lru_cache
def get_settings() -> Settings:
    return Settings()
