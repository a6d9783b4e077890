"""What only the local-folder store has: its folders, file URIs outside it refused,
staging folders of dead processes swept, copies across file systems. What every store
promises: ``test_store_contract.py``."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

import pytest

from core.settings import Settings
from core.storage import (
    PUBLISH_STAGING,
    LocalStore,
    job_key,
    open_store,
    upload_key,
)


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    opened = open_store(Settings(data_dir=tmp_path / "data"))
    assert isinstance(opened, LocalStore)
    return opened


def _staged(store: LocalStore, folder: Path, content: bytes) -> Path:
    path = folder / "model.keras"
    path.write_bytes(content)
    return path


class TestDelete:
    def test_delete_removes_the_object_and_its_empty_folders(self, store: LocalStore) -> None:
        upload_id = uuid.uuid4()
        with store.staging() as folder:
            stored = store.put(
                upload_key("default", "models", upload_id, "model.keras"),
                _staged(store, folder, b"x"),
            )
        store.delete(stored.uri)
        assert not store.exists(stored.uri)
        assert not (
            store.root / "tenants" / "default" / "uploads" / "models" / str(upload_id)
        ).exists()
        assert store.root.is_dir()
        store.delete(stored.uri)  # a missing object is no error

    def test_delete_keeps_a_folder_other_objects_share(self, store: LocalStore) -> None:
        job_id = uuid.uuid4()
        with store.staging() as folder:
            model = store.put(
                job_key("default", job_id, "model.keras"), _staged(store, folder, b"m")
            )
        with store.staging() as folder:
            checkpoint = store.put(
                job_key("default", job_id, "checkpoint.keras"), _staged(store, folder, b"c")
            )
        store.delete(model.uri)
        assert store.local_path(checkpoint.uri).read_bytes() == b"c"


class TestRefusals:
    def test_keys_and_uris_cannot_leave_the_store(self, store: LocalStore, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="leaves the store"):
            store.uri_for("../outside/model.keras")
        outside = tmp_path / "elsewhere.keras"
        outside.write_bytes(b"x")
        with pytest.raises(ValueError, match="not in the artifact store"):
            store.local_path(outside.as_uri())
        with pytest.raises(ValueError, match="not in the artifact store"):
            store.delete(outside.as_uri())
        assert outside.exists()

    def test_unknown_scheme_names_the_known_ones(self, tmp_path: Path) -> None:
        settings = Settings(data_dir=tmp_path, artifacts_url="ftp://example/bucket")
        with pytest.raises(ValueError, match=r"unknown scheme; use one of file://"):
            open_store(settings)


def test_clean_staging_removes_folders_of_dead_processes_only(store: LocalStore) -> None:
    """What an upload or a checkpoint killed with SIGKILL leaves behind goes; what a
    running process is writing stays."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    store.staging_root.mkdir(parents=True)
    host = socket.gethostname()
    abandoned = store.staging_root / f"stage-{host}-{dead.pid}-abc"
    abandoned.mkdir()
    (abandoned / "checkpoint.keras").write_bytes(b"half")
    other_host = store.staging_root / f"stage-elsewhere.example-{dead.pid}-abc"
    other_host.mkdir()
    with store.staging() as ours:
        assert store.clean_staging() == [abandoned]
        assert ours.is_dir()
    assert not abandoned.exists()
    assert other_host.is_dir()


def test_put_from_another_file_system_publishes_whole_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    """Staging on tmpfs, the store on disk: the copy is made inside the store's own
    staging folder and renamed into place, and nothing of it stays behind."""
    shm = Path("/dev/shm")
    if not shm.is_dir() or shm.stat().st_dev == tmp_path.stat().st_dev:
        pytest.skip("needs /dev/shm on a file system of its own")
    staging = Path(tempfile.mkdtemp(dir=shm))
    try:
        store = LocalStore((tmp_path / "store").as_uri(), staging)
        with store.staging() as folder:
            stored = store.put(
                job_key("default", uuid.uuid4(), "model.keras"), _staged(store, folder, b"m")
            )
        assert store.local_path(stored.uri).read_bytes() == b"m"
        assert list((tmp_path / "store" / PUBLISH_STAGING).iterdir()) == []
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def test_clean_staging_sweeps_copies_cut_short_in_the_store(store: LocalStore) -> None:
    """A worker killed while copying a checkpoint across file systems leaves its folder
    in the store's staging folder; the next start removes it."""
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    abandoned = store.root / PUBLISH_STAGING / f"stage-{socket.gethostname()}-{dead.pid}-x"
    abandoned.mkdir(parents=True)
    (abandoned / "checkpoint.keras").write_bytes(b"half")
    assert store.clean_staging() == [abandoned]
    assert not abandoned.exists()


def test_clean_staging_treats_a_zombie_as_dead(store: LocalStore) -> None:
    """A pool process killed with its parent stays a zombie until PID 1 reaps it (if it
    ever does); it answers signals but writes nothing, so its folder goes."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    deadline = time.monotonic() + 60
    while not Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].startswith(" Z"):
        assert time.monotonic() < deadline
        time.sleep(0.01)
    try:
        store.staging_root.mkdir(parents=True)
        abandoned = store.staging_root / f"stage-{socket.gethostname()}-{child.pid}-z"
        abandoned.mkdir()
        assert store.clean_staging() == [abandoned]
    finally:
        child.wait()


def test_check_makes_the_folder_and_leaves_nothing(tmp_path: Path) -> None:
    store = open_store(
        Settings(data_dir=tmp_path / "data", artifacts_url=(tmp_path / "s").as_uri())
    )
    store.check()
    assert (tmp_path / "s").is_dir()
    assert [path for path in (tmp_path / "s").rglob("*") if path.is_file()] == []
