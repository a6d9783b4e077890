"""``kind: "transfer"``: the base's kept layers under a new head; each phase sets which
layers train."""

from __future__ import annotations

from typing import Any

import keras

from models.kinds import Stage
from models.spec import TransferJobSpec
from worker.build.transfer import apply_phase, build_transfer_model
from worker.kinds.base import BuildContext, BuiltModel


def build(spec: TransferJobSpec, context: BuildContext) -> BuiltModel:
    if context.resumed is not None:
        # Base layers in a resumed transfer model: all but the head.
        model, kept = context.resumed, len(context.resumed.layers) - len(spec.head_layers)
    else:
        model, kept = build_transfer_model(spec, context.bases.base_model(spec.base))

    def prepare(model: keras.Model, stage: Stage) -> dict[str, Any] | None:
        return apply_phase(model, kept=kept, phase=stage.phase) if stage.phase else None

    return BuiltModel(model, prepare=prepare)
