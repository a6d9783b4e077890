"""SQLAlchemy 2 tables. The database is the source of truth for every job."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
    Uuid,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware timestamps everywhere; SQLite stores naive values, so re-attach UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime; use timezone-aware UTC timestamps")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is not None and value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value


JSONType = JSON().with_variant(JSONB(), "postgresql")


class JobStatus(enum.StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES


TERMINAL_STATUSES = frozenset({JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED})


class ArtifactFormat(enum.StrEnum):
    KERAS = "keras"
    H5 = "h5"
    #: The newest end-of-epoch state (weights, optimizer, epoch) of a running, cancelled or
    #: failed job; what a retry resumes from.
    CHECKPOINT = "checkpoint"
    #: The model at the best epoch so far, kept while a job whose early stopping restores
    #: the best weights trains (a retry restores from it); removed once the job succeeded.
    BEST = "best"


#: The trained model's formats, stored once a job succeeded.
MODEL_FORMATS = (ArtifactFormat.KERAS, ArtifactFormat.H5)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSONType,
    }


#: Tenant ids are short slugs people type (``netkiln keys create --tenant acme``).
TENANT_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
#: Where single-tenant mode (``NETKILN_AUTH=none``) and rows from before tenants belong.
DEFAULT_TENANT = "default"


class Tenant(Base):
    """Who owns jobs, uploads and API keys. ``limits`` overrides the server-wide defaults
    (``NETKILN_LIMIT_*``) field by field; see :class:`models.limits.Limits`."""

    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    limits: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A bearer key, stored as its SHA-256: keys are 256 random bits, so a fast hash is
    enough (nothing to brute-force) and lets every request look the key up by index."""

    __tablename__ = "api_keys"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id", ondelete="CASCADE"))
    name: Mapped[str | None] = mapped_column(String(200))
    prefix: Mapped[str] = mapped_column(
        String(16), doc="The key's first characters, to tell keys apart in listings."
    )
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_api_keys_tenant_id", "tenant_id"),)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), default=DEFAULT_TENANT)
    parent_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"),
        doc="The job this one belongs to (a sweep's trial); deleted with it.",
    )
    name: Mapped[str | None] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))
    spec_digest: Mapped[str | None] = mapped_column(
        String(64),
        doc="sha256 of the spec without its name: equal jobs (models.sweeps.reuse).",
    )
    queue: Mapped[str] = mapped_column(
        String(100),
        default="netkiln.jobs",
        server_default="netkiln.jobs",
        doc="Where its message waits (core.queue.queue_for its resources).",
    )
    status: Mapped[JobStatus] = mapped_column(
        Enum(
            JobStatus, native_enum=False, length=16, values_callable=lambda e: [m.value for m in e]
        ),
        default=JobStatus.QUEUED,
    )
    spec: Mapped[dict[str, Any]]

    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    dispatched_at: Mapped[datetime | None] = mapped_column(
        doc="When the task message was last sent; NULL means the reconciler must send it."
    )
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]
    heartbeat_at: Mapped[datetime | None]

    attempt: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    worker_host: Mapped[str | None] = mapped_column(String(255))
    error_code: Mapped[str | None] = mapped_column(String(64))
    error_message: Mapped[str | None] = mapped_column(Text)

    epoch: Mapped[int] = mapped_column(Integer, default=0, doc="Epochs completed so far.")
    epochs_total: Mapped[int] = mapped_column(Integer, default=0)
    batch: Mapped[int] = mapped_column(Integer, default=0, doc="Batches done in this epoch.")
    steps_per_epoch: Mapped[int] = mapped_column(Integer, default=0)
    epoch_seconds_estimate: Mapped[float | None] = mapped_column(
        Float,
        doc="An epoch's seconds as the worker's execution plan estimates them from its "
        "measured speed: the ETA until the job's own pace is known.",
    )
    checkpoint_epoch: Mapped[int | None] = mapped_column(
        Integer, doc="Epochs the newest checkpoint holds; a retry resumes after it."
    )
    callback_state: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType,
        doc="What the stateful callbacks (early stopping, reduce-on-plateau) knew at the "
        "newest checkpoint: a retry's callbacks go on from it.",
    )
    cancel_requested_at: Mapped[datetime | None]
    idempotency_key: Mapped[str | None] = mapped_column(
        String(255), doc="Unique per tenant: a retried POST finds its first job."
    )

    params_total: Mapped[int | None] = mapped_column(BigInteger)
    params_trainable: Mapped[int | None] = mapped_column(BigInteger)
    params_non_trainable: Mapped[int | None] = mapped_column(BigInteger)
    versions: Mapped[dict[str, Any] | None]
    warnings: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    last_metrics: Mapped[dict[str, Any] | None] = mapped_column(doc="The newest epoch's row.")
    test_metrics: Mapped[dict[str, Any] | None]
    summary: Mapped[dict[str, Any] | None] = mapped_column(
        JSONType, doc="The dry run's layers, shapes and counts (a transfer's base reads it)."
    )
    phases: Mapped[list[dict[str, Any]] | None] = mapped_column(
        JSONType, doc="Per training phase, the layers it trained (transfer jobs)."
    )
    execution: Mapped[list[dict[str, Any]] | None] = mapped_column(
        JSONType, doc="Per training stage, the worker's execution plan (worker/execution.py)."
    )

    metrics: Mapped[list[EpochMetrics]] = relationship(
        back_populates="job",
        lazy="raise",
        cascade="all, delete-orphan",
        order_by="EpochMetrics.epoch",
    )
    artifacts: Mapped[list[Artifact]] = relationship(
        back_populates="job", lazy="raise", cascade="all, delete-orphan"
    )

    __table_args__ = (
        # Listing is newest first, paginated by (created_at, id).
        Index("ix_jobs_created_at_id", "created_at", "id"),
        Index("ix_jobs_status_heartbeat_at", "status", "heartbeat_at"),
        Index("ix_jobs_tenant_id_status", "tenant_id", "status"),
        Index("ix_jobs_tenant_id_created_at_id", "tenant_id", "created_at", "id"),
        Index("ix_jobs_parent_id", "parent_id"),
        Index("ix_jobs_tenant_id_spec_digest", "tenant_id", "spec_digest"),
        UniqueConstraint("tenant_id", "idempotency_key"),
    )


