"""Job kinds, one module each, found by the spec's ``kind``. Adding a kind: its spec class
(``models/spec``, in the ``JobSpec`` union), one module here with its :class:`JobKind`,
and, if it builds a new kind of model, one module in ``worker/kinds/``."""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session

from models.kinds.base import FitPlan, Inspection, JobKind, Loc, SpecError, Stage
from models.kinds.pretrain import PretrainKind
from models.kinds.train import TrainKind
from models.kinds.transfer import TransferKind
from models.preflight import preflight
from models.spec import AnyJobSpec
from models.spec.lint import changed_numerics
from models.tables import Dataset

KINDS: dict[str, JobKind[Any]] = {
    kind.name: kind for kind in (TrainKind(), TransferKind(), PretrainKind())
}


def kind_of(spec: AnyJobSpec) -> JobKind[Any]:
    return KINDS[spec.kind]


def inspect(session: Session, spec: AnyJobSpec, tenant: str) -> Inspection:
    """The dry run of any job. What it refers to (an uploaded dataset, a base job or
    model) must belong to ``tenant``; another tenant's ids read as unknown."""
    if spec.dataset.id is not None:
        dataset = session.get(Dataset, spec.dataset.id)
        if dataset is None or dataset.tenant_id != tenant:
            raise SpecError(f"no uploaded dataset {spec.dataset.id}", ["dataset", "id"])
    kind = kind_of(spec)
    inspection = kind.inspect(session, spec, tenant)
    checked = preflight(session, spec, inspection.summary, kind.fit_plan(spec), kind.model_loc)
    warnings = [*inspection.warnings, *checked.warnings, *changed_numerics(spec.fit)]
    return Inspection(inspection.summary, warnings, sizes=checked.sizes)


__all__ = [
    "KINDS",
    "FitPlan",
    "Inspection",
    "JobKind",
    "Loc",
    "SpecError",
    "Stage",
    "inspect",
    "kind_of",
]
