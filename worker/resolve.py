"""Where a job's inputs live: base models (a job's trained model or an upload) and
uploaded datasets, looked up in the database and read through the artifact store."""

from __future__ import annotations

import uuid
from pathlib import Path

from sqlalchemy import select

from core.storage import ArtifactStore
from models.db import transaction
from models.spec.transfer import BaseRef, JobBase
from models.tables import Artifact, ArtifactFormat, BaseModel, Dataset, Job, JobStatus
from worker.errors import JobError


class Resolver:
    def __init__(self, database_url: str, store: ArtifactStore) -> None:
        self.database_url = database_url
        self.store = store

    def base_model(self, ref: BaseRef) -> Path:
        with transaction(self.database_url) as session:
            if isinstance(ref, JobBase):
                job = session.get(Job, ref.job)
                if job is None or JobStatus(job.status) != JobStatus.SUCCEEDED:
                    state = "does not exist" if job is None else f"is {job.status}"
                    raise JobError("invalid_data", f"base job {ref.job} {state}")
                uri = session.scalars(
                    select(Artifact.uri).where(
                        Artifact.job_id == ref.job, Artifact.format == ArtifactFormat.KERAS.value
                    )
                ).one()
            else:
                upload = session.get(BaseModel, ref.model)
                if upload is None:
                    raise JobError("invalid_data", f"base model {ref.model} does not exist")
                uri = upload.uri
        return self.store.local_path(uri)

    def dataset(self, dataset_id: uuid.UUID) -> Path:
        with transaction(self.database_url) as session:
            upload = session.get(Dataset, dataset_id)
            if upload is None:
                raise JobError("invalid_data", f"dataset {dataset_id} does not exist")
            uri = upload.uri
        return self.store.local_path(uri)
