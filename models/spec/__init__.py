"""Pydantic job-spec models. Keras argument names wherever Keras has one."""

from models.spec.data import BUILTIN_DATASETS, DatasetSpec
from models.spec.job import CompileSpec, FitSpec, JobSpec, ModelSpec, TrainJobSpec
from models.spec.layers import LayerSpec
from models.spec.optimizers import OptimizerSpec

__all__ = [
    "BUILTIN_DATASETS",
    "CompileSpec",
    "DatasetSpec",
    "FitSpec",
    "JobSpec",
    "LayerSpec",
    "ModelSpec",
    "OptimizerSpec",
    "TrainJobSpec",
]
