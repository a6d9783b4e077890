"""What every artifact store promises, on each backend: the local folder (``file://``) and
an S3-compatible server (SeaweedFS on 127.0.0.1, the ``object_store`` fixture). Whole
objects only, while readers read; missing objects as ``FileNotFoundError``; listing by key
prefix; deletes that are idempotent; a check that leaves nothing behind. What only one
backend has lives in ``test_storage.py`` and ``test_s3store.py``."""

from __future__ import annotations

import hashlib
import threading
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from core.storage import ArtifactStore, job_folder, job_key, open_store, upload_key
from netkiln.servers import ObjectStoreServer
from tests.conftest import s3_settings


@pytest.fixture(params=["file", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    if request.param == "file":
        return open_store(Settings(data_dir=tmp_path / "data"))
    server: ObjectStoreServer = request.getfixturevalue("object_store")
    return open_store(Settings.from_environment(s3_settings(server), data_dir=tmp_path / "data"))


def put(store: ArtifactStore, key: str, content: bytes) -> str:
    with store.staging() as folder:
        staged = folder / "object"
        staged.write_bytes(content)
        return store.put(key, staged).uri


def test_put_publishes_the_file_and_reports_what_a_row_records(store: ArtifactStore) -> None:
    key = job_key("acme", uuid.uuid4(), "model.keras")
    with store.staging() as folder:
        staged = folder / "model.keras"
        staged.write_bytes(b"weights")
        stored = store.put(key, staged)
        assert not staged.exists()  # consumed
    assert stored.uri == store.uri_for(key)
    assert (stored.size, stored.sha256) == (7, hashlib.sha256(b"weights").hexdigest())
    assert store.local_path(stored.uri).read_bytes() == b"weights"
    assert store.local_path(stored.uri).suffix == ".keras"  # Keras reads the format from it
    assert b"".join(store.stream(stored.uri)) == b"weights"
    assert store.exists(stored.uri)
    assert list(store.staging_root.iterdir()) == []


def test_readers_see_whole_versions_while_an_object_is_replaced(store: ArtifactStore) -> None:
    key = job_key("acme", uuid.uuid4(), "checkpoint.keras")
    versions = [bytes([n]) * 200_000 for n in range(1, 16)]
    uri = put(store, key, versions[0])
    seen: list[bytes] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            seen.append(store.local_path(uri).read_bytes())
            seen.append(b"".join(store.stream(uri)))

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for content in versions[1:]:
            put(store, key, content)
    finally:
        done.set()
        reader.join(timeout=120)
    assert seen
    assert all(content in versions for content in seen)


def test_a_missing_object(store: ArtifactStore) -> None:
    uri = store.uri_for(upload_key("acme", "datasets", uuid.uuid4(), "data.npz"))
    assert not store.exists(uri)
    with pytest.raises(FileNotFoundError):
        store.local_path(uri)
    with pytest.raises(FileNotFoundError):
        store.stream(uri)


def test_objects_are_listed_by_key_prefix(store: ArtifactStore) -> None:
    job_id, other = uuid.uuid4(), uuid.uuid4()
    mine = [put(store, job_key("acme", job_id, name), b"x") for name in ("a.keras", "b.h5")]
    put(store, job_key("acme", other, "a.keras"), b"y")
    assert store.uris_under(job_folder("acme", job_id)) == sorted(mine)
    assert store.uris_under(job_folder("acme", uuid.uuid4())) == []


def test_delete_is_idempotent(store: ArtifactStore) -> None:
    uri = put(store, upload_key("acme", "models", uuid.uuid4(), "model.keras"), b"x")
    store.delete(uri)
    assert not store.exists(uri)
    store.delete(uri)  # a missing object is no error


def test_keys_cannot_leave_the_store(store: ArtifactStore) -> None:
    for key in ("../outside/model.keras", "tenants/../../x"):
        with pytest.raises(ValueError, match="leaves the store"):
            store.uri_for(key)


def test_check_proves_a_round_trip_and_leaves_nothing(store: ArtifactStore) -> None:
    store.check()
    assert store.uris_under("probes/") == []
