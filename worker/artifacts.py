"""A job's Keras artifacts, written and read through the storage seam (:mod:`core.storage`):
the trained model in both formats, loadable by plain Keras, and the per-epoch checkpoint a
retry resumes from (found by the URI its row records, on whichever host wrote it)."""

from __future__ import annotations

import uuid

import keras

from core.storage import ArtifactStore, StoredObject, job_key
from models.tables import ArtifactFormat
from worker.build.custom_layers import exportable

FILENAMES = {
    ArtifactFormat.KERAS: "model.keras",
    ArtifactFormat.H5: "model.h5",
    ArtifactFormat.CHECKPOINT: "checkpoint.keras",
}
MODEL_FORMATS = (ArtifactFormat.KERAS, ArtifactFormat.H5)

#: What a job's artifact rows record, by format.
StoredArtifacts = dict[ArtifactFormat, StoredObject]


class JobArtifacts:
    def __init__(self, store: ArtifactStore, tenant: str, job_id: uuid.UUID) -> None:
        self.store = store
        self.tenant = tenant
        self.job_id = job_id

    def save_model(self, model: keras.Model) -> StoredArtifacts:
        """Both formats, loadable with plain Keras (custom layers exported as equivalents)."""
        model = exportable(model)
        return {fmt: self._save(model, fmt) for fmt in MODEL_FORMATS}

    def save_checkpoint(self, model: keras.Model) -> StoredArtifacts:
        """The model as it trains (netkiln's layers, optimizer state and step count)."""
        return {ArtifactFormat.CHECKPOINT: self._save(model, ArtifactFormat.CHECKPOINT)}

    def load(self, uri: str) -> keras.Model:
        return keras.models.load_model(self.store.local_path(uri))

    def _save(self, model: keras.Model, fmt: ArtifactFormat) -> StoredObject:
        filename = FILENAMES[fmt]
        with self.store.staging() as folder:
            # Keras picks the format from the suffix, so the staged name is the final one.
            staged = folder / filename
            model.save(staged)
            return self.store.put(job_key(self.tenant, self.job_id, filename), staged)
