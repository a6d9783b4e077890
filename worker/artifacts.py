"""Artifact storage: trained models as files under ``<data_dir>/artifacts/<job id>/``.

Files are written to a temporary name and renamed, so a reader never sees half a model.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from pathlib import Path

import keras

from models.tables import ArtifactFormat
from worker.build.custom_layers import exportable

FILENAMES = {
    ArtifactFormat.KERAS: "model.keras",
    ArtifactFormat.H5: "model.h5",
    ArtifactFormat.CHECKPOINT: "checkpoint.keras",
}
MODEL_FORMATS = (ArtifactFormat.KERAS, ArtifactFormat.H5)


@dataclass(frozen=True)
class StoredArtifact:
    format: ArtifactFormat
    path: Path
    size: int
    sha256: str

    @property
    def uri(self) -> str:
        return self.path.as_uri()


class ArtifactStore:
    def __init__(self, root: Path) -> None:
        self.root = root

    def job_dir(self, job_id: uuid.UUID) -> Path:
        folder = self.root / str(job_id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def save_model(self, model: keras.Model, job_id: uuid.UUID) -> list[StoredArtifact]:
        """Both formats, loadable with plain Keras (custom layers exported as equivalents)."""
        model = exportable(model)
        return [self._save(model, job_id, fmt) for fmt in MODEL_FORMATS]

    def save_checkpoint(self, model: keras.Model, job_id: uuid.UUID) -> StoredArtifact:
        """The model as it trains (netkiln's layers, optimizer state and step count)."""
        return self._save(model, job_id, ArtifactFormat.CHECKPOINT)

    def load_checkpoint(self, job_id: uuid.UUID) -> keras.Model:
        return keras.models.load_model(self.job_dir(job_id) / FILENAMES[ArtifactFormat.CHECKPOINT])

    def _save(self, model: keras.Model, job_id: uuid.UUID, fmt: ArtifactFormat) -> StoredArtifact:
        folder = self.job_dir(job_id)
        final = folder / FILENAMES[fmt]
        # Keras picks the format from the suffix, so the temporary name keeps it.
        partial = folder / f".partial-{uuid.uuid4().hex}-{final.name}"
        model.save(partial)
        os.replace(partial, final)
        return StoredArtifact(fmt, final, final.stat().st_size, sha256_of(final))


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
