"""Schemathesis over the whole OpenAPI schema, in process, on both backends: every
operation gets a bounded number of generated requests (valid and invalid ones, the
schema's examples, and valid ones that name things that exist), and every answer must be
no server error, a documented status code, the documented content type and a body that
matches the documented schema.

Nothing is excluded: every operation of ``/openapi.json`` is fuzzed (the web page at ``/``
is outside the schema). Where the fuzzer would get stuck, it is steered, not skipped:

- ``GET /v1/jobs/{id}/events`` never ends for a job that has not ended, so the only
  existing id it gets is a succeeded job's (random ids are 404s), and every request has a
  10 s timeout besides.
- Binary answers (the model download, PNGs, Prometheus text) have no body schema; their
  status and content type are still checked.

The fuzzing tenant is made for this module and everything it owns is deleted afterwards
(jobs, uploads, task messages): the PostgreSQL database and the Redis db outlive this
module, and later modules start real workers that would train whatever is queued there.
The tenant's limits keep any job it manages to queue tiny and few.

Schemathesis' own pytest integration (``schemathesis.pytest.from_fixture``) cannot take
the backend fixture on pytest 9 (it sets ``Node._nodeid``), so each operation runs as a
hypothesis test of its own under pytest's subtests, built from the public
``APIOperation.as_strategy``.
"""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import hypothesis
import numpy as np
import pytest
import schemathesis
from fastapi import FastAPI
from fastapi.testclient import TestClient
from hypothesis import HealthCheck
from hypothesis import strategies as st
from schemathesis import APIOperation, GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from sqlalchemy import delete, select, text

from api.app import create_app
from core.queue import JOB_QUEUE, RUN_JOB_TASK
from core.storage import open_store, upload_key
from models.db import transaction
from models.spec import TrainJobSpec
from models.summary import summarize
from models.tables import (
    Artifact,
    BaseModel,
    Dataset,
    EpochMetrics,
    Job,
    JobEvent,
    JobStatus,
)
from models.tenancy import set_limits
from tests.conftest import Backend, auth_headers, npz

Operation = APIOperation[Any, Any, Any, Any]
Case = schemathesis.Case[Any]

#: Requests per operation and backend: the whole module takes about 20 s on 2 cores.
MAX_EXAMPLES = 25

#: No server error; the status code, content type, headers and body as documented.
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]

#: What a fuzzed job may ask for: even if one reached a worker, it would train for a
#: moment. A handful of queued jobs also lets the fuzzer reach the 429.
FUZZ_LIMITS = {
    "max_queued_jobs": 3,
    "max_params": 20_000,
    "max_epoch_examples": 20_000,
    "max_upload_bytes": 1 << 20,
}

SPEC: dict[str, Any] = {
    "name": "fuzz-seed",
    "dataset": {"name": "digits"},
    "model": {
        "input_shape": [8, 8],
        "layers": [
            {"type": "Flatten"},
            {"type": "Dense", "units": 10, "activation": "softmax"},
        ],
    },
    "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
    "fit": {"epochs": 1, "batch_size": 16},
}

SHA256 = "0" * 64
ETAG = f'"{SHA256}"'

MODEL_SUMMARY = {
    "input_shape": [None, 4],
    "layers": [
        {
            "index": 0,
            "name": "dense",
            "type": "Dense",
            "output_shape": [None, 2],
            "params": 10,
            "trainable": True,
        }
    ],
    "total": 10,
    "trainable": 10,
    "non_trainable": 0,
}


@dataclass
class Seeded:
    """Things of the fuzzing tenant that generated requests may name instead of random ids,
    so the fuzzer reaches the 200s (and 409s) and not only 404s."""

    succeeded_job: str
    queued_job: str
    model: str
    dataset: str


@dataclass
class Fuzzed:
    app: FastAPI
    headers: dict[str, str]
    seeded: Seeded


@pytest.fixture(scope="module")
def fuzzed(backend: Backend, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fuzzed]:
    settings = backend.settings()
    database_url = settings.resolved_database_url
    tenant = f"fuzz-{uuid.uuid4().hex[:8]}"
    headers = auth_headers(settings, tenant)
    with transaction(database_url) as session:
        set_limits(session, tenant, FUZZ_LIMITS)
    app = create_app(settings)
    try:
        seeded = _seed(app, headers, tenant, database_url, tmp_path_factory.mktemp("fuzz"))
        yield Fuzzed(app, headers, seeded)
    finally:
        _clean_up(backend, database_url, tenant)


