"""``netkiln api --workers 2``: two uvicorn worker processes share the port and serve the
same API, on either backend (SQLite in WAL mode takes writes from both)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import psutil
import pytest

from models.spec.examples import DIGITS_SPEC
from netkiln.harness import Stack, process_env
from tests.conftest import Backend, new_api_key

pytestmark = pytest.mark.e2e


@pytest.fixture
def api_two_workers(
    backend: Backend, keras_home: Path, tmp_path: Path
) -> Iterator[tuple[str, int]]:
    with Stack(process_env(keras_home, backend.env), tmp_path) as stack:
        api = stack.start_api(workers=2)
        yield stack.base_url, api.pid


def test_two_api_processes_serve_submits_and_reads(
    backend: Backend, api_two_workers: tuple[str, int]
) -> None:
    base_url, pid = api_two_workers
    servers = [
        child
        for child in psutil.Process(pid).children()
        if "spawn_main" in " ".join(child.cmdline())
    ]
    assert len(servers) == 2

    key = new_api_key(backend.settings().resolved_database_url)
    headers = {"Authorization": f"Bearer {key}"}
    ids = []
    # New connections each time, so both processes take some of them.
    for index in range(6):
        response = httpx.post(
            f"{base_url}/v1/jobs", json={**DIGITS_SPEC, "name": f"w{index}"}, headers=headers
        )
        assert response.status_code == 202, response.text
        ids.append(response.json()["id"])
    for job_id in ids:
        job = httpx.get(f"{base_url}/v1/jobs/{job_id}", headers=headers)
        assert job.status_code == 200
        assert job.json()["status"] == "queued"
        # Cancelled, so that the workers of later modules (same database and Redis db on
        # postgres-redis) do not train them.
        cancel = httpx.post(f"{base_url}/v1/jobs/{job_id}/cancel", headers=headers)
        assert cancel.status_code == 202, cancel.text
        assert cancel.json()["status"] == "cancelled"
