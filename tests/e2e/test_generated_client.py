"""A client generated from the running service's /openapi.json (openapi-python-client,
with api/client-generator.yml) submits, polls, lists and downloads a job with typed
models and short function names (``jobs_submit``, ``jobs_download_model``)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import keras
import pytest

from models.spec.examples import DIGITS_SPEC
from tests.conftest import Backend, make_backend
from tests.e2e.conftest import PATIENCE, Service

pytestmark = pytest.mark.e2e

CONFIG = Path(__file__).parents[2] / "api" / "client-generator.yml"


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """The client speaks HTTP; which database is behind it does not matter here."""
    from models.migrate import upgrade

    chosen = make_backend("embedded", tmp_path_factory.mktemp("client"), request)
    upgrade(chosen.settings().resolved_database_url)
    return chosen


@pytest.fixture(scope="module")
def generated(service: Service, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    root = tmp_path_factory.mktemp("generated")
    spec = root / "openapi.json"
    spec.write_bytes(httpx.get(f"{service.base_url}/openapi.json", timeout=30).content)
    generator = Path(sys.executable).with_name("openapi-python-client")
    env = {**os.environ, "PATH": f"{generator.parent}{os.pathsep}{os.environ['PATH']}"}
    command = [str(generator), "generate", "--path", str(spec), "--meta", "none"]
    command += ["--config", str(CONFIG), "--output-path", str(root / "netkiln_client")]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(root))
    try:
        yield importlib.import_module("netkiln_client")
    finally:
        sys.path.remove(str(root))
        for name in [name for name in sys.modules if name.startswith("netkiln_client")]:
            del sys.modules[name]


def test_generated_client_trains_and_downloads_a_job(
    generated: Any, service: Service, tmp_path: Path
) -> None:
    from netkiln_client.api.jobs import (  # type: ignore[import-not-found]
        jobs_download_model,
        jobs_get,
        jobs_list,
        jobs_submit,
    )
    from netkiln_client.models import JobOut, TrainJobSpec  # type: ignore[import-not-found]
    from netkiln_client.types import File  # type: ignore[import-not-found]

    client = generated.AuthenticatedClient(base_url=service.base_url, token=service.api_key)
    body = TrainJobSpec.from_dict({**DIGITS_SPEC, "kind": "train", "name": "generated"})
    submitted = jobs_submit.sync(client=client, body=body)
    assert isinstance(submitted, JobOut), submitted
    deadline = time.monotonic() + PATIENCE
    while (job := jobs_get.sync(submitted.id, client=client)).status.value != "succeeded":
        assert job.status.value in {"queued", "running"}, (job, service.tail())
        assert time.monotonic() < deadline, service.tail()
        time.sleep(0.5)
    assert job.params.total == 2538
    listed = jobs_list.sync(client=client)
    assert submitted.id in {item.id for item in listed.items}

    model = jobs_download_model.sync(submitted.id, client=client)
    assert isinstance(model, File)
    path = tmp_path / "generated.keras"
    path.write_bytes(model.payload.read())
    assert keras.models.load_model(path).count_params() == 2538