def _seed(
    app: FastAPI, headers: dict[str, str], tenant: str, database_url: str, folder: Path
) -> Seeded:
    staged = folder / "model.keras"
    staged.write_bytes(b"PK not really a model; only its bytes are served")
    succeeded, queued, model = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    # One stored file serves as the job's artifacts and the uploaded model alike.
    stored = open_store(app.state.settings).put(
        upload_key("default", "models", model, "model.keras"), staged
    )
    summary = summarize(TrainJobSpec.model_validate(SPEC).model).model_dump(mode="json")
    with transaction(database_url) as session:
        for job_id, status in ((succeeded, JobStatus.SUCCEEDED), (queued, JobStatus.QUEUED)):
            session.add(
                Job(
                    id=job_id,
                    tenant_id=tenant,
                    name=f"fuzz-{status}",
                    kind="train",
                    status=status,
                    spec=SPEC,
                    epochs_total=1,
                    summary=summary,
                )
            )
        session.flush()
        session.add(
            EpochMetrics(
                job_id=succeeded,
                epoch=1,
                values={"loss": 1.0, "val_loss": 1.2, "learning_rate": 0.01},
                seconds=0.1,
            )
        )
        session.add(JobEvent(job_id=succeeded, kind="log", data={"level": "INFO", "message": "hi"}))
        session.add(JobEvent(job_id=succeeded, kind="status", data={"status": "succeeded"}))
        for format in ("keras", "h5", "checkpoint"):
            session.add(
                Artifact(
                    job_id=succeeded,
                    format=format,
                    uri=stored.uri,
                    size=stored.size,
                    sha256=SHA256,
                )
            )
        session.add(
            BaseModel(
                id=model,
                tenant_id=tenant,
                name="fuzz-model",
                filename="model.keras",
                format="keras",
                uri=stored.uri,
                size=stored.size,
                sha256=SHA256,
                summary=MODEL_SUMMARY,
            )
        )
    with TestClient(app, headers=headers) as client:
        response = client.post("/v1/datasets", files={"file": ("d.npz", _npz_bytes())})
        assert response.status_code == 201, response.text
    return Seeded(str(succeeded), str(queued), str(model), response.json()["id"])


def _npz_bytes() -> bytes:
    rng = np.random.default_rng(0)
    return npz(x_train=rng.random((40, 4)), y_train=rng.integers(0, 2, 40))


def _clean_up(backend: Backend, database_url: str, tenant: str) -> None:
    """Delete the tenant and all it owns: rows, stored upload files, queued messages."""
    with transaction(database_url) as session:
        job_ids = {str(i) for i in session.scalars(select(Job.id).where(Job.tenant_id == tenant))}
        uploads = [
            *session.scalars(select(BaseModel.uri).where(BaseModel.tenant_id == tenant)),
            *session.scalars(select(Dataset.uri).where(Dataset.tenant_id == tenant)),
        ]
        for table in (Job, BaseModel, Dataset):
            session.execute(delete(table).where(table.tenant_id == tenant))
        session.execute(text("DELETE FROM tenants WHERE id = :id"), {"id": tenant})
    store = open_store(backend.settings())
    for uri in uploads:
        if uri.startswith("file://") and str(backend.data_dir) in uri:
            store.delete(uri)
    if backend.broker_url is not None:
        import redis

        with redis.Redis.from_url(backend.broker_url) as client:
            for payload in client.lrange(JOB_QUEUE, 0, -1):
                if set(_task_args(payload)) <= job_ids:
                    client.lrem(JOB_QUEUE, 1, payload)


def _task_args(payload: bytes) -> list[str]:
    message = json.loads(payload)
    if message["headers"]["task"] != RUN_JOB_TASK:
        return []
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return [str(arg) for arg in args]


