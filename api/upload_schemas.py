"""Response bodies of /v1/models (uploaded base models) and /v1/datasets."""

from __future__ import annotations

import uuid
from datetime import datetime

from pydantic import BaseModel, Field

from models.tables import BaseModel as BaseModelRow
from models.tables import Dataset
from uploads.dataset_files import DatasetInfo
from uploads.model_files import ModelFileSummary


class BaseModelOut(BaseModel):
    id: uuid.UUID
    name: str | None
    filename: str = Field(description="As uploaded.")
    format: str = Field(description="keras or h5.")
    size: int
    sha256: str
    created_at: datetime
    summary: ModelFileSummary = Field(
        description="Input shape, layers (name, type, output shape, parameters, trainable) "
        "and parameter totals, read from the file without loading it."
    )
    links: dict[str, str]

    @classmethod
    def from_row(cls, row: BaseModelRow) -> BaseModelOut:
        return cls(
            id=row.id,
            name=row.name,
            filename=row.filename,
            format=row.format,
            size=row.size,
            sha256=row.sha256,
            created_at=row.created_at,
            summary=ModelFileSummary.model_validate(row.summary),
            links={"self": f"/v1/models/{row.id}"},
        )


class BaseModelPage(BaseModel):
    items: list[BaseModelOut]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class DatasetOut(BaseModel):
    id: uuid.UUID | None = Field(description="An upload's id; null for a built-in.")
    name: str | None = Field(description="A built-in's name, or the name given at upload.")
    builtin: bool
    format: str | None = Field(description="As uploaded (npz or csv); null for a built-in.")
    size: int | None = Field(description="Bytes of the stored .npz.")
    sha256: str | None = Field(description="Of the stored .npz.")
    created_at: datetime | None
    classes: int | None = Field(description="Distinct class ids; null for float targets.")
    available: bool | None = Field(
        default=None,
        description="Built-ins: whether this API host can read it without a download "
        "(digits always; MNIST and Fashion-MNIST once in $KERAS_HOME). Workers on other "
        "hosts have caches of their own; null for uploads, which are always stored.",
    )
    info: DatasetInfo
    links: dict[str, str]

    @classmethod
    def from_row(cls, row: Dataset) -> DatasetOut:
        info = DatasetInfo.model_validate(row.info)
        labels = {label for split in info.splits.values() for label in (split.class_counts or {})}
        return cls(
            id=row.id,
            name=row.name,
            builtin=False,
            format=row.format,
            size=row.size,
            sha256=row.sha256,
            created_at=row.created_at,
            classes=len(labels) if labels else None,
            info=info,
            links={"self": f"/v1/datasets/{row.id}"},
        )


class DatasetPage(BaseModel):
    items: list[DatasetOut] = Field(
        description="Built-ins first (on the first page), then uploads, newest first."
    )
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")
