"""The adversarial table: hostile inputs a tenant with a valid key can send, by class, and
the answer each must get — never a 5xx, always a JSON body that says what is wrong.

Rerun it as a whole with ``pytest tests/api/test_adversarial.py -v``; each row is one
case. Worker-side attacks (specs that crash or hang the backend, uploads crafted for the
loader) have end-to-end tests of their own (``tests/e2e/test_watchdog.py``,
``tests/worker/``); here they are refused before any worker sees them.
"""

from __future__ import annotations

import base64
import copy
import io
import json
import tempfile
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete

from models.db import transaction
from models.tables import Job
from tests.api.test_jobs import SPEC
from tests.conftest import Backend, api_client, npz

Send = Callable[[TestClient, "Seeded"], httpx.Response]


@dataclass(frozen=True)
class Seeded:
    """What the table's requests refer to: a queued job of the attacker's own."""

    job_id: str


@dataclass(frozen=True)
class Hostile:
    name: str
    kind: str  # the class of attack
    send: Send
    status: int
    #: Text the answer's body must contain (where the fix is, or what is wrong).
    says: str


def _spec(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    change(spec)
    return spec


def _post_spec(change: Callable[[dict[str, Any]], object]) -> Send:
    return lambda client, _: client.post("/v1/jobs?dry_run=true", json=_spec(change))


def _layer(layer: dict[str, Any]) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        spec["model"]["layers"].insert(1, layer)

    return change


def _cursor(*items: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(items)).encode()).decode().rstrip("=")


def _upload_dataset(content: bytes, filename: str, **form: str) -> Send:
    return lambda client, _: client.post(
        "/v1/datasets", files={"file": (filename, content)}, data=form
    )


TABLE = [
    # --- inputs that once answered 500 ----------------------------------------------------
    Hostile(
        "cursor-before-year-1",
        "500s",
        lambda c, _: c.get(
            "/v1/jobs", params={"cursor": _cursor("0001-01-01T00:00:00+14:00", str(uuid.uuid4()))}
        ),
        400,
        "cursor",
    ),
    Hostile(
        "cursor-after-9999",
        "500s",
        lambda c, _: c.get(
            "/v1/jobs", params={"cursor": _cursor("9999-12-31T23:59:59-14:00", str(uuid.uuid4()))}
        ),
        400,
        "cursor",
    ),
    Hostile(
        "logs-after-2^63",
        "500s",
        lambda c, s: c.get(f"/v1/jobs/{s.job_id}/logs", params={"after": 2**63}),
        422,
        "after",
    ),
    Hostile(
        "events-after-2^64",
        "500s",
        lambda c, s: c.get(f"/v1/jobs/{s.job_id}/events", params={"after": 2**64}),
        422,
        "after",
    ),
    Hostile(
        "csv-column-name-200KiB",
        "500s",
        _upload_dataset(b"a" * (200 * 1024) + b",label\n1,0\n", "t.csv"),
        422,
        "header row",
    ),
    Hostile(
        "npz-zero-width-2^20-rows",
        "500s",
        _upload_dataset(npz(x_train=np.ones((2**20, 0)), y_train=np.zeros(2**20)), "d.npz"),
        422,
        "every dimension must be at least 1",
    ),
    Hostile(
        "nul-in-job-name",
        "500s",
        _post_spec(lambda spec: spec.update(name="a\x00b")),
        422,
        "name",
    ),
    Hostile(
        "nul-in-kind-filter",
        "500s",
        lambda c, _: c.get("/v1/jobs", params={"kind": "train\x00"}),
        422,
        "kind",
    ),
    Hostile(
        "nul-in-upload-name",
        "500s",
        _upload_dataset(b"a,label\n1,0\n2,1\n", "t.csv", name="x\x00y"),
        422,
        "name",
    ),
    Hostile(
        "mathtext-metric-in-compare",
        "500s",
        lambda c, s: c.get("/v1/jobs/compare.png", params={"ids": s.job_id, "metric": "$\\foo{$"}),
        409,  # the queued job has no epochs yet: a 4xx, not a TeX parse error
        "epoch",
    ),
    # --- specs a worker must never see ----------------------------------------------------
    Hostile(
        "reshape-target-unknown-twice",
        "spec",
        _post_spec(_layer({"type": "Reshape", "target_shape": [-1, -1]})),
        422,
        "-1",
    ),
    Hostile(
        "reshape-250-axes",  # aborted TensorFlow's process on every attempt
        "spec",
        _post_spec(_layer({"type": "Reshape", "target_shape": [1] * 249 + [-1]})),
        422,
        "target_shape",
    ),
    Hostile(
        "reshape-200000-axes",  # hung the build for minutes at 6 GB
        "spec",
        _post_spec(_layer({"type": "Reshape", "target_shape": [1] * 200_000})),
        422,
        "target_shape",
    ),
    Hostile(
        "prelu-shared-axes-past-rank",
        "spec",
        _post_spec(_layer({"type": "PReLU", "shared_axes": [1, 2, 3, 4, 5, 6]})),
        422,
        "shared_axes",
    ),
    Hostile(
        "dense-units-past-cap",
        "spec",
        _post_spec(_layer({"type": "Dense", "units": 10**9})),
        422,
        "units",
    ),
    Hostile(
        "input-rank-5",
        "spec",
        _post_spec(lambda spec: spec["model"].update(input_shape=[2, 2, 2, 2, 4])),
        422,
        "input_shape",
    ),
    Hostile(
        "input-dim-past-cap",
        "spec",
        _post_spec(lambda spec: spec["model"].update(input_shape=[10**9])),
        422,
        "input_shape",
    ),
    Hostile(
        "layers-past-cap",
        "spec",
        _post_spec(lambda spec: spec["model"].update(layers=[{"type": "Flatten"}] * 1000)),
        422,
        "layers",
    ),
]


