"""Tenants and API keys, on both backends: every /v1 route needs a key, a revoked key
stops working, nothing of one tenant is visible to another (404, as if it did not exist),
each limit answers with its own 4xx naming the limit, and keys stay out of logs and rows.
"""

from __future__ import annotations

import copy
import logging
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select, text

from api.app import create_app
from core.settings import Settings
from core.storage import job_key, open_store
from models.db import transaction
from models.spec import TrainJobSpec
from models.summary import summarize
from models.tables import ApiKey, Artifact, BaseModel, Dataset, EpochMetrics, Job, JobStatus
from models.tenancy import create_key, revoke_keys, set_limits
from tests.conftest import Backend, auth_headers, npz
from worker.jobstore import JobStore

SPEC: dict[str, Any] = {
    "name": "tenant-digits",
    "dataset": {"name": "digits"},
    "model": {
        "input_shape": [8, 8],
        "layers": [
            {"type": "Flatten"},
            {"type": "Dense", "units": 16, "activation": "relu"},
            {"type": "Dense", "units": 10, "activation": "softmax"},
        ],
    },
    "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
    "fit": {"epochs": 3, "batch_size": 16},
}
#: 64·16 + 16 + 16·10 + 10
SPEC_PARAMS = 1210


def npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    return npz(x_train=rng.random((40, 4)), y_train=rng.integers(0, 2, 40))


@dataclass
class Owned:
    """Tenant A's things, which tenant B must not reach."""

    job: str
    model: str
    dataset: str


@dataclass
class Tenants:
    settings: Settings
    a: TestClient
    b: TestClient
    owned: Owned
    tenants: tuple[str, str]

    @property
    def database_url(self) -> str:
        return self.settings.resolved_database_url


@pytest.fixture(scope="module")
def tenants(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    # Limits and revocations are read afresh on every request here; the read cache has a
    # test of its own.
    settings = backend.settings().model_copy(update={"read_cache_seconds": 0})
    suffix = uuid.uuid4().hex[:8]
    names = (f"a-{suffix}", f"b-{suffix}")
    app = create_app(settings)
    with (
        TestClient(app, headers=auth_headers(settings, names[0])) as a,
        TestClient(app, headers=auth_headers(settings, names[1])) as b,
    ):
        owned = _tenant_a_owns(settings, a, names[0], tmp_path_factory.mktemp("artifacts"))
        yield Tenants(settings, a, b, owned, names)
    with transaction(settings.resolved_database_url) as session:
        for table in (Job, BaseModel, Dataset):
            session.execute(delete(table).where(table.tenant_id.in_(names)))
        session.execute(
            text("DELETE FROM tenants WHERE id IN (:a, :b)"), {"a": names[0], "b": names[1]}
        )


def _tenant_a_owns(settings: Settings, a: TestClient, tenant: str, folder: Path) -> Owned:
    staged = folder / "model.keras"
    staged.write_bytes(b"PK not really a model; only its bytes are served")
    job_id = uuid.uuid4()
    stored = open_store(settings).put(job_key(tenant, job_id, "model.keras"), staged)
    with transaction(settings.resolved_database_url) as session:
        session.add(
            Job(
                id=job_id,
                tenant_id=tenant,
                name="a-job",
                kind="train",
                status=JobStatus.SUCCEEDED,
                spec=SPEC,
                epochs_total=1,
                summary=summarize(TrainJobSpec.model_validate(SPEC).model).model_dump(mode="json"),
            )
        )
        session.flush()
        session.add(EpochMetrics(job_id=job_id, epoch=1, values={"loss": 1.0}, seconds=0.1))
        for format in ("keras", "h5", "checkpoint"):
            session.add(
                Artifact(job_id=job_id, format=format, uri=stored.uri, size=1, sha256="0" * 64)
            )
    dataset = a.post("/v1/datasets", files={"file": ("d.npz", npz_bytes())})
    assert dataset.status_code == 201, dataset.text
    model = _upload_tiny_model(a, folder)
    return Owned(job=str(job_id), model=model, dataset=dataset.json()["id"])


def _upload_tiny_model(client: TestClient, folder: Path) -> str:
    import keras

    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2)])
    path = folder / "tiny.keras"
    model.save(path)
    response = client.post("/v1/models", files={"file": ("tiny.keras", path.read_bytes())})
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _requests_for_every_route(app: Any, owned: Owned) -> list[tuple[str, str]]:
    """One concrete (method, path) per /v1 operation of the OpenAPI schema, with tenant
    A's ids filled in."""
    values = {"job_id": owned.job, "model_id": owned.model, "dataset": owned.dataset}
    requests: list[tuple[str, str]] = []
    for template, operations in app.openapi()["paths"].items():
        if not template.startswith("/v1"):
            continue
        path = re.sub(r"\{(\w+)\}", lambda m: values[m.group(1)], template)
        if path.endswith("compare.png"):
            path += f"?ids={owned.job}"
        requests.extend((method.upper(), path) for method in sorted(operations))
    return requests


