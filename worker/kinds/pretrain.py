"""``kind: "pretrain"``: an autoencoder (untied or tied decoder) whose encoder is exported."""

from __future__ import annotations

import functools

from models.spec import PretrainJobSpec
from worker.build.autoencoder import build_autoencoder, encoder_of
from worker.kinds.base import BuildContext, BuiltModel


def build(spec: PretrainJobSpec, context: BuildContext) -> BuiltModel:
    model = context.resumed if context.resumed is not None else build_autoencoder(spec)
    return BuiltModel(model, export=functools.partial(encoder_of, spec=spec))
