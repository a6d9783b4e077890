"""kill -9 in the middle of writing leaves nothing behind for good: an API killed while an
upload is being staged, and a worker killed while a checkpoint is being saved, leave
their staging folders (named for their process), and the next start of the same command
removes them; no half-written object is ever published.

The kill lands inside the write: the test watches the staging folder and freezes the
process (SIGSTOP) the moment its folder appears, then kills it (SIGKILL)."""

from __future__ import annotations

import copy
import os
import signal
import threading
import time
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import numpy as np
import pytest
from sqlalchemy import select

from models.db import session_factory
from models.spec.examples import DIGITS_SPEC
from models.tables import Dataset
from netkiln.harness import Process
from tests.conftest import npz
from tests.e2e.conftest import PATIENCE, UNENDING, Service

pytestmark = pytest.mark.e2e


def staging_folders(service: Service) -> set[Path]:
    root = service.backend.settings().staging_dir
    return set(root.glob("stage-*")) if root.is_dir() else set()


def freeze_when_staging(service: Service, process: Process, seconds: float) -> Path | None:
    """Stop ``process`` (its whole session) as soon as a new staging folder appears;
    the folder, or None if none appeared within ``seconds``."""
    before = staging_folders(service)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        new = staging_folders(service) - before
        if new:
            os.killpg(process.pid, signal.SIGSTOP)
            return new.pop()
        time.sleep(0.001)
    return None


def large_npz() -> bytes:
    """~24 MB: staging, reading and rewriting it takes long enough to be caught."""
    rng = np.random.default_rng(0)
    return npz(
        x_train=rng.random((30_000, 200), dtype=np.float32),
        y_train=rng.integers(0, 10, 30_000),
    )


def test_api_killed_while_staging_an_upload(service: Service) -> None:
    body = large_npz()
    api = service.processes["api"]
    caught: Path | None = None
    for _ in range(5):  # each try uploads once; one catches the staging window
        client = httpx.Client(base_url=service.base_url, headers=service.headers, timeout=60)
        upload = threading.Thread(target=_post_quietly, args=(client, body), daemon=True)
        upload.start()
        caught = freeze_when_staging(service, api, PATIENCE / 5)
        if caught is not None:
            break
        upload.join()
    assert caught is not None, "the upload was never caught while staged"
    api.stop(signal.SIGKILL)
    assert caught.is_dir()  # what a killed process leaves

    service.start_api()
    assert not caught.exists()
    settings = service.backend.settings()
    with session_factory(settings.resolved_database_url)() as session:
        uris = session.scalars(select(Dataset.uri)).all()
    # Nothing half-published: every stored dataset file is one a row points at.
    stored = {path.resolve() for path in settings.data_dir.glob("uploads/datasets/*/*")}
    assert stored <= {Path(unquote(urlparse(uri).path)).resolve() for uri in uris}


def _post_quietly(client: httpx.Client, body: bytes) -> None:
    try:
        client.post("/v1/datasets", files={"file": ("big.npz", body)})
    except httpx.HTTPError:
        pass  # the API was killed under it
    finally:
        client.close()


def test_worker_killed_while_saving_a_checkpoint(service: Service) -> None:
    spec = copy.deepcopy(DIGITS_SPEC)
    spec["name"] = "killed-mid-checkpoint"
    # Wide enough that saving a checkpoint takes a moment to catch.
    spec["model"]["layers"] = [
        {"type": "Flatten"},
        *[{"type": "Dense", "units": 1024, "activation": "relu"}] * 3,
        {"type": "Dense", "units": 10, "activation": "softmax"},
    ]
    spec["fit"] = {"epochs": UNENDING, "batch_size": 256}
    worker = service.processes["worker"]
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        caught = freeze_when_staging(service, worker, PATIENCE)
        assert caught is not None, service.tail()
        worker.stop(signal.SIGKILL)
        assert caught.is_dir()
        killed = client.get(f"/v1/jobs/{job_id}").json()

        service.start_worker()
        deadline = time.monotonic() + PATIENCE
        while caught.exists():
            assert time.monotonic() < deadline, service.tail()
            time.sleep(0.1)
        # Resumable: the reconciler puts the job back in the queue, keeping the last whole
        # checkpoint. (Whether the new pool process takes it next is not this test's
        # business: on the shared PostgreSQL database it may first run other modules'
        # queued jobs.)
        while True:
            resumed = client.get(f"/v1/jobs/{job_id}").json()
            if resumed["status"] == "queued" or resumed["attempt"] >= 2:
                break
            assert time.monotonic() < deadline, service.tail()
            time.sleep(0.1)
        assert resumed["status"] in {"queued", "running"}
        assert (resumed["checkpoint_epoch"] or 0) >= (killed["checkpoint_epoch"] or 0)
        cancelled = client.post(f"/v1/jobs/{job_id}/cancel")
        assert cancelled.status_code == 202, cancelled.text
        assert service.wait_for(job_id)["status"] == "cancelled"
