"""A job's status document, built in one place for single reads and for listings.

``GET /v1/jobs`` is what pages and dashboards poll, so it must stay cheap with thousands of
jobs in the table and no cache in front of it. Loading ORM rows and validating them into
pydantic models cost ~7 ms for a page of 50 (decoding five JSON columns per row, building
instances, validating them again); listings therefore select only the columns below, read
the JSON columns as the text the database stores, and splice that text into the response
unparsed (``orjson.Fragment``): ~0.8 ms for the same page. ``JobOut`` stays the documented
schema; single reads validate this same document into it, and
``tests/api/test_documents.py`` holds both to the same JSON.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import ColumnElement, DateTime, String, Text, cast, type_coerce

from models.tables import Job, JobStatus, utcnow

#: The stored JSON documents a status document shows as they are.
JSON_COLUMNS = ("last_metrics", "test_metrics", "versions", "warnings", "phases", "execution")

_SCALARS = (
    "id",
    "name",
    "kind",
    "status",
    "created_at",
    "started_at",
    "finished_at",
    "heartbeat_at",
    "attempt",
    "max_attempts",
    "worker_host",
    "error_code",
    "error_message",
    "epoch",
    "epochs_total",
    "batch",
    "steps_per_epoch",
    "epoch_seconds_estimate",
    "cancel_requested_at",
    "checkpoint_epoch",
    "params_total",
    "params_trainable",
    "params_non_trainable",
)
COLUMNS = (*_SCALARS, *JSON_COLUMNS)
_TIMESTAMPS = frozenset({"created_at", "started_at", "finished_at", "heartbeat_at"})
#: orjson's output for what pydantic writes: UTC as ``Z``; SQLite's naive values are UTC.
_JSON_OPTIONS = orjson.OPT_UTC_Z | orjson.OPT_NAIVE_UTC


@functools.cache
def listed_columns() -> tuple[ColumnElement[Any], ...]:
    """The select list of a listing, in ``COLUMNS`` order. Core columns (a listing needs
    no ORM machinery); timestamps and the status skip their Python-level type conversions
    (orjson writes naive timestamps as UTC); the JSON columns come back as text. Built
    once: constructing it cost a third of a listing's time."""
    columns: list[ColumnElement[Any]] = []
    for name in COLUMNS:
        column = Job.__table__.c[name]
        if name in JSON_COLUMNS:
            columns.append(cast(column, Text).label(name))
        elif name in _TIMESTAMPS:
            columns.append(type_coerce(column, DateTime()).label(name))
        elif name == "status":
            columns.append(type_coerce(column, String()).label(name))
        elif name == "id":  # see _job_id
            columns.append(cast(column, String()).label(name))
        else:
            columns.append(column)
    return tuple(columns)


def values_of(job: Job) -> tuple[Any, ...]:
    """An ORM row's values in ``COLUMNS`` order (its JSON columns decoded)."""
    return tuple(getattr(job, name) for name in COLUMNS)


