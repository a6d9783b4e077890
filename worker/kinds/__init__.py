"""The Keras half of each job kind, by the spec's ``kind`` (see ``models/kinds``)."""

from __future__ import annotations

from models.spec import AnyJobSpec
from worker.kinds import pretrain, train, transfer
from worker.kinds.base import BuildContext, BuiltModel, ModelBuilder

BUILDERS: dict[str, ModelBuilder] = {
    "train": train.build,
    "transfer": transfer.build,
    "pretrain": pretrain.build,
}


def build_for(spec: AnyJobSpec, context: BuildContext) -> BuiltModel:
    return BUILDERS[spec.kind](spec, context)


__all__ = ["BUILDERS", "BuildContext", "BuiltModel", "ModelBuilder", "build_for"]
