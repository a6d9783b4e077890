"""Deleting ended jobs and unused uploads, on both backends: the rows and the stored
objects go; what a queued or running job still needs is refused with a 409 that says
why; another tenant's things read as absent."""

from __future__ import annotations

import copy
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from core.storage import job_key, open_store
from models.db import transaction
from models.tables import Artifact, EpochMetrics, Job, JobEvent, JobStatus
from tests.api.test_tenancy import SPEC, npz_bytes
from tests.conftest import Backend, api_client, new_api_key

pytestmark = pytest.mark.usefixtures("backend")

TRANSFER_SPEC: dict[str, Any] = {
    "name": "builds-on-a-job",
    "kind": "transfer",
    "base": {"job": "REPLACED"},
    "cut": {"drop": 1},
    "head": [{"type": "Dense", "units": 10, "activation": "softmax"}],
    "dataset": {"name": "digits"},
    "compile": {"loss": "sparse_categorical_crossentropy"},
    "phases": [{"trainable": "head", "epochs": 1, "optimizer": {"type": "SGD"}}],
}


#: This module's tenant: its rows stay apart from other modules' on the shared database.
TENANT = f"del-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def client(backend: Backend) -> Iterator[TestClient]:
    with api_client(backend.settings(), tenant=TENANT) as client:
        yield client


def tenant_of(_: TestClient) -> str:
    return TENANT


def add_job(
    backend: Backend,
    tenant: str,
    status: JobStatus,
    spec: dict[str, Any] = SPEC,
    parent: uuid.UUID | None = None,
) -> tuple[uuid.UUID, list[str]]:
    """A job row with an epoch, an event and two stored artifacts; its id and their URIs."""
    settings = backend.settings()
    store = open_store(settings)
    job_id = uuid.uuid4()
    uris = []
    for filename in ("model.keras", "checkpoint.keras"):
        with store.staging() as folder:
            staged = folder / filename
            staged.write_bytes(b"stored bytes")
            uris.append(store.put(job_key(tenant, job_id, filename), staged).uri)
    with transaction(settings.resolved_database_url) as session:
        session.add(
            Job(
                id=job_id,
                tenant_id=tenant,
                name="to-delete",
                kind=spec.get("kind", "train"),
                status=status,
                spec=spec,
                epochs_total=1,
                parent_id=parent,
            )
        )
        session.flush()
        session.add(EpochMetrics(job_id=job_id, epoch=1, values={"loss": 1.0}, seconds=0.1))
        session.add(JobEvent(job_id=job_id, kind="log", data={"level": "info", "message": "x"}))
        for fmt, uri in zip(("keras", "checkpoint"), uris, strict=True):
            session.add(Artifact(job_id=job_id, format=fmt, uri=uri, size=12, sha256="0" * 64))
    return job_id, uris


def rows_of(backend: Backend, job_id: uuid.UUID) -> int:
    with transaction(backend.settings().resolved_database_url) as session:
        return sum(
            session.scalar(select(func.count()).select_from(table).where(column == job_id)) or 0
            for table, column in (
                (Job, Job.id),
                (EpochMetrics, EpochMetrics.job_id),
                (JobEvent, JobEvent.job_id),
                (Artifact, Artifact.job_id),
            )
        )


def set_status(backend: Backend, job_id: uuid.UUID, status: JobStatus) -> None:
    with transaction(backend.settings().resolved_database_url) as session:
        job = session.get(Job, job_id)
        assert job is not None
        job.status = status


class TestJobs:
    def test_an_ended_job_goes_with_its_rows_children_and_stored_objects(
        self, backend: Backend, client: TestClient
    ) -> None:
        tenant = tenant_of(client)
        parent, parent_uris = add_job(backend, tenant, JobStatus.SUCCEEDED)
        child, child_uris = add_job(backend, tenant, JobStatus.FAILED, parent=parent)
        store = open_store(backend.settings())
        # What a worker killed between storing a checkpoint and recording it leaves.
        with store.staging() as folder:
            (folder / "orphan").write_bytes(b"never recorded")
            orphan = store.put(
                job_key(tenant, parent, "checkpoint-00002.keras"), folder / "orphan"
            ).uri
        assert all(store.exists(uri) for uri in [*parent_uris, *child_uris, orphan])

        assert client.delete(f"/v1/jobs/{parent}").status_code == 204
        assert client.get(f"/v1/jobs/{parent}").status_code == 404
        assert client.get(f"/v1/jobs/{child}").status_code == 404
        assert rows_of(backend, parent) == rows_of(backend, child) == 0
        assert not any(store.exists(uri) for uri in [*parent_uris, *child_uris, orphan])
        assert client.delete(f"/v1/jobs/{parent}").status_code == 404

    @pytest.mark.parametrize("status", [JobStatus.QUEUED, JobStatus.RUNNING])
    def test_a_job_that_has_not_ended_is_refused(
        self, backend: Backend, client: TestClient, status: JobStatus
    ) -> None:
        job_id, uris = add_job(backend, tenant_of(client), status)
        refused = client.delete(f"/v1/jobs/{job_id}")
        assert refused.status_code == 409
        assert "cancel it first" in refused.json()["detail"]
        assert rows_of(backend, job_id) > 0
        assert open_store(backend.settings()).exists(uris[0])
        set_status(backend, job_id, JobStatus.CANCELLED)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 204

    def test_a_base_a_waiting_transfer_builds_on_is_refused_until_it_ends(
        self, backend: Backend, client: TestClient
    ) -> None:
        tenant = tenant_of(client)
        base, _ = add_job(backend, tenant, JobStatus.SUCCEEDED)
        spec = copy.deepcopy(TRANSFER_SPEC) | {"base": {"job": str(base)}}
        transfer, _ = add_job(backend, tenant, JobStatus.QUEUED, spec=spec)
        refused = client.delete(f"/v1/jobs/{base}")
        assert refused.status_code == 409
        assert str(transfer) in refused.json()["detail"]
        set_status(backend, transfer, JobStatus.SUCCEEDED)
        assert client.delete(f"/v1/jobs/{base}").status_code == 204
        assert client.get(f"/v1/jobs/{transfer}").status_code == 200  # not a child

    def test_another_tenants_job_reads_as_absent(
        self, backend: Backend, client: TestClient
    ) -> None:
        other = f"other-{uuid.uuid4().hex[:8]}"
        new_api_key(backend.settings().resolved_database_url, other)  # makes the tenant
        job_id, _ = add_job(backend, other, JobStatus.SUCCEEDED)
        assert client.delete(f"/v1/jobs/{job_id}").status_code == 404
        assert rows_of(backend, job_id) > 0


