"""``kind: "train"``: build ``model`` from scratch, fit on ``dataset``, evaluate."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy.orm import Session

from models.kinds.base import FitPlan, JobKind, Loc, ModelInspection, Stage, summarize_at
from models.spec import TrainJobSpec
from models.spec.lint import lint


class TrainKind(JobKind[TrainJobSpec]):
    name = "train"
    model_loc: ClassVar[Loc] = ["model"]
    epochs_loc: ClassVar[Loc] = ["fit", "epochs"]

    def inspect(self, session: Session, spec: TrainJobSpec, tenant: str) -> ModelInspection:
        summary = summarize_at(spec.model, spec.batch_size, self.model_loc)
        return ModelInspection(summary, lint(spec))

    def fit_plan(self, spec: TrainJobSpec) -> FitPlan:
        return FitPlan(
            [Stage(spec.fit.epochs, spec.compile.optimizer)],
            spec.compile.loss,
            list(spec.compile.metrics),
            early_stopping=spec.fit.early_stopping,
        )
