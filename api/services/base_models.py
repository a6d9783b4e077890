"""Uploaded base models: inspect the file (never load it), store it, record it."""

from __future__ import annotations

from typing import BinaryIO

from sqlalchemy.orm import Session

from api.services.uploads import (
    HDF5_MAGIC,
    ZIP_MAGIC,
    clean_filename,
    magic,
    publish,
    refusals,
    stage,
    upload_limit,
)
from core.settings import Settings
from core.storage import ArtifactStore
from models.tables import BaseModel as BaseModelRow
from models.tenancy import Caller
from uploads.archives import InvalidUpload, expanded_limit
from uploads.model_files import ModelFormat, inspect_model_file


def create(
    session: Session,
    settings: Settings,
    store: ArtifactStore,
    caller: Caller,
    source: BinaryIO,
    filename: str | None,
    name: str | None,
) -> BaseModelRow:
    """Store an accepted model file and its row (flushed); refuse anything else with a
    4xx, leaving nothing behind."""
    with refusals(), store.staging() as folder:
        limit = upload_limit(settings, caller)
        staged = stage(source, folder, limit)
        format = sniff(magic(staged.path))
        summary = inspect_model_file(staged.path, format, folder, expanded_limit(limit))
        return publish(
            session,
            store,
            caller.tenant,
            "models",
            f"model.{format}",
            staged,
            lambda model_id, uri: BaseModelRow(
                id=model_id,
                tenant_id=caller.tenant,
                name=name,
                filename=clean_filename(filename, f"model.{format}"),
                format=format,
                uri=uri,
                size=staged.size,
                sha256=staged.sha256,
                summary=summary.model_dump(mode="json"),
            ),
        )


def sniff(head: bytes) -> ModelFormat:
    """The format is what the bytes are, whatever the file is called."""
    if head.startswith(ZIP_MAGIC):
        return "keras"
    if head.startswith(HDF5_MAGIC):
        return "h5"
    raise InvalidUpload("not a Keras model: expected a .keras (zip) or a .h5 (HDF5) file")
