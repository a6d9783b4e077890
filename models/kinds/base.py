"""What every job kind provides, behind one small interface: the dry run (the model's
layers, shapes and parameter counts, and the spec's warnings), where its limits point in
the spec, and its training plan — the stages, loss and metrics the worker fits with.

Pure Python: the API uses kinds to validate and inspect, the worker to plan, and neither
side's framework is imported here. The Keras half of a kind (building its model) lives in
``worker/kinds/``, registered under the same name.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import ClassVar, Generic, TypeVar

from sqlalchemy.orm import Session

from models.spec import AnyJobSpec, ModelSpec, OptimizerSpec
from models.spec.job import EarlyStoppingSpec
from models.spec.lint import SpecWarning
from models.spec.transfer import Phase
from models.summary import DataSizes, InvalidLayerError, ModelSummary, summarize

SpecT = TypeVar("SpecT", bound=AnyJobSpec)

#: A field's place in the spec, as in a 422's ``loc`` (after ``body``).
Loc = list[str | int]


class SpecError(ValueError):
    """The spec validates field by field but not as a whole (a layer that cannot take
    its input's shape, a base that does not exist): ``loc`` names the field."""

    def __init__(self, message: str, loc: Loc) -> None:
        super().__init__(message)
        self.message = message
        self.loc = loc


@dataclass(frozen=True)
class ModelInspection:
    """What a kind reads from its spec alone: every kind knows its model's layers and
    counts (a transfer base whose shapes cannot be followed to the cut is refused), so
    limits always have a count."""

    summary: ModelSummary
    warnings: list[SpecWarning] = field(default_factory=list)


@dataclass(frozen=True)
class Inspection(ModelInspection):
    """The dry run: the kind's inspection, checked against the data by the preflight
    (``models/preflight.py``), with the examples the job will use."""

    sizes: DataSizes = field(kw_only=True)


@dataclass(frozen=True)
class Stage:
    """A run of ``epochs`` epochs under one compile. ``phase``: a transfer phase whose
    trainable set is applied at the stage's start."""

    epochs: int
    optimizer: OptimizerSpec
    phase: Phase | None = None


@dataclass(frozen=True)
class FitPlan:
    stages: list[Stage]
    loss: str
    metrics: list[str]
    early_stopping: EarlyStoppingSpec | None = None
    #: Autoencoders learn x → x: the inputs are the targets.
    reconstruct: bool = False


@dataclass(frozen=True)
class Inputs:
    """What a job reads besides its spec: uploads by id, and jobs whose model it builds on.
    An upload or job a waiting job still needs cannot be deleted."""

    datasets: frozenset[uuid.UUID] = frozenset()
    models: frozenset[uuid.UUID] = frozenset()
    jobs: frozenset[uuid.UUID] = frozenset()


class JobKind(ABC, Generic[SpecT]):
    #: The spec's ``kind``.
    name: ClassVar[str]
    #: Where a model-size limit (``max_params``) points.
    model_loc: ClassVar[Loc]
    #: Where a training-work limit (``max_epoch_examples``) points.
    epochs_loc: ClassVar[Loc]

    @abstractmethod
    def inspect(self, session: Session, spec: SpecT, tenant: str) -> ModelInspection:
        """The dry run. What the spec refers to must belong to ``tenant``; another
        tenant's ids read as unknown (:class:`SpecError`)."""

    @abstractmethod
    def fit_plan(self, spec: SpecT) -> FitPlan: ...

    def inputs(self, spec: SpecT) -> Inputs:
        """Every kind trains on a dataset, built in or uploaded."""
        uploaded = spec.dataset.id
        return Inputs(datasets=frozenset() if uploaded is None else frozenset({uploaded}))


def summarize_at(model: ModelSpec, batch_size: int, loc: Loc) -> ModelSummary:
    """The model's summary; a layer that cannot be built is a :class:`SpecError` at it."""
    try:
        return summarize(model, batch_size=batch_size)
    except InvalidLayerError as exc:
        raise SpecError(f"{exc.layer_type}: {exc.reason}", [*loc, "layers", exc.index]) from exc
