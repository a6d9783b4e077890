"""Hosts that share nothing but PostgreSQL, Redis and an S3-compatible store: the API and
two workers, each with a data folder of its own (no shared disk), artifacts in a real
object store (SeaweedFS on 127.0.0.1). A job one worker checkpointed is finished by the
other; uploads made through the API reach a worker through the store."""

from __future__ import annotations

import copy
import hashlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import redis

from models.migrate import upgrade
from models.spec.examples import DIGITS_SPEC
from netkiln.harness import create_database, drop_database, process_env
from netkiln.s3server import ObjectStoreServer
from tests.conftest import POSTGRES_ADMIN_URL, Backend, npz, s3_settings
from tests.e2e.conftest import FAST_RECOVERY, PATIENCE, Service

pytestmark = pytest.mark.e2e

#: A Redis database of this module's own: no other module's messages reach its workers.
REDIS_DB = 11


@pytest.fixture(scope="module")
def hosts(
    postgres_database: str,
    redis_url: str,
    object_store: ObjectStoreServer,
    keras_home: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Service]:
    """The API on one data folder; workers start on folders of their own
    (:func:`start_host`). A database of its own, too: jobs other modules left queued in
    the shared test database must not run here."""
    database_url = create_database(POSTGRES_ADMIN_URL, "netkiln_hosts")
    broker_url = redis_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    redis.Redis.from_url(broker_url).flushdb()
    upgrade(database_url)
    root = tmp_path_factory.mktemp("hosts")
    backend = Backend("s3", root / "api-host", database_url=database_url, broker_url=broker_url)
    backend.data_dir.mkdir()
    store = s3_settings(object_store)
    env = process_env(keras_home, {**backend.env, **store, **FAST_RECOVERY})
    service = Service(backend, None, env, root / "logs")
    (root / "logs").mkdir()
    service.start(worker=False)
    yield service
    service.stop()
    drop_database(POSTGRES_ADMIN_URL, database_url)


def start_host(service: Service, name: str) -> Path:
    """A worker on a data folder of its own; the folder."""
    folder = service.logs.parent / name
    folder.mkdir(exist_ok=True)
    service.start_worker(name, NETKILN_DATA_DIR=str(folder))
    return folder


def stored_files(folder: Path) -> list[Path]:
    """Files under a host's data folder that would be artifacts on a shared disk."""
    return [path for path in folder.rglob("*") if path.is_file() and "tenants" in path.parts]


def test_a_job_killed_on_one_host_is_finished_by_another_from_the_stored_checkpoint(
    hosts: Service,
) -> None:
    host_a = start_host(hosts, "worker-a")
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "moves-hosts"}
    spec["fit"] = {"epochs": 30, "batch_size": 8}
    with hosts.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        deadline = time.monotonic() + PATIENCE
        while client.get(f"/v1/jobs/{job_id}").json()["progress"]["epoch"] < 2:
            assert time.monotonic() < deadline, hosts.tail()
            time.sleep(0.1)
        host_b = start_host(hosts, "worker-b")  # idle: A holds the job

        hosts.processes["worker-a"].stop(signal.SIGKILL)
        killed = client.get(f"/v1/jobs/{job_id}").json()
        assert (killed["status"], killed["attempt"]) == ("running", 1)
        checkpointed = killed["checkpoint_epoch"]
        assert checkpointed >= 2
        before = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]

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


def test_an_upload_to_the_api_host_trains_on_a_worker_host(hosts: Service) -> None:
    if "worker-b" not in hosts.processes or hosts.processes["worker-b"].poll() is not None:
        start_host(hosts, "worker-b")
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
    host_b = hosts.logs.parent / "worker-b"
    assert (host_b / "cache" / f"{uploaded.json()['sha256']}.npz").is_file()
    assert stored_files(hosts.backend.data_dir) == []
