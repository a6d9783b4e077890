"""The Keras half of a job kind: the model it trains (fresh, or the checkpoint it resumes),
what each stage sets up before it fits, and the model the job exports. The other half —
dry run, limits, the fit plan — is the kind's module in ``models/kinds/``."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import keras

from models.kinds import Stage
from models.spec.transfer import BaseRef
from worker.data import Dataset


def _as_is(model: keras.Model) -> keras.Model:
    return model


@dataclass(frozen=True)
class BuiltModel:
    model: keras.Model
    #: The model the job stores, from the one it trained.
    export: Callable[[keras.Model], keras.Model] = _as_is
    #: Run at the start of a fresh stage (not one resumed midway), before its compile:
    #: sets trainable flags and returns what the job records about the stage, or None.
    prepare: Callable[[keras.Model, Stage], dict[str, Any] | None] | None = None


class BaseModels(Protocol):
    """Where a transfer job's base model file is (``worker.resolve.Resolver``)."""

    def base_model(self, ref: BaseRef) -> Path: ...


@dataclass(frozen=True)
class BuildContext:
    data: Dataset
    bases: BaseModels
    #: The checkpoint a retry resumes from, loaded; None for a fresh start.
    resumed: keras.Model | None


#: A kind's builder; it takes that kind's spec.
ModelBuilder = Callable[[Any, BuildContext], BuiltModel]