class TestUploads:
    def test_an_unused_dataset_goes_with_its_file(
        self, backend: Backend, client: TestClient
    ) -> None:
        dataset = client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes())}).json()
        uri = self._uri(backend, "datasets", dataset["id"])
        assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204
        assert client.get(f"/v1/datasets/{dataset['id']}").status_code == 404
        assert not open_store(backend.settings()).exists(uri)
        assert client.delete("/v1/datasets/mnist").status_code == 404  # built-ins stay

    def test_a_dataset_a_queued_job_trains_on_is_refused(
        self, backend: Backend, client: TestClient
    ) -> None:
        dataset = client.post("/v1/datasets", files={"file": ("d.npz", npz_bytes())}).json()
        spec = copy.deepcopy(SPEC) | {"dataset": {"id": dataset["id"]}}
        spec["model"] = {**spec["model"], "input_shape": [4]}
        job_id, _ = add_job(backend, tenant_of(client), JobStatus.QUEUED, spec=spec)
        refused = client.delete(f"/v1/datasets/{dataset['id']}")
        assert refused.status_code == 409
        assert str(job_id) in refused.json()["detail"]
        set_status(backend, job_id, JobStatus.CANCELLED)
        assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 204

    def test_a_model_a_running_transfer_starts_from_is_refused(
        self, backend: Backend, client: TestClient, tmp_path: Path
    ) -> None:
        from tests.api.test_tenancy import _upload_tiny_model

        model_id = _upload_tiny_model(client, tmp_path)
        uri = self._uri(backend, "models", model_id)
        spec = copy.deepcopy(TRANSFER_SPEC) | {"base": {"model": model_id}}
        job_id, _ = add_job(backend, tenant_of(client), JobStatus.RUNNING, spec=spec)
        assert client.delete(f"/v1/models/{model_id}").status_code == 409
        set_status(backend, job_id, JobStatus.FAILED)
        assert client.delete(f"/v1/models/{model_id}").status_code == 204
        assert client.get(f"/v1/models/{model_id}").status_code == 404
        assert not open_store(backend.settings()).exists(uri)

    def test_another_tenants_upload_reads_as_absent(
        self, backend: Backend, client: TestClient
    ) -> None:
        with api_client(backend.settings(), tenant=f"o-{uuid.uuid4().hex[:8]}") as other:
            dataset = other.post("/v1/datasets", files={"file": ("d.npz", npz_bytes())}).json()
        assert client.delete(f"/v1/datasets/{dataset['id']}").status_code == 404
        uri = self._uri(backend, "datasets", dataset["id"])
        assert open_store(backend.settings()).exists(uri)

    @staticmethod
    def _uri(backend: Backend, kind: str, upload_id: str) -> str:
        from models.tables import BaseModel, Dataset

        table = Dataset if kind == "datasets" else BaseModel
        with transaction(backend.settings().resolved_database_url) as session:
            row = session.get(table, uuid.UUID(upload_id))
            assert row is not None
            return row.uri


def test_a_stored_spec_that_no_longer_validates_still_protects_what_it_names(
    backend: Backend, client: TestClient
) -> None:
    """A queued job's spec from another version of the schema: whatever id it holds is
    taken as needed, rather than deleted under it."""
    base, _ = add_job(backend, TENANT, JobStatus.SUCCEEDED)
    spec = {"kind": "transfer", "base": {"job": str(base)}, "from_a_later_version": True}
    waiting, _ = add_job(backend, TENANT, JobStatus.QUEUED, spec=spec)
    assert client.delete(f"/v1/jobs/{base}").status_code == 409
    set_status(backend, waiting, JobStatus.CANCELLED)
    assert client.delete(f"/v1/jobs/{base}").status_code == 204