def _crafted_keras(**claims: object) -> bytes:
    """A tiny .keras whose last layer's config entry carries ``claims``."""
    import keras

    out = io.BytesIO()
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    with tempfile.TemporaryDirectory() as folder:
        path = f"{folder}/m.keras"
        model.save(path)
        with zipfile.ZipFile(path) as original:
            members = {info.filename: original.read(info) for info in original.infolist()}
    config = json.loads(members["config.json"])
    config["config"]["layers"][-1].update(claims)
    members["config.json"] = json.dumps(config).encode()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def _upload_model(content: bytes) -> Send:
    return lambda client, _: client.post("/v1/models", files={"file": ("m.keras", content)})


TABLE += [
    Hostile(
        "registered-name-bypass",
        "upload",
        _upload_model(
            _crafted_keras(module="subprocess", class_name="Popen", registered_name="netkiln>Popen")
        ),
        422,
        "not one of netkiln's layers",
    ),
    Hostile(
        "keras-module-non-builtin",
        "upload",
        _upload_model(_crafted_keras(module="keras.src.utils.file_utils", class_name="get_file")),
        422,
        "custom object",
    ),
    Hostile(
        "units-16M-in-6KB",
        "upload",
        _upload_model(_crafted_keras(config={"name": "d", "units": 16_000_000})),
        422,
        "past what netkiln accepts",
    ),
]


@pytest.fixture(scope="module")
def attacker(backend: Backend) -> Iterator[tuple[TestClient, Seeded]]:
    settings = backend.settings()
    tenant = f"attacker-{uuid.uuid4().hex[:8]}"
    with api_client(settings, tenant) as client:
        created = client.post("/v1/jobs", json=SPEC)
        assert created.status_code == 202, created.text
        yield client, Seeded(created.json()["id"])
    with transaction(settings.resolved_database_url) as session:
        session.execute(delete(Job).where(Job.tenant_id == tenant))


@pytest.mark.parametrize("case", TABLE, ids=[f"{case.kind}:{case.name}" for case in TABLE])
def test_hostile_input_gets_a_clear_4xx(attacker: tuple[TestClient, Seeded], case: Hostile) -> None:
    client, seeded = attacker
    response = case.send(client, seeded)
    assert response.status_code == case.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert case.says in response.text
    # And the service is still there for everyone.
    assert client.get("/healthz").status_code == 200


def test_the_table_covers_every_class() -> None:
    assert {case.kind for case in TABLE} >= {"500s", "spec", "upload"}
