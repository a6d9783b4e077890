"""Pydantic job-spec models. Keras argument names wherever Keras has one."""

from typing import Annotated, Any

from pydantic import Discriminator, Tag, TypeAdapter

from models.spec.data import BUILTIN_DATASETS, DatasetSpec
from models.spec.job import CompileSpec, FitSpec, ModelSpec, TrainJobSpec
from models.spec.layers import LayerSpec
from models.spec.optimizers import OptimizerSpec
from models.spec.sweep import SweepJobSpec
from models.spec.transfer import PretrainJobSpec, TransferJobSpec


def _kind(value: Any) -> str:
    # "kind" may be left out: a job that trains a model from scratch is the default.
    if isinstance(value, dict):
        return str(value.get("kind", "train"))
    return str(getattr(value, "kind", "train"))


#: Any job: ``kind`` picks train (the default), transfer or pretrain.
JobSpec = Annotated[
    Annotated[TrainJobSpec, Tag("train")]
    | Annotated[TransferJobSpec, Tag("transfer")]
    | Annotated[PretrainJobSpec, Tag("pretrain")],
    Discriminator(_kind),
]
AnyJobSpec = TrainJobSpec | TransferJobSpec | PretrainJobSpec
job_spec_adapter: TypeAdapter[AnyJobSpec] = TypeAdapter(JobSpec)

#: What ``POST /v1/jobs`` takes: a job, or a sweep of many (its trials are jobs).
SubmittedSpec = Annotated[
    Annotated[TrainJobSpec, Tag("train")]
    | Annotated[TransferJobSpec, Tag("transfer")]
    | Annotated[PretrainJobSpec, Tag("pretrain")]
    | Annotated[SweepJobSpec, Tag("sweep")],
    Discriminator(_kind),
]

__all__ = [
    "BUILTIN_DATASETS",
    "AnyJobSpec",
    "CompileSpec",
    "DatasetSpec",
    "FitSpec",
    "JobSpec",
    "LayerSpec",
    "ModelSpec",
    "OptimizerSpec",
    "PretrainJobSpec",
    "SubmittedSpec",
    "SweepJobSpec",
    "TrainJobSpec",
    "TransferJobSpec",
    "job_spec_adapter",
]
