"""``kind: "transfer"``: a trained base (a succeeded job's model or an upload), cut, under
a new head, trained through phases that freeze and unfreeze. The dry run reads the base's
layers from the database: a job's stored summary, or an uploaded model's inspection."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, ClassVar

from pydantic import ValidationError
from sqlalchemy.orm import Session

from models.kinds.base import (
    FitPlan,
    Inputs,
    JobKind,
    Loc,
    ModelInspection,
    SpecError,
    Stage,
    summarize_at,
)
from models.spec import ModelSpec, TransferJobSpec
from models.spec.base import MAX_RANK, MAX_UNITS
from models.spec.transfer import JobBase
from models.spec.transfer_lint import lint_transfer
from models.summary import LayerSummary, ModelSummary
from models.tables import BaseModel, Job, JobStatus


class TransferKind(JobKind[TransferJobSpec]):
    name = "transfer"
    model_loc: ClassVar[Loc] = ["head"]
    epochs_loc: ClassVar[Loc] = ["phases"]

    def inputs(self, spec: TransferJobSpec) -> Inputs:
        own = super().inputs(spec)
        if isinstance(spec.base, JobBase):
            return replace(own, jobs=frozenset({spec.base.job}))
        return replace(own, models=frozenset({spec.base.model}))

    def inspect(self, session: Session, spec: TransferJobSpec, tenant: str) -> ModelInspection:
        base_summary = _base_summary(session, spec, tenant)
        rows = base_summary["layers"]
        names = [row["name"] for row in rows]
        try:
            kept = spec.cut.kept(names)
        except ValueError as exc:
            raise SpecError(str(exc), ["cut"]) from exc
        warnings = lint_transfer(spec, names[:kept], [row["type"] for row in rows[:kept]])
        cut_shape = _cut_shape(base_summary, rows, kept)
        try:
            head_model = ModelSpec(input_shape=list(cut_shape[1:]), layers=list(spec.head_layers))
        except ValidationError as exc:
            # The base's output at the cut is wider (or of higher rank) than a spec's
            # input may be: the head could not be described, let alone built.
            raise SpecError(
                f"the base's output at the cut has shape {cut_shape}; a head takes at most "
                f"{MAX_RANK} dimensions of at most {MAX_UNITS:,} each "
                f"({exc.errors()[0]['msg']}); cut elsewhere",
                ["cut"],
            ) from exc
        head = summarize_at(head_model, spec.batch_size, self.model_loc)
        summary = _joined(spec, base_summary["input_shape"], rows[:kept], head)
        return ModelInspection(summary, warnings)

    def fit_plan(self, spec: TransferJobSpec) -> FitPlan:
        return FitPlan(
            [Stage(phase.epochs, phase.optimizer, phase) for phase in spec.phases],
            spec.compile.loss,
            list(spec.compile.metrics),
        )


def _cut_shape(base_summary: dict[str, Any], rows: list[dict[str, Any]], kept: int) -> list[int]:
    """The base's output shape at the cut, known in full: the head is sized from it, and
    the tenant's limits count the head's parameters from it. A base whose shapes the
    inspection could not follow to the cut is refused rather than let through uncounted."""
    if not base_summary.get("input_shape"):
        raise SpecError(
            "the base model's input shape could not be read from its config (it has no "
            "single InputLayer with a batch_shape); save it with keras.Input(shape=...) first",
            ["base"],
        )
    shape = rows[kept - 1].get("output_shape") if kept else base_summary["input_shape"]
    if not shape or any(dim is None for dim in shape[1:]):
        unknown = next((row for row in rows[:kept] if not row.get("output_shape")), rows[kept - 1])
        raise SpecError(
            f"the base's output shape at the cut could not be inferred (from layer "
            f"{unknown['name']!r}, a {unknown['type']}, on the inspection cannot follow "
            f"shapes: {shape}); cut before that layer, or upload a model whose layers "
            "record their built input shapes (Keras 3 .keras files do)",
            ["cut"],
        )
    return list(shape)


def _joined(
    spec: TransferJobSpec,
    input_shape: list[int | None],
    base_rows: list[dict[str, Any]],
    head: ModelSummary,
) -> ModelSummary:
    """The kept base layers' rows and the head's, as one model's summary."""
    kept = len(base_rows)
    rows = [LayerSummary.model_validate(_row(row, index)) for index, row in enumerate(base_rows)]
    head_rows = [row.model_copy(update={"index": kept + row.index}) for row in head.layers]
    trainable = sum(row.trainable for row in rows) + head.trainable
    non_trainable = sum(row.non_trainable for row in rows) + head.non_trainable
    weight_bytes = 4 * (trainable + non_trainable)
    return ModelSummary(
        input_shape=list(input_shape),
        layers=[*rows, *head_rows],
        total=trainable + non_trainable,
        trainable=trainable,
        non_trainable=non_trainable,
        weight_bytes=weight_bytes,
        activation_bytes_per_example=head.activation_bytes_per_example,
        batch_size=spec.batch_size,
        memory_estimate_bytes=weight_bytes + spec.batch_size * head.activation_bytes_per_example,
    )


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
            raise SpecError(f"no job {spec.base.job}", ["base", "job"])
        if JobStatus(job.status) != JobStatus.SUCCEEDED:
            raise SpecError(
                f"base job {job.id} is {job.status}; submit the transfer once it succeeded",
                ["base", "job"],
            )
        if not job.summary:
            raise SpecError(f"base job {job.id} has no layer summary", ["base", "job"])
        return job.summary
    upload = session.get(BaseModel, spec.base.model)
    if upload is None or upload.tenant_id != tenant:
        raise SpecError(f"no uploaded model {spec.base.model}", ["base", "model"])
    return upload.summary
