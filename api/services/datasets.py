"""Datasets: the built-ins the worker knows, and uploads checked and stored as .npz."""

from __future__ import annotations

from typing import BinaryIO

from sqlalchemy.orm import Session

from api.services.uploads import ZIP_MAGIC, magic, publish, refusals, stage, upload_limit
from api.upload_schemas import DatasetOut
from core.settings import Settings
from core.storage import ArtifactStore
from models.spec.data import BUILTIN_DATASETS, BUILTIN_SPLITS, cached_here
from models.tables import Dataset
from models.tenancy import Caller
from uploads.archives import InvalidUpload, expanded_limit, hash_file
from uploads.dataset_files import (
    DatasetFormat,
    DatasetInfo,
    SplitInfo,
    describe,
    read_csv,
    read_npz,
    split,
    write_npz,
)


def builtins() -> list[DatasetOut]:
    return [builtin(name) for name in BUILTIN_DATASETS]


def builtin(name: str) -> DatasetOut:
    shape, classes = BUILTIN_DATASETS[name]
    n_train, n_test, x_dtype, y_dtype = BUILTIN_SPLITS[name]
    splits = {
        part: SplitInfo(
            n=n,
            x_shape=[n, *shape],
            x_dtype=x_dtype,
            y_shape=[n],
            y_dtype=y_dtype,
            class_counts=None,
        )
        for part, n in (("train", n_train), ("test", n_test))
    }
    return DatasetOut(
        id=None,
        name=name,
        builtin=True,
        format=None,
        size=None,
        sha256=None,
        created_at=None,
        classes=classes,
        available=cached_here(name),
        info=DatasetInfo(splits=splits),
        links={"self": f"/v1/datasets/{name}"},
    )


def create(
    session: Session,
    settings: Settings,
    store: ArtifactStore,
    caller: Caller,
    source: BinaryIO,
    filename: str | None,
    name: str | None,
    label: str,
    test_fraction: float,
) -> Dataset:
    """Check an uploaded .npz or .csv, store it as .npz with its row (flushed); refuse
    anything else with a 4xx, leaving nothing behind."""
    with refusals(), store.staging() as folder:
        limit = upload_limit(settings, caller)
        staged = stage(source, folder, limit)
        format = sniff(magic(staged.path), filename)
        if format == "npz":
            arrays = read_npz(staged.path, expanded_limit(limit))
            if test_fraction and "x_test" in arrays:
                raise InvalidUpload("the .npz file has a test split; leave test_fraction out")
            if test_fraction and "x_train" in arrays and "y_train" in arrays:
                arrays = split(arrays["x_train"], arrays["y_train"], test_fraction)
        else:
            arrays = read_csv(staged.path, label, test_fraction)
        info = describe(arrays)
        stored = hash_file(write_npz(arrays, folder / "data.npz"))
        return publish(
            session,
            store,
            caller.tenant,
            "datasets",
            "data.npz",
            stored,
            lambda dataset_id, uri: Dataset(
                id=dataset_id,
                tenant_id=caller.tenant,
                name=name,
                format=format,
                uri=uri,
                size=stored.size,
                sha256=stored.sha256,
                info=info.model_dump(mode="json"),
            ),
        )


def sniff(head: bytes, filename: str | None) -> DatasetFormat:
    if head.startswith(ZIP_MAGIC):
        return "npz"
    if (filename or "").lower().endswith(".npz"):
        raise InvalidUpload("the .npz file is not a zip archive")
    return "csv"