def _strategy(operation: Operation, seeded: Seeded) -> st.SearchStrategy[Case]:
    """Valid and invalid requests, the schema's own examples, and valid requests with
    parts fixed to reach past the 404s and 422s that random values get: our ids in the
    path, a spec that validates, an upload that is a dataset (the rest generated)."""
    strategies = [
        operation.as_strategy(GenerationMode.POSITIVE),
        operation.as_strategy(GenerationMode.NEGATIVE),
        *operation.get_strategies_from_examples(),
    ]
    ids: dict[str, list[str]] = {
        "job_id": [seeded.succeeded_job, seeded.queued_job],
        "model_id": [seeded.model],
        "dataset": [seeded.dataset, "digits"],
    }
    if operation.path.endswith("/events"):
        # The event stream of a job that has not ended does not end either.
        ids["job_id"] = [seeded.succeeded_job]
    names = {parameter.name for parameter in operation.path_parameters}
    fixed: list[dict[str, Any]] = [
        {"path_parameters": {name: value}}
        for name, values in ids.items()
        if name in names
        for value in values
    ]
    both = f"{seeded.succeeded_job},{seeded.queued_job}"
    fixed += {
        # Queued jobs (up to the tenant's 429), Idempotency-Key retries, dry runs.
        "POST /v1/jobs": [{"body": SPEC}, {"body": SPEC, "query": {"dry_run": "true"}}],
        "GET /v1/jobs/compare.png": [
            {"query": {"ids": value}} for value in (seeded.succeeded_job, both, seeded.queued_job)
        ],
        "GET /v1/jobs/{job_id}/model": [
            {
                "path_parameters": {"job_id": seeded.succeeded_job},
                "headers": {"If-None-Match": ETAG},
            }
        ],
        "POST /v1/datasets": [{"body": {"file": _npz_bytes()}}],
    }.get(operation.label, [])
    strategies += [operation.as_strategy(GenerationMode.POSITIVE, **parts) for parts in fixed]
    return st.one_of(strategies)


def _fuzz(operation: Operation, fuzzed: Fuzzed) -> None:
    @hypothesis.settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.filter_too_much,
            HealthCheck.data_too_large,
        ],
    )
    @hypothesis.given(case=_strategy(operation, fuzzed.seeded))
    def check(case: Case) -> None:
        # A bounded wait: an event stream that never ended would hang the run.
        case.call_and_validate(headers=fuzzed.headers, checks=CHECKS, timeout=10)

    check()


# Metric names are free text: matplotlib warns about characters its font lacks.
@pytest.mark.filterwarnings("ignore:Glyph .* missing from font:UserWarning")
def test_every_operation_conforms_to_the_schema(fuzzed: Fuzzed, subtests: pytest.Subtests) -> None:
    schema = schemathesis.openapi.from_asgi("/openapi.json", fuzzed.app)
    for path, methods in fuzzed.app.openapi()["paths"].items():
        for method in methods:
            with subtests.test(msg=f"{method.upper()} {path}"):
                _fuzz(schema[path][method], fuzzed)


# What the fuzzer found, pinned down.


def test_a_body_that_is_not_text_is_a_422_like_other_bad_json(fuzzed: Fuzzed) -> None:
    with TestClient(fuzzed.app, headers=fuzzed.headers) as client:
        response = client.post(
            "/v1/jobs", content=b"\x80", headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert response.json()["detail"][0]["type"] == "json_invalid"


@pytest.mark.parametrize("content_type", ["multipart/form-data", "multipart/form-data; boundary=x"])
def test_an_unreadable_form_is_a_400_with_a_code(fuzzed: Fuzzed, content_type: str) -> None:
    with TestClient(fuzzed.app, headers=fuzzed.headers) as client:
        response = client.post(
            "/v1/datasets", content=b"garbage", headers={"Content-Type": content_type}
        )
    assert response.status_code == 400, response.text
    assert response.json()["code"] == "bad_request"


def test_framework_errors_have_a_code_too(fuzzed: Fuzzed) -> None:
    with TestClient(fuzzed.app, headers=fuzzed.headers) as client:
        assert client.get("/v1/nothing-here").json()["code"] == "not_found"
        response = client.delete("/v1/jobs")
        assert response.status_code == 405
        assert response.json()["code"] == "method_not_allowed"