class EpochMetrics(Base):
    """One row per finished epoch; the unique key makes a retried epoch an update, not a dup."""

    __tablename__ = "epoch_metrics"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    epoch: Mapped[int] = mapped_column(Integer)
    values: Mapped[dict[str, Any]]
    seconds: Mapped[float | None] = mapped_column(Float, doc="Wall time of the epoch.")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="metrics", lazy="raise")

    __table_args__ = (UniqueConstraint("job_id", "epoch"),)


class JobEvent(Base):
    """The job's event stream (status changes, epoch ends, log lines). ``id`` grows
    monotonically, so it is the SSE event id a reconnecting client resumes after."""

    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))
    data: Mapped[dict[str, Any]]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (Index("ix_job_events_job_id_id", "job_id", "id"),)


class Artifact(Base):
    __tablename__ = "artifacts"

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True)
    job_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"))
    format: Mapped[str] = mapped_column(String(16))
    uri: Mapped[str] = mapped_column(Text, doc="file:// path (or object-store URL).")
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="artifacts", lazy="raise")

    __table_args__ = (UniqueConstraint("job_id", "format"),)


class BaseModel(Base):
    """An uploaded Keras model that transfer jobs start from; inspected, never loaded, by
    the API."""

    __tablename__ = "base_models"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), default=DEFAULT_TENANT)
    name: Mapped[str | None] = mapped_column(String(200))
    filename: Mapped[str] = mapped_column(String(255), doc="As uploaded.")
    format: Mapped[str] = mapped_column(String(16), doc="keras or h5.")
    uri: Mapped[str] = mapped_column(Text, doc="file:// path of the stored file.")
    size: Mapped[int] = mapped_column(BigInteger)
    sha256: Mapped[str] = mapped_column(String(64))
    summary: Mapped[dict[str, Any]] = mapped_column(
        doc="Input shape, layers (name, type, output shape, parameters, trainable), totals."
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_base_models_created_at_id", "created_at", "id"),
        Index("ix_base_models_tenant_id_created_at", "tenant_id", "created_at"),
    )


class Dataset(Base):
    """An uploaded dataset, stored as the .npz the worker reads (x_train, y_train and
    optionally x_test, y_test), whatever format it was uploaded in."""

    __tablename__ = "datasets"

    id: Mapped[uuid.UUID] = mapped_column(Uuid, primary_key=True, default=uuid.uuid4)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), default=DEFAULT_TENANT)
    name: Mapped[str | None] = mapped_column(String(200))
    format: Mapped[str] = mapped_column(String(16), doc="As uploaded: npz or csv.")
    uri: Mapped[str] = mapped_column(Text, doc="file:// path of the normalized .npz.")
    size: Mapped[int] = mapped_column(BigInteger, doc="Of the stored .npz.")
    sha256: Mapped[str] = mapped_column(String(64), doc="Of the stored .npz.")
    info: Mapped[dict[str, Any]] = mapped_column(
        doc="Per split: examples, shapes, dtypes and class counts."
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)

    __table_args__ = (
        Index("ix_datasets_created_at_id", "created_at", "id"),
        Index("ix_datasets_tenant_id_created_at", "tenant_id", "created_at"),
    )


class Worker(Base):
    """A running worker process (one per ``netkiln worker``): what it serves and how fast
    its devices are, measured when its pool process started. Heartbeats come with its
    reconciler's sweeps; a row silent past its time-out is a worker that is gone."""

    __tablename__ = "workers"

    id: Mapped[str] = mapped_column(String(255), primary_key=True, doc="<host>:<pid>")
    host: Mapped[str] = mapped_column(String(255))
    queues: Mapped[list[str]] = mapped_column(JSONType)
    backend: Mapped[str] = mapped_column(String(32))
    concurrency: Mapped[int] = mapped_column(Integer, default=1)
    devices: Mapped[list[str] | None] = mapped_column(JSONType)
    device_gflops: Mapped[float | None] = mapped_column(Float)
    step_overhead_s: Mapped[float | None] = mapped_column(Float)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    heartbeat_at: Mapped[datetime] = mapped_column(default=utcnow)


class SweepTrial(Base):
    """One trial of a sweep: its parameters and seed from submit on; its job once
    scheduled; what it reached (rungs, objective) as it trains."""

    __tablename__ = "sweep_trials"

    sweep_id: Mapped[uuid.UUID] = mapped_column(
        ForeignKey("jobs.id", ondelete="CASCADE"), primary_key=True
    )
    #: 1, 2, … in the order planned (and scheduled).
    number: Mapped[int] = mapped_column(Integer, primary_key=True)
    params: Mapped[dict[str, Any]]
    seed: Mapped[int] = mapped_column(Integer)
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    #: pending (not scheduled yet), then the trial job's status, or pruned (stopped at a
    #: rung by ASHA).
    state: Mapped[str] = mapped_column(String(16), default="pending")
    #: ASHA: the objective at each rung reached, by rung index ("0", "1", …).
    rungs: Mapped[dict[str, float]] = mapped_column(JSONType, default=dict)
    objective: Mapped[float | None] = mapped_column(Float)
    epochs: Mapped[int] = mapped_column(Integer, default=0)
    #: The succeeded job whose result this trial took instead of training (sweep.reuse).
    reused_from: Mapped[uuid.UUID | None] = mapped_column(Uuid)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)