class TestKeys:
    def test_every_v1_route_needs_a_key(self, tenants: Tenants) -> None:
        anonymous = TestClient(tenants.a.app)
        requests = _requests_for_every_route(tenants.a.app, tenants.owned)
        assert len(requests) >= 14
        for method, path in requests:
            response = anonymous.request(method, path)
            assert response.status_code == 401, (method, path, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            wrong = anonymous.request(method, path, headers={"Authorization": "Bearer nk_nope"})
            assert wrong.status_code == 401, (method, path)

    def test_health_and_docs_need_none(self, tenants: Tenants) -> None:
        anonymous = TestClient(tenants.a.app)
        for path in ("/healthz", "/readyz", "/openapi.json"):
            assert anonymous.get(path).status_code == 200, path

    def test_a_revoked_key_gets_401(self, tenants: Tenants) -> None:
        with transaction(tenants.database_url) as session:
            _, key = create_key(session, tenants.tenants[0], name="short-lived")
        headers = {"Authorization": f"Bearer {key}"}
        assert tenants.a.get("/v1/jobs", headers=headers).status_code == 200
        with transaction(tenants.database_url) as session:
            assert len(revoke_keys(session, key)) == 1
        response = tenants.a.get("/v1/jobs", headers=headers)
        assert response.status_code == 401
        assert "revoked" in response.json()["detail"]

    def test_with_the_read_cache_a_revocation_lands_within_its_seconds(
        self, backend: Backend, tenants: Tenants
    ) -> None:
        settings = backend.settings().model_copy(update={"read_cache_seconds": 0.3})
        with transaction(tenants.database_url) as session:
            _, key = create_key(session, tenants.tenants[0], name="cached")
        with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as c:
            assert c.get(f"/v1/jobs/{tenants.owned.job}").status_code == 200
            with transaction(tenants.database_url) as session:
                revoke_keys(session, key)
            time.sleep(0.4)
            assert c.get(f"/v1/jobs/{tenants.owned.job}").status_code == 401
            assert c.get("/v1/jobs").status_code == 401

    def test_only_the_hash_is_stored(self, tenants: Tenants) -> None:
        with transaction(tenants.database_url) as session:
            row, key = create_key(session, tenants.tenants[0])
            stored = session.get(ApiKey, row.id)
            assert stored is not None
            assert key not in {stored.key_hash, stored.prefix, stored.name}
            assert stored.key_hash == __import__("hashlib").sha256(key.encode()).hexdigest()

    def test_keys_stay_out_of_logs_and_job_rows(
        self, tenants: Tenants, caplog: pytest.LogCaptureFixture
    ) -> None:
        key = tenants.a.headers["Authorization"].removeprefix("Bearer ")
        with caplog.at_level(logging.DEBUG):
            response = tenants.a.post("/v1/jobs?dry_run=true", json=SPEC)
            assert response.status_code == 200
            tenants.a.get("/v1/jobs/not-a-uuid")
        assert key not in caplog.text
        assert key not in response.text
        with transaction(tenants.database_url) as session:
            job = session.get(Job, uuid.UUID(tenants.owned.job))
            assert job is not None
            assert key not in repr(job.spec)

    def test_single_tenant_mode_needs_no_key(self, backend: Backend) -> None:
        settings = backend.settings().model_copy(update={"auth": "none"})
        with TestClient(create_app(settings)) as anonymous:
            assert anonymous.get("/v1/jobs").status_code == 200
            assert anonymous.post("/v1/jobs?dry_run=true", json=SPEC).status_code == 200


class TestIsolation:
    def test_other_tenants_reads_and_downloads_are_404(self, tenants: Tenants) -> None:
        for method, path in _requests_for_every_route(tenants.b.app, tenants.owned):
            if path in {"/v1/jobs", "/v1/models", "/v1/datasets"}:
                continue  # collections: their own tenant's (below)
            if path.endswith("/model"):
                for format in ("keras", "h5", "checkpoint"):
                    assert tenants.a.get(f"{path}?format={format}").status_code == 200
                    response = tenants.b.get(f"{path}?format={format}")
                    assert response.status_code == 404, (path, format)
                continue
            response = tenants.b.request(method, path)
            assert response.status_code == 404, (method, path, response.text)
            assert tenants.owned.job not in response.text or "no job" in response.text

    def test_owner_sees_them(self, tenants: Tenants) -> None:
        owned = tenants.owned
        for path in (
            f"/v1/jobs/{owned.job}",
            f"/v1/jobs/{owned.job}/metrics",
            f"/v1/jobs/{owned.job}/curves.png",
            f"/v1/models/{owned.model}",
            f"/v1/datasets/{owned.dataset}",
        ):
            assert tenants.a.get(path).status_code == 200, path

    def test_listings_hold_only_the_callers(self, tenants: Tenants) -> None:
        owned = tenants.owned
        for path, own_id in (
            ("/v1/jobs", owned.job),
            ("/v1/models", owned.model),
            ("/v1/datasets", owned.dataset),
        ):
            assert own_id in {item.get("id") for item in tenants.a.get(path).json()["items"]}
            assert own_id not in {item.get("id") for item in tenants.b.get(path).json()["items"]}

    @pytest.mark.parametrize("reference", ["job", "model", "dataset"])
    def test_specs_cannot_name_another_tenants_things(
        self, tenants: Tenants, reference: str
    ) -> None:
        owned = tenants.owned
        if reference == "dataset":
            spec: dict[str, Any] = {**SPEC, "dataset": {"id": owned.dataset}}
            spec["model"] = {**SPEC["model"], "input_shape": [4]}
            loc = ["body", "dataset", "id"]
        else:
            spec = {
                "kind": "transfer",
                "dataset": {"name": "digits"},
                "base": {reference: getattr(owned, reference)},
                "cut": {"drop": 0},
                "head": [{"type": "Dense", "units": 10, "activation": "softmax"}],
                "phases": [{"trainable": "all", "epochs": 1, "optimizer": {"type": "Adam"}}],
                "compile": {"loss": "sparse_categorical_crossentropy"},
            }
            loc = ["body", "base", reference]
        mine = tenants.a.post("/v1/jobs?dry_run=true", json=spec)
        assert mine.status_code != 422 or mine.json()["detail"][0]["loc"] != loc, mine.text
        theirs = tenants.b.post("/v1/jobs?dry_run=true", json=spec)
        assert theirs.status_code == 422, theirs.text
        assert theirs.json()["detail"][0]["loc"] == loc

    def test_idempotency_keys_are_per_tenant(self, tenants: Tenants) -> None:
        spec = {**SPEC, "name": "idem"}
        key = {"Idempotency-Key": f"same-{uuid.uuid4()}"}
        first = tenants.a.post("/v1/jobs", json=spec, headers=key)
        second = tenants.b.post("/v1/jobs", json=spec, headers=key)
        assert first.status_code == second.status_code == 202
        assert first.json()["id"] != second.json()["id"]
        assert (
            tenants.b.post("/v1/jobs", json=spec, headers=key).json()["id"] == (second.json()["id"])
        )
        with transaction(tenants.database_url) as session:  # no worker runs here
            ids = [uuid.UUID(first.json()["id"]), uuid.UUID(second.json()["id"])]
            session.execute(delete(Job).where(Job.id.in_(ids)))


class TestLimits:
    def limit(self, tenants: Tenants, **limits: int | None) -> None:
        with transaction(tenants.database_url) as session:
            set_limits(session, tenants.tenants[1], limits)

    def test_max_params_is_a_422_at_the_model(self, tenants: Tenants) -> None:
        self.limit(tenants, max_params=SPEC_PARAMS - 1)
        try:
            for path in ("/v1/jobs?dry_run=true", "/v1/jobs"):
                response = tenants.b.post(path, json=SPEC)
                assert response.status_code == 422, response.text
                (error,) = response.json()["detail"]
                assert error["loc"] == ["body", "model"]
                assert error["ctx"] == {
                    "limit": "max_params",
                    "allowed": SPEC_PARAMS - 1,
                    "requested": SPEC_PARAMS,
                }
                assert "max_params" in error["msg"]
            self.limit(tenants, max_params=SPEC_PARAMS)
            assert tenants.b.post("/v1/jobs?dry_run=true", json=SPEC).status_code == 200
        finally:
            self.limit(tenants, max_params=None)

    def test_max_epoch_examples_counts_classes_and_limit(self, tenants: Tenants) -> None:
        # digits: 1437 training examples in 10 classes; 3 epochs.
        self.limit(tenants, max_epoch_examples=3 * 1437 - 1)
        try:
            response = tenants.b.post("/v1/jobs?dry_run=true", json=SPEC)
            assert response.status_code == 422, response.text
            (error,) = response.json()["detail"]
            assert error["loc"] == ["body", "fit", "epochs"]
            assert error["ctx"]["requested"] == 3 * 1437
            assert error["ctx"]["limit"] == "max_epoch_examples"
            smaller = copy.deepcopy(SPEC)
            smaller["dataset"]["limit"] = {"train": 100}
            assert tenants.b.post("/v1/jobs?dry_run=true", json=smaller).status_code == 200
            two_classes = copy.deepcopy(SPEC)
            two_classes["dataset"]["classes"] = [0, 1]
            assert tenants.b.post("/v1/jobs?dry_run=true", json=two_classes).status_code == 200
        finally:
            self.limit(tenants, max_epoch_examples=None)

    def test_max_queued_jobs_is_a_429(self, tenants: Tenants) -> None:
        tenant = tenants.tenants[1]
        waiting = [uuid.uuid4(), uuid.uuid4()]
        with transaction(tenants.database_url) as session:
            for job_id in waiting:
                session.add(Job(id=job_id, tenant_id=tenant, kind="train", spec=SPEC))
        self.limit(tenants, max_queued_jobs=2)
        try:
            response = tenants.b.post("/v1/jobs", json=SPEC)
            assert response.status_code == 429, response.text
            body = response.json()
            assert body["limit"] == "max_queued_jobs"
            assert body["allowed"] == 2
            assert "max_queued_jobs" in body["detail"]
            # Another tenant's queue is its own.
            self.limit(tenants, max_queued_jobs=None)
        finally:
            self.limit(tenants, max_queued_jobs=None)
            with transaction(tenants.database_url) as session:
                session.execute(delete(Job).where(Job.id.in_(waiting)))

    def test_max_queued_jobs_holds_under_concurrent_submits(self, tenants: Tenants) -> None:
        """Counting and inserting are one step per tenant: 30 submits at once, 3 slots."""
        tenant = tenants.tenants[1]
        self.limit(tenants, max_queued_jobs=3)
        try:
            with ThreadPoolExecutor(max_workers=15) as pool:
                responses = list(
                    pool.map(lambda _: tenants.b.post("/v1/jobs", json=SPEC), range(30))
                )
            codes = Counter(response.status_code for response in responses)
            assert codes == {202: 3, 429: 27}, [r.text for r in responses if r.status_code >= 500]
            assert all(r.headers["content-type"] == "application/json" for r in responses)
            with transaction(tenants.database_url) as session:
                queued = session.scalar(
                    select(func.count()).select_from(Job).where(Job.tenant_id == tenant)
                )
            assert queued == 3
        finally:
            self.limit(tenants, max_queued_jobs=None)
            with transaction(tenants.database_url) as session:
                session.execute(delete(Job).where(Job.tenant_id == tenant))

    def test_concurrent_retries_with_one_idempotency_key_make_one_job(
        self, tenants: Tenants
    ) -> None:
        key = {"Idempotency-Key": f"race-{uuid.uuid4()}"}
        with ThreadPoolExecutor(max_workers=15) as pool:
            responses = list(
                pool.map(lambda _: tenants.b.post("/v1/jobs", json=SPEC, headers=key), range(30))
            )
        try:
            assert {response.status_code for response in responses} <= {200, 202}, [
                response.text for response in responses
            ]
            assert [response.status_code for response in responses].count(202) == 1
            assert len({response.json()["id"] for response in responses}) == 1
        finally:
            with transaction(tenants.database_url) as session:
                session.execute(delete(Job).where(Job.tenant_id == tenants.tenants[1]))

    def test_max_upload_bytes_is_a_413(self, tenants: Tenants) -> None:
        self.limit(tenants, max_upload_bytes=1000)
        try:
            response = tenants.b.post("/v1/datasets", files={"file": ("d.npz", npz_bytes())})
            assert response.status_code == 413, response.text
            assert response.json()["limit"] == "max_upload_bytes"
            assert response.json()["allowed"] == 1000
            # Tenant A is not bound by B's limit.
            response = tenants.a.post("/v1/datasets", files={"file": ("d.npz", npz_bytes())})
            assert response.status_code == 201
        finally:
            self.limit(tenants, max_upload_bytes=None)
            with transaction(tenants.database_url) as session:
                session.execute(
                    delete(Dataset).where(
                        Dataset.tenant_id == tenants.tenants[0],
                        Dataset.id != uuid.UUID(tenants.owned.dataset),
                    )
                )

    def test_max_running_jobs_holds_the_next_job_queued(self, tenants: Tenants) -> None:
        tenant = tenants.tenants[1]
        running, waiting, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
        with transaction(tenants.database_url) as session:
            session.add(Job(id=running, tenant_id=tenant, kind="train", spec=SPEC))
            session.add(Job(id=waiting, tenant_id=tenant, kind="train", spec=SPEC))
            session.add(Job(id=other, tenant_id=tenants.tenants[0], kind="train", spec=SPEC))
        self.limit(tenants, max_running_jobs=1)
        defaults = tenants.settings.default_limits
        try:
            assert JobStore(tenants.database_url, running).claim("w1", defaults) is not None
            assert JobStore(tenants.database_url, waiting).claim("w2", defaults) is None
            assert JobStore(tenants.database_url, other).claim("w2", defaults) is not None
            with transaction(tenants.database_url) as session:
                held = session.get(Job, waiting)
                assert held is not None
                assert held.status == JobStatus.QUEUED
                assert held.dispatched_at is None  # the reconciler sends it again
                finished = session.get(Job, running)
                assert finished is not None
                finished.status = JobStatus.SUCCEEDED
            assert JobStore(tenants.database_url, waiting).claim("w2", defaults) is not None
        finally:
            self.limit(tenants, max_running_jobs=None)
            with transaction(tenants.database_url) as session:
                session.execute(delete(Job).where(Job.id.in_([running, waiting, other])))

    def test_server_wide_defaults_apply_unless_the_tenant_overrides(
        self, backend: Backend, tenants: Tenants
    ) -> None:
        settings = tenants.settings.model_copy(update={"limit_max_params": 10})
        with TestClient(create_app(settings), headers=dict(tenants.a.headers)) as strict:
            assert strict.post("/v1/jobs?dry_run=true", json=SPEC).status_code == 422
            with transaction(tenants.database_url) as session:
                set_limits(session, tenants.tenants[0], {"max_params": 10_000})
            try:
                assert strict.post("/v1/jobs?dry_run=true", json=SPEC).status_code == 200
            finally:
                with transaction(tenants.database_url) as session:
                    set_limits(session, tenants.tenants[0], {"max_params": None})


class TestRequestLimits:
    def test_json_only(self, tenants: Tenants) -> None:
        import json

        response = tenants.a.post(
            "/v1/jobs", content=json.dumps(SPEC), headers={"content-type": "text/plain"}
        )
        assert response.status_code == 415
        assert "application/json" in response.json()["detail"]

    def test_body_size_cap(self, backend: Backend, tenants: Tenants) -> None:
        import json

        cap = len(json.dumps(SPEC)) + 50
        settings = backend.settings().model_copy(update={"max_request_bytes": cap})
        with TestClient(create_app(settings), headers=dict(tenants.a.headers)) as small:
            assert small.post("/v1/jobs?dry_run=true", json=SPEC).status_code == 200
            padded = {**SPEC, "name": "x" * 190}
            response = small.post("/v1/jobs?dry_run=true", json=padded)
            assert response.status_code == 413
            assert "NETKILN_MAX_REQUEST_BYTES" in response.json()["detail"]
            # Sent chunked, without a Content-Length: cut off as it arrives.
            chunks = iter([json.dumps(padded).encode()[:100], json.dumps(padded).encode()[100:]])
            response = small.post(
                "/v1/jobs", content=chunks, headers={"content-type": "application/json"}
            )
            assert response.status_code == 413

    @pytest.mark.parametrize("depth", [40, 100_000])
    def test_nesting_cap(self, tenants: Tenants, depth: int) -> None:
        body = "[" * depth + "]" * depth
        response = tenants.a.post(
            "/v1/jobs", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["type"] == "json_too_deep"

    def test_unknown_fields_are_named(self, tenants: Tenants) -> None:
        spec = copy.deepcopy(SPEC)
        spec["fit"]["epochz"] = 3
        response = tenants.a.post("/v1/jobs?dry_run=true", json=spec)
        assert response.status_code == 422
        (error,) = response.json()["detail"]
        assert error["type"] == "extra_forbidden"
        assert error["loc"] == ["body", "fit", "epochz"]

    def test_caps_on_layers_and_units(self, tenants: Tenants) -> None:
        spec = copy.deepcopy(SPEC)
        spec["model"]["layers"][1]["units"] = 10**9
        response = tenants.a.post("/v1/jobs?dry_run=true", json=spec)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == [
            "body",
            "model",
            "layers",
            1,
            "Dense",
            "units",
        ]


def test_migration_matches_the_tables(backend: Backend) -> None:
    """The Alembic head and the SQLAlchemy models describe the same schema."""
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    from models.db import session_factory
    from models.tables import Base

    engine = session_factory(backend.settings().resolved_database_url).kw["bind"]
    with engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []
