"""What only the S3-compatible store has (SeaweedFS on 127.0.0.1, the ``object_store``
fixture): multipart uploads, the local cache of fetched copies, the bucket, URIs of other
buckets refused, and riding out an outage. What every store promises:
``test_store_contract.py``."""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.s3store import S3Store
from core.settings import Settings
from core.storage import StorageUnavailable, job_key, open_store, upload_key
from netkiln.servers import ObjectStoreServer
from tests.conftest import s3_settings


def s3_store(server: ObjectStoreServer, data_dir: Path, **overrides: Any) -> S3Store:
    store = open_store(
        Settings.from_environment(s3_settings(server, **overrides), data_dir=data_dir)
    )
    assert isinstance(store, S3Store)
    return store


@pytest.fixture
def store(object_store: ObjectStoreServer, tmp_path: Path) -> S3Store:
    return s3_store(object_store, tmp_path / "data")


def _put(store: S3Store, key: str, content: bytes) -> str:
    with store.staging() as folder:
        staged = folder / "object"
        staged.write_bytes(content)
        return store.put(key, staged).uri


class TestPutAndRead:
    def test_a_large_object_goes_up_in_parts_and_comes_back_whole(self, store: S3Store) -> None:
        content = hashlib.sha256(b"seed").digest() * (12 * 1024 * 1024 // 32)  # 12 MiB
        uri = _put(store, job_key("acme", uuid.uuid4(), "model.h5"), content)
        assert store.local_path(uri).read_bytes() == content
        assert b"".join(store.stream(uri)) == content


class TestCache:
    def test_fetched_copies_are_kept_by_content_and_checked(
        self, object_store: ObjectStoreServer, tmp_path: Path
    ) -> None:
        store = s3_store(object_store, tmp_path / "a")
        uri = _put(store, upload_key("acme", "datasets", uuid.uuid4(), "data.npz"), b"rows")
        first = store.local_path(uri)
        assert first.name == f"{hashlib.sha256(b'rows').hexdigest()}.npz"  # suffix kept
        assert first.parent == tmp_path / "a" / "cache"
        assert store.local_path(uri) == first  # no second download
        # Another host (data dir) fetches its own copy; a replaced object is fetched anew.
        other = s3_store(object_store, tmp_path / "b")
        other.prefix = store.prefix
        assert other.local_path(uri).read_bytes() == b"rows"
        _put(store, upload_key("acme", "datasets", uuid.uuid4(), "x"), b"")  # unrelated
        key = uri.removeprefix(f"s3://{store.bucket}/{store.prefix}")
        _put(store, key, b"new rows")
        assert store.local_path(uri).read_bytes() == b"new rows"

    def test_the_cache_stays_under_its_size(
        self, object_store: ObjectStoreServer, tmp_path: Path
    ) -> None:
        store = s3_store(object_store, tmp_path, cache_max_mb=1)
        uris = [
            _put(store, job_key("acme", uuid.uuid4(), "m"), bytes([n]) * 400_000) for n in range(5)
        ]
        for uri in uris:
            assert store.local_path(uri).stat().st_size == 400_000
        kept = sum(path.stat().st_size for path in (tmp_path / "cache").iterdir())
        assert kept <= 1024 * 1024


def test_check_creates_the_bucket_and_proves_a_round_trip(
    object_store: ObjectStoreServer, tmp_path: Path
) -> None:
    bucket = f"fresh-{uuid.uuid4().hex[:12]}"
    store = s3_store(object_store, tmp_path)
    store.bucket = bucket
    assert not store.client.bucket_exists(bucket)
    store.check()
    assert store.client.bucket_exists(bucket)
    assert list(store.client.list_objects(bucket, recursive=True)) == []  # probe deleted
    store.check()  # an existing bucket is fine


class TestRefusals:
    def test_keys_and_uris_cannot_leave_the_store(self, store: S3Store) -> None:
        for key in ("../outside/model.keras", "tenants/../../x", "/abs"):
            with pytest.raises(ValueError, match="leaves the store"):
                store.uri_for(key)
        for uri in (
            f"s3://other-bucket/{store.prefix}tenants/a/jobs/x/model.keras",
            f"s3://{store.bucket}/another-prefix/model.keras",
            f"s3://{store.bucket}/{store.prefix}tenants/../../model.keras",
            "file:///etc/passwd",
        ):
            with pytest.raises(ValueError, match=r"not in the artifact store|leaves the store"):
                store.local_path(uri)
            with pytest.raises(ValueError, match=r"not in the artifact store|leaves the store"):
                store.delete(uri)

    def test_settings_name_a_bucket_and_an_endpoint(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="name a bucket"):
            open_store(Settings(data_dir=tmp_path, artifacts_url="s3://"))
        with pytest.raises(ValueError, match="NETKILN_S3_ENDPOINT_URL"):
            open_store(
                Settings(data_dir=tmp_path, artifacts_url="s3://b/p", s3_endpoint_url="ftp://x")
            )


def test_an_outage_is_retried_then_reported_as_unavailable(tmp_path: Path) -> None:
    """A store that is down fails an operation only after the retry window, as
    :class:`StorageUnavailable` (never as a missing object); one that comes back within
    the window is not noticed by the caller at all."""
    with ObjectStoreServer(tmp_path / "server") as server:
        store = s3_store(server, tmp_path / "data", store_retry_seconds=2)
        uri = _put(store, job_key("acme", uuid.uuid4(), "model.keras"), b"m")
        server.stop()
        started = time.monotonic()
        with pytest.raises(StorageUnavailable, match="unavailable"):
            _put(store, job_key("acme", uuid.uuid4(), "model.keras"), b"m")
        assert time.monotonic() - started >= 1.5
        with pytest.raises(StorageUnavailable):
            store.exists(uri)

        patient = s3_store(server, tmp_path / "data2", store_retry_seconds=120)
        patient.prefix = store.prefix
        restarted = threading.Timer(3, server.start)
        restarted.start()
        try:
            again = _put(patient, job_key("acme", uuid.uuid4(), "model.keras"), b"after")
        finally:
            restarted.join()
        assert patient.local_path(again).read_bytes() == b"after"
        assert patient.local_path(uri).read_bytes() == b"m"  # kept across the restart
