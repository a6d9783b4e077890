"""A job's Keras artifacts, written and read through the storage seam (:mod:`core.storage`):
the trained model in both formats, loadable by plain Keras, and the per-epoch checkpoint
(and, with early stopping that restores the best weights, the best epoch's model) a retry
resumes from, found by the URI its row records, on whichever host wrote it.

A checkpoint is stored under a name of its own epoch (``checkpoint-00007.keras``), never
over the previous one: the row always names a whole object of the epoch it says, even if
the worker dies between writing the object and recording it. The superseded one is deleted
once the new row is committed, and :meth:`JobArtifacts.prune` removes what a killed worker
left unreferenced."""

from __future__ import annotations

import logging
import shutil
import uuid
from collections.abc import Iterable, Mapping

import keras

from core.storage import ArtifactStore, StorageUnavailable, StoredObject, job_folder, job_key
from models.tables import MODEL_FORMATS, ArtifactFormat
from worker.build.custom_layers import exportable

log = logging.getLogger(__name__)

FILENAMES = {ArtifactFormat.KERAS: "model.keras", ArtifactFormat.H5: "model.h5"}
#: Stored once per epoch, under ``<stem>-<epoch>.keras``.
EPOCH_STEMS = {ArtifactFormat.CHECKPOINT: "checkpoint", ArtifactFormat.BEST: "best"}

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
        return {fmt: self._save(model, FILENAMES[fmt]) for fmt in MODEL_FORMATS}

    def save_epoch_state(
        self, model: keras.Model, epoch: int, formats: Iterable[ArtifactFormat]
    ) -> StoredArtifacts:
        """The model as it trains (netkiln's layers, optimizer state and step count) after
        ``epoch``, as a checkpoint and/or the best model so far."""
        return {fmt: self._save(model, f"{EPOCH_STEMS[fmt]}-{epoch:05d}.keras") for fmt in formats}

    def copy(self, uris: Mapping[ArtifactFormat, str]) -> StoredArtifacts:
        """Another job's models, copied into this job's folder under the usual names."""
        copied: StoredArtifacts = {}
        for fmt, uri in uris.items():
            # Into staging first: put() consumes its source, and local_path() may be the
            # stored object itself (a file store) or the host's cached copy (S3).
            with self.store.staging() as folder:
                staged = folder / FILENAMES[fmt]
                shutil.copyfile(self.store.local_path(uri), staged)
                key = job_key(self.tenant, self.job_id, FILENAMES[fmt])
                copied[fmt] = self.store.put(key, staged)
        return copied

    def load(self, uri: str) -> keras.Model:
        return keras.models.load_model(self.store.local_path(uri))

    def delete(self, uris: Iterable[str]) -> None:
        """Best effort: an object left behind is pruned later, never read."""
        for uri in uris:
            try:
                self.store.delete(uri)
            except (StorageUnavailable, OSError) as exc:
                log.warning("could not delete superseded %s: %s", uri, exc)

    def prune(self, keep: Iterable[str]) -> list[str]:
        """Delete every object of the job that no row names (checkpoints a killed worker
        wrote but never recorded, or recorded and never deleted); the URIs deleted."""
        kept = set(keep)
        unreferenced = [
            uri
            for uri in self.store.uris_under(job_folder(self.tenant, self.job_id))
            if uri not in kept
        ]
        self.delete(unreferenced)
        return unreferenced

    def _save(self, model: keras.Model, filename: str) -> StoredObject:
        with self.store.staging() as folder:
            # Keras picks the format from the suffix, so the staged name is the final one.
            staged = folder / filename
            model.save(staged)
            return self.store.put(job_key(self.tenant, self.job_id, filename), staged)
