"""The job spec: what ``POST /v1/jobs`` takes, stored verbatim on the job row."""

from __future__ import annotations

import math
from typing import Literal

from pydantic import Field, field_validator, model_validator

from models.spec.base import MAX_LAYERS, MAX_RANK, MAX_UNITS, LossName, MetricName, StrictModel
from models.spec.data import DatasetSpec
from models.spec.layers import LayerSpec, PrimitiveLayerSpec, expand_layers
from models.spec.optimizers import Optimizer, OptimizerSpec
from models.spec.resources import ResourcesSpec


class ModelSpec(StrictModel):
    input_shape: list[int] = Field(min_length=1, max_length=MAX_RANK)
    layers: list[LayerSpec] = Field(min_length=1, max_length=MAX_LAYERS)

    @property
    def expanded_layers(self) -> list[PrimitiveLayerSpec]:
        """The layers Keras builds: blocks replaced by what they stand for."""
        return expand_layers(self.layers)

    @model_validator(mode="after")
    def _unique_names(self) -> ModelSpec:
        # Keras refuses two layers of one name; say which at submit time.
        names = [layer.name for layer in expand_layers(self.layers) if layer.name is not None]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(f"layer names must be unique; repeated: {', '.join(duplicates)}")
        return self

    @field_validator("input_shape")
    @classmethod
    def _positive_dims(cls, shape: list[int]) -> list[int]:
        if any(dim <= 0 or dim > MAX_UNITS for dim in shape):
            raise ValueError(f"every dimension must be between 1 and {MAX_UNITS}")
        return shape


class CompileSpec(StrictModel):
    loss: LossName
    optimizer: Optimizer = Field(default_factory=lambda: default_optimizer())
    metrics: list[MetricName] = Field(default_factory=list, max_length=16)


class EarlyStoppingSpec(StrictModel):
    """Keras's ``EarlyStopping``: stop once ``monitor`` stops improving."""

    monitor: str = Field(default="val_loss", pattern=r"^(val_)?[a-z_0-9]+$")
    patience: int = Field(default=10, ge=0)
    min_delta: float = Field(default=0.0, ge=0)
    restore_best_weights: bool = True


class HeldOut(StrictModel):
    """Validation examples held out of the training split by position, as Géron holds out
    the first 5,000 Fashion-MNIST images (``validation_split`` takes the last fraction)."""

    take: Literal["first", "last"] = "first"
    examples: int | None = Field(default=None, gt=0, le=100_000_000)
    fraction: float | None = Field(default=None, gt=0, lt=1)

    @model_validator(mode="after")
    def _one_size(self) -> HeldOut:
        if (self.examples is None) == (self.fraction is None):
            raise ValueError("give examples (a count) or fraction (of the training split)")
        return self

    def count(self, n: int) -> int:
        """How many of ``n`` training examples are held out."""
        if self.examples is not None:
            return min(self.examples, n)
        assert self.fraction is not None
        return math.floor(n * self.fraction)


class ValidationChoice(StrictModel):
    """How a fit holds out validation data: a fraction from the end (Keras's
    ``validation_split``), or examples, a count or a fraction, from either end
    (``validation``)."""

    validation_split: float = Field(default=0.0, ge=0, lt=1)
    validation: HeldOut | None = Field(
        default=None,
        description='e.g. {"take": "first", "examples": 5000} or {"take": "first", '
        '"fraction": 0.1}; not with validation_split.',
    )

    @model_validator(mode="after")
    def _one_way(self) -> ValidationChoice:
        if self.validation is not None and self.validation_split:
            raise ValueError("give validation_split or validation, not both")
        return self

    @property
    def validates(self) -> bool:
        return bool(self.validation_split) or self.validation is not None

    def held_out(self, n: int) -> tuple[slice, slice | None]:
        """The rows of ``n`` training examples that train, and those that validate
        (None: Keras's validation_split, or no validation)."""
        if self.validation is None:
            return slice(0, n), None
        k = self.validation.count(n)
        if self.validation.take == "first":
            return slice(k, n), slice(0, k)
        return slice(0, n - k), slice(n - k, n)

    def split_counts(self, n: int) -> tuple[int, int]:
        """(examples trained on, examples validated on) of ``n``."""
        if self.validation is not None:
            train, held = self.held_out(n)
            assert held is not None
            return train.stop - train.start, held.stop - held.start
        # Keras keeps the first floor(n × (1 − split)) examples for training.
        kept = math.floor(n * (1 - self.validation_split))
        return kept, n - kept


class ExecutionChoice(StrictModel):
    """How a fit runs on its worker (worker/execution.py): train steps per round trip to
    Python (the same steps in the same order, so the same numbers), and the opt-in choices
    that change the numbers for speed: 16-bit precision and XLA."""

    steps_per_execution: Literal["auto"] | int = Field(
        default="auto",
        description='"auto": sized by the worker for about two progress reports a second '
        "from the speed it measured (the plan is on the job: execution); a count: at most "
        "that many. Always 1 under a per-step learning-rate schedule.",
    )

    precision: Literal["float32", "mixed_bfloat16", "mixed_float16"] = Field(
        default="float32",
        description="Keras's dtype policy: mixed_* computes in 16 bits with float32 weights "
        "(faster where the device has 16-bit units: mixed_float16 on GPUs, with loss "
        "scaling; mixed_bfloat16 on TPUs, recent GPUs and CPUs with bf16 units). Changes the "
        "numbers: the dry run says so.",
    )
    jit_compile: Literal["auto"] | bool = Field(
        default="auto",
        description='XLA. "auto": Keras\'s choice, as a plain script gets it (on where the '
        "backend and devices support it, off on CPU-only TensorFlow). true may change the "
        "numbers in the last digits: the dry run says so.",
    )

    @field_validator("steps_per_execution")
    @classmethod
    def _positive(cls, value: Literal["auto"] | int) -> Literal["auto"] | int:
        if value != "auto" and not 1 <= value <= 10_000:
            raise ValueError('use "auto" or a count from 1 to 10000')
        return value


class FitSpec(ValidationChoice, ExecutionChoice):
    epochs: int = Field(gt=0, le=10_000)
    batch_size: int = Field(default=32, gt=0, le=65_536)
    shuffle: bool = True
    early_stopping: EarlyStoppingSpec | None = None


#: Text without control characters (PostgreSQL cannot store NUL; none belongs in a name).
PRINTABLE = r"^[^\x00-\x1f\x7f]*$"


class JobSpecBase(StrictModel):
    name: str | None = Field(
        default=None,
        min_length=1,
        max_length=200,
        pattern=PRINTABLE,
        description="Shown in listings and on curves; any text without control characters.",
    )
    seed: int | None = Field(default=None, ge=0, le=2**31 - 1)
    max_runtime: float | None = Field(
        default=None, gt=0, le=30 * 24 * 3600, description="Seconds; past this the job fails."
    )
    dataset: DatasetSpec
    resources: ResourcesSpec = Field(
        default_factory=ResourcesSpec,
        description="The devices the job needs; it waits in the queue of workers that have them.",
    )


class TrainJobSpec(JobSpecBase):
    """Build ``model`` from scratch, compile, fit on ``dataset``, evaluate on its test split."""

    kind: Literal["train"] = "train"
    model: ModelSpec
    compile: CompileSpec
    fit: FitSpec

    @property
    def total_epochs(self) -> int:
        return self.fit.epochs

    @property
    def batch_size(self) -> int:
        return self.fit.batch_size


def default_optimizer() -> OptimizerSpec:
    """Keras's default: Adam with its defaults."""
    from models.spec.optimizers import Adam

    return Adam(type="Adam")