def job_document(values: Sequence[Any]) -> dict[str, Any]:
    """The status document of one job, without its spec, layer summary or artifacts, from
    its values in ``COLUMNS`` order. JSON columns may be decoded objects or stored text;
    text is passed through to ``dumps`` unparsed."""
    (
        job_id,
        name,
        kind,
        status,
        created_at,
        started_at,
        finished_at,
        heartbeat_at,
        attempt,
        max_attempts,
        worker_host,
        error_code,
        error_message,
        epoch,
        epochs_total,
        batch,
        steps_per_epoch,
        epoch_seconds_estimate,
        cancel_requested_at,
        checkpoint_epoch,
        params_total,
        params_trainable,
        params_non_trainable,
        *documents,
    ) = values
    last_metrics, test_metrics, versions, warnings, phases, execution = (
        orjson.Fragment(value) if isinstance(value, str) else value for value in documents
    )
    job_id = _job_id(job_id)
    base = f"/v1/jobs/{job_id}"
    links = {
        "self": base,
        "metrics": f"{base}/metrics",
        "events": f"{base}/events",
        "logs": f"{base}/logs",
        "cancel": f"{base}/cancel",
    }
    if status == JobStatus.SUCCEEDED:
        links["model"] = f"{base}/model?format=keras"
    fraction, eta = _progress(
        status,
        epoch,
        epochs_total,
        batch,
        steps_per_epoch,
        started_at,
        epoch_seconds_estimate,
    )
    return {
        "id": job_id,
        "name": name,
        "kind": kind,
        "status": status,
        "created_at": created_at,
        "started_at": started_at,
        "finished_at": finished_at,
        "heartbeat_at": heartbeat_at,
        "attempt": attempt,
        "max_attempts": max_attempts,
        "worker_host": worker_host,
        "error": {"code": error_code, "message": error_message or ""} if error_code else None,
        "progress": {
            "epoch": epoch,
            "epochs": epochs_total,
            "batch": batch,
            "steps_per_epoch": steps_per_epoch,
            "fraction": fraction,
            "eta_seconds": eta,
        },
        "cancel_requested": cancel_requested_at is not None,
        "checkpoint_epoch": checkpoint_epoch,
        "params": {
            "total": params_total,
            "trainable": params_trainable or 0,
            "non_trainable": params_non_trainable or 0,
        }
        if params_total is not None
        else None,
        "last_metrics": last_metrics,
        "test_metrics": test_metrics,
        "versions": versions,
        "warnings": warnings if warnings is not None else [],
        "phases": phases,
        "execution": execution,
        # Where a queued job stands costs queries of its own: single reads only.
        "queue": None,
        "summary": None,
        "artifacts": None,
        "spec": None,
        "links": links,
    }


def _job_id(value: uuid.UUID | str) -> str:
    """The canonical text of an id, selected as text: SQLite returns the 32 hex digits it
    stores (parsing them into ``uuid.UUID`` first cost a sixth of a listing), PostgreSQL
    the canonical text already (its ``uuid`` cast to text: no parse into ``uuid.UUID`` and
    back, 5 % of a listing). ORM rows (single reads) hold a ``uuid.UUID``."""
    if isinstance(value, str) and len(value) == 32:
        return f"{value[:8]}-{value[8:12]}-{value[12:16]}-{value[16:20]}-{value[20:]}"
    return str(value)


def _progress(
    status: str,
    epoch: int,
    epochs_total: int,
    batch: int,
    steps_per_epoch: int,
    started_at: datetime | None,
    epoch_seconds_estimate: float | None,
) -> tuple[float, float | None]:
    """(fraction done, seconds left). From this attempt's pace once it has one; before
    that (a running job building its model, or in its first batches) from the epoch time
    its worker's execution plan estimated from the worker's measured speed."""
    if status == JobStatus.SUCCEEDED:
        return 1.0, None
    within = batch / steps_per_epoch if steps_per_epoch else 0.0
    fraction = min((epoch + within) / max(epochs_total, 1), 1.0)
    if status != JobStatus.RUNNING or started_at is None:
        return fraction, None
    if started_at.tzinfo is None:  # SQLite, through listed_columns()
        started_at = started_at.replace(tzinfo=UTC)
    elapsed = (utcnow() - started_at).total_seconds()
    if fraction <= 0:
        if epoch_seconds_estimate is None:
            return fraction, None
        return fraction, epoch_seconds_estimate * epochs_total
    return fraction, max(elapsed / fraction * (1 - fraction), 0.0)


def page_json(rows: Sequence[Sequence[Any]], next_cursor: str | None) -> bytes:
    """A ``JobPage`` body from listed rows."""
    items = [job_document(row) for row in rows]
    return orjson.dumps({"items": items, "next_cursor": next_cursor}, option=_JSON_OPTIONS)


def job_id_of(row: Sequence[Any]) -> uuid.UUID:
    return uuid.UUID(_job_id(row[0]))


def created_at_of(row: Sequence[Any]) -> datetime:
    created_at: datetime = row[COLUMNS.index("created_at")]
    return created_at if created_at.tzinfo else created_at.replace(tzinfo=UTC)
