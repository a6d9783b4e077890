"""The dry run of every job kind, without TensorFlow: the model's layers with shapes and
parameter counts, and the spec's warnings. A transfer job's base is read from the
database: a job's stored summary, or an uploaded model's inspection."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy.orm import Session

from api.errors import InvalidSpec
from models.spec import AnyJobSpec, ModelSpec, PretrainJobSpec, TrainJobSpec, TransferJobSpec
from models.spec.lint import SpecWarning, lint
from models.spec.transfer import JobBase
from models.spec.transfer_lint import lint_transfer
from models.summary import InvalidLayerError, LayerSummary, ModelSummary, summarize
from models.tables import BaseModel, Dataset, Job, JobStatus


@dataclass(frozen=True)
class Inspection:
    summary: ModelSummary | None
    warnings: list[SpecWarning]


def inspect(session: Session, spec: AnyJobSpec, tenant: str) -> Inspection:
    """The dry run. Everything the spec refers to (an uploaded dataset, a base job or
    model) must belong to ``tenant``; another tenant's ids read as unknown."""
    if spec.dataset.id is not None:
        dataset = session.get(Dataset, spec.dataset.id)
        if dataset is None or dataset.tenant_id != tenant:
            raise InvalidSpec(f"no uploaded dataset {spec.dataset.id}", ["dataset", "id"])
    if isinstance(spec, TrainJobSpec):
        return Inspection(_summarize(spec.model, spec.batch_size, ["model"]), lint(spec))
    if isinstance(spec, PretrainJobSpec):
        # The job's model is the encoder; the decoder is scaffolding for training it.
        return Inspection(_summarize(spec.encoder, spec.batch_size, ["encoder"]), [])
    return _inspect_transfer(session, spec, tenant)


def _summarize(model: ModelSpec, batch_size: int, loc: list[str | int]) -> ModelSummary:
    try:
        return summarize(model, batch_size=batch_size)
    except InvalidLayerError as exc:
        raise InvalidSpec(f"{exc.layer_type}: {exc.reason}", [*loc, "layers", exc.index]) from exc


def _inspect_transfer(session: Session, spec: TransferJobSpec, tenant: str) -> Inspection:
    base_summary = _base_summary(session, spec, tenant)
    rows = base_summary["layers"]
    names = [row["name"] for row in rows]
    try:
        kept = spec.cut.kept(names)
    except ValueError as exc:
        raise InvalidSpec(str(exc), ["cut"]) from exc
    warnings = lint_transfer(spec, names[:kept], [row["type"] for row in rows[:kept]])
    cut_shape = rows[kept - 1].get("output_shape") if kept else base_summary["input_shape"]
    if (
        not base_summary.get("input_shape")
        or not cut_shape
        or any(dim is None for dim in cut_shape[1:])
    ):
        return Inspection(None, warnings)  # an upload whose shapes could not be read
    head = _summarize(
        ModelSpec(input_shape=list(cut_shape[1:]), layers=list(spec.head_layers)),
        spec.batch_size,
        ["head"],
    )
    base_rows = [
        LayerSummary.model_validate(_row(row, index)) for index, row in enumerate(rows[:kept])
    ]
    head_rows = [
        row.model_copy(update={"index": kept + row.index, "spec_index": row.spec_index})
        for row in head.layers
    ]
    trainable = sum(row.trainable for row in base_rows) + head.trainable
    non_trainable = sum(row.non_trainable for row in base_rows) + head.non_trainable
    weight_bytes = 4 * (trainable + non_trainable)
    summary = ModelSummary(
        input_shape=list(base_summary["input_shape"]),
        layers=[*base_rows, *head_rows],
        total=trainable + non_trainable,
        trainable=trainable,
        non_trainable=non_trainable,
        weight_bytes=weight_bytes,
        activation_bytes_per_example=head.activation_bytes_per_example,
        batch_size=spec.batch_size,
        memory_estimate_bytes=weight_bytes + spec.batch_size * head.activation_bytes_per_example,
    )
    return Inspection(summary, warnings)


def _row(row: dict[str, Any], index: int) -> dict[str, Any]:
    params = int(row.get("params", 0))
    if "non_trainable" in row:  # a job's summary row: counts
        trainable, non_trainable = int(row["trainable"]), int(row["non_trainable"])
    else:  # an upload's row: a trainable flag
        trainable = params if row.get("trainable", True) else 0
        shape = row.get("output_shape") or []
        if trainable and row["type"] == "BatchNormalization" and shape and shape[-1]:
            trainable -= 2 * int(shape[-1])  # the moving mean and variance never train
        non_trainable = params - trainable
    return {
        "index": index,
        "spec_index": -1,  # from the base, not this spec
        "name": row["name"],
        "type": row["type"],
        "output_shape": row.get("output_shape") or [],
        "params": params,
        "trainable": trainable,
        "non_trainable": non_trainable,
    }


def _base_summary(session: Session, spec: TransferJobSpec, tenant: str) -> dict[str, Any]:
    if isinstance(spec.base, JobBase):
        job = session.get(Job, spec.base.job)
        if job is None or job.tenant_id != tenant:
            raise InvalidSpec(f"no job {spec.base.job}", ["base", "job"])
        if JobStatus(job.status) != JobStatus.SUCCEEDED:
            raise InvalidSpec(
                f"base job {job.id} is {job.status}; submit the transfer once it succeeded",
                ["base", "job"],
            )
        if not job.summary:
            raise InvalidSpec(f"base job {job.id} has no layer summary", ["base", "job"])
        return job.summary
    upload = session.get(BaseModel, spec.base.model)
    if upload is None or upload.tenant_id != tenant:
        raise InvalidSpec(f"no uploaded model {spec.base.model}", ["base", "model"])
    return upload.summary
