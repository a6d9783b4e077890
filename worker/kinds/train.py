"""``kind: "train"``: the spec's model, built from scratch."""

from __future__ import annotations

from models.spec import TrainJobSpec
from worker.build.model import build_model
from worker.errors import JobError
from worker.kinds.base import BuildContext, BuiltModel


def build(spec: TrainJobSpec, context: BuildContext) -> BuiltModel:
    _check_labels(spec, context.data.n_classes)
    if context.resumed is not None:
        return BuiltModel(context.resumed)
    return BuiltModel(build_model(spec.model, name=spec.name))


def _check_labels(spec: TrainJobSpec, n_classes: int) -> None:
    """A classification head narrower than the label range fails deep inside the
    backend with an opaque message; say what is wrong instead."""
    if spec.compile.loss not in {"sparse_categorical_crossentropy", "categorical_crossentropy"}:
        return
    last_dense = next(
        (layer for layer in reversed(spec.model.expanded_layers) if layer.type == "Dense"), None
    )
    units = getattr(last_dense, "units", None)
    if units is not None and units < n_classes:
        raise JobError(
            "invalid_data",
            f"the dataset has {n_classes} classes but the last Dense layer has {units} units",
        )
