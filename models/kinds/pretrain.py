"""``kind: "pretrain"``: an autoencoder on the dataset's inputs; the job's model is the
trained encoder, ready to be a transfer job's base."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy.orm import Session

from models.kinds.base import FitPlan, JobKind, Loc, ModelInspection, Stage, summarize_at
from models.spec import PretrainJobSpec


class PretrainKind(JobKind[PretrainJobSpec]):
    name = "pretrain"
    model_loc: ClassVar[Loc] = ["encoder"]
    epochs_loc: ClassVar[Loc] = ["fit", "epochs"]

    def inspect(self, session: Session, spec: PretrainJobSpec, tenant: str) -> ModelInspection:
        # The job's model is the encoder; the decoder is scaffolding for training it.
        return ModelInspection(summarize_at(spec.encoder, spec.batch_size, self.model_loc))

    def fit_plan(self, spec: PretrainJobSpec) -> FitPlan:
        return FitPlan(
            [Stage(spec.fit.epochs, spec.compile.optimizer)],
            spec.compile.loss,
            list(spec.compile.metrics),
            reconstruct=True,
        )
