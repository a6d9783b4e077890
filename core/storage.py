"""The storage seam: the one module that makes, resolves, opens, writes and deletes artifact
addresses — trained models, checkpoints, uploaded base models and datasets.

An address has two forms. A *key* is the store-relative name this module makes
(:func:`job_key`, :func:`upload_key`); a *URI* is what a row records and what the store
resolves again (``file:///…/artifacts/<job>/model.keras``). Callers never build either by
hand: they ask for a key, :meth:`ArtifactStore.put` a file under it, keep the returned
URI, and later ask the store for :meth:`~ArtifactStore.local_path` or to
:meth:`~ArtifactStore.delete` it.

Writes are atomic from a reader's view: a file is prepared in :meth:`~ArtifactStore.staging`
(a private folder on local disk), then :meth:`~ArtifactStore.put` publishes it whole, so no
reader — a download, a resuming worker — ever sees half an object.

Keys start with the tenant's folder (``tenants/<tenant>/…``), then a random id: one
tenant's objects never share a prefix with another's, and no key can be guessed.

Backends register by URL scheme in :data:`BACKENDS`; :func:`open_store` picks one from
``NETKILN_ARTIFACTS_URL``: ``file://`` (a local or shared folder) or ``s3://`` (any
S3-compatible object store, :mod:`core.s3store`).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO, ClassVar, Literal
from urllib.parse import unquote, urlparse

if TYPE_CHECKING:
    from core.settings import Settings

CHUNK_BYTES = 1024 * 1024

UploadKind = Literal["models", "datasets"]
#: What :meth:`ArtifactStore.check` writes and reads back.
PROBE = b"netkiln store probe"
#: A local store's folder for copies being published from another file system.
PUBLISH_STAGING = ".staging"


@dataclass(frozen=True)
class StoredObject:
    """What a row records about a published object."""

    uri: str
    size: int
    sha256: str


class StorageUnavailable(OSError):
    """The store did not answer, or refused, for longer than the backend retries
    (``NETKILN_STORE_RETRY_SECONDS``): an outage, not a missing object."""


def job_folder(tenant: str, job_id: uuid.UUID) -> str:
    """The key prefix of everything a job stored."""
    return f"tenants/{tenant}/jobs/{job_id}/"


def job_key(tenant: str, job_id: uuid.UUID, filename: str) -> str:
    """A job's artifact: its trained model (``model.keras``, ``model.h5``) or checkpoint."""
    return f"{job_folder(tenant, job_id)}{filename}"


def upload_key(tenant: str, kind: UploadKind, upload_id: uuid.UUID, filename: str) -> str:
    """An uploaded base model or dataset, as accepted (after inspection)."""
    return f"tenants/{tenant}/uploads/{kind}/{upload_id}/{filename}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


class ArtifactStore(ABC):
    """Where artifacts live. ``staging_root`` is local scratch space for files being
    prepared (uploads under inspection, models being saved)."""

    #: The URL scheme this backend serves (``NETKILN_ARTIFACTS_URL``).
    scheme: ClassVar[str]

    def __init__(self, url: str, staging_root: Path) -> None:
        self.url = url.rstrip("/")
        self.staging_root = staging_root

    @classmethod
    def from_settings(cls, settings: Settings) -> ArtifactStore:
        return cls(settings.resolved_artifacts_url, settings.staging_dir)

    @contextmanager
    def staging(self) -> Iterator[Path]:
        """A private folder for one write's temporary files, removed on exit. Its name
        says which process owns it, so one killed mid-write is cleaned up later
        (:meth:`clean_staging`)."""
        with _owned_folder(self.staging_root) as folder:
            yield folder

    def clean_staging(self) -> list[Path]:
        """Remove the staging folders of this host's processes that no longer run (killed
        in the middle of an upload or a checkpoint); the folders removed. Folders of
        running processes, and of other hosts sharing the folder, are left alone."""
        return _sweep(self.staging_root)

    @abstractmethod
    def prepare(self) -> None:
        """Make what the store needs before its first write (a folder, a bucket)."""

    def check(self) -> None:
        """:meth:`prepare`, then prove a write, a read and a delete with a probe object;
        raises (``StorageUnavailable``, ``OSError``) if any fails."""
        self.prepare()
        key = f"probes/{uuid.uuid4()}"
        with self.staging() as folder:
            probe = folder / "probe"
            probe.write_bytes(PROBE)
            stored = self.put(key, probe)
        try:
            if b"".join(self.stream(stored.uri)) != PROBE:
                raise StorageUnavailable(f"{stored.uri} read back other bytes than written")
        finally:
            self.delete(stored.uri)

    @abstractmethod
    def uri_for(self, key: str) -> str:
        """The URI an object stored under ``key`` has (whether it exists yet or not)."""

    @abstractmethod
    def put(self, key: str, source: Path, sha256: str | None = None) -> StoredObject:
        """Publish the local file ``source`` under ``key``, atomically, replacing what was
        there. ``source`` is consumed. ``sha256``, when the caller already hashed it."""

    @abstractmethod
    def local_path(self, uri: str) -> Path:
        """A local file with the object's bytes and its key's suffix, for readers that
        need a path (Keras, numpy). ``FileNotFoundError`` if the object does not exist."""

    @abstractmethod
    def stream(self, uri: str) -> Iterator[bytes]:
        """The object's bytes in chunks, for a download. The object is opened before this
        returns, so a missing one raises ``FileNotFoundError`` here, not mid-response."""

    @abstractmethod
    def exists(self, uri: str) -> bool: ...

    @abstractmethod
    def uris_under(self, key_prefix: str) -> list[str]:
        """The URIs of every object whose key starts with ``key_prefix`` (a folder's:
        ending in ``/``)."""

    @abstractmethod
    def delete(self, uri: str) -> None:
        """Remove the object; a missing one is no error."""


class LocalStore(ArtifactStore):
    """A folder on a local or shared file system (``file:///srv/netkiln``). Objects are
    published with ``os.replace`` from a staging folder on the same file system, so a
    reader sees the old file or the new one, never a mix."""

    scheme = "file"

    def __init__(self, url: str, staging_root: Path) -> None:
        super().__init__(url, staging_root)
        self.root = _file_path(url)

    def prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def uri_for(self, key: str) -> str:
        return self._path_of_key(key).as_uri()

    def put(self, key: str, source: Path, sha256: str | None = None) -> StoredObject:
        final = self._path_of_key(key)
        final.parent.mkdir(parents=True, exist_ok=True)
        size, digest = source.stat().st_size, sha256 or sha256_file(source)
        try:
            os.replace(source, final)
        except OSError:
            # Another file system (the staging root elsewhere): copy into the store's own
            # staging folder first, so the rename that publishes it is still atomic; that
            # folder is named for this process, so a copy cut short by SIGKILL is swept.
            with _owned_folder(self.root / PUBLISH_STAGING) as folder:
                partial = folder / final.name
                shutil.copyfile(source, partial)
                os.replace(partial, final)
            source.unlink(missing_ok=True)
        return StoredObject(final.as_uri(), size, digest)

    def clean_staging(self) -> list[Path]:
        return [*super().clean_staging(), *_sweep(self.root / PUBLISH_STAGING)]

    def local_path(self, uri: str) -> Path:
        path = self._path_of_uri(uri)
        if not path.is_file():
            raise FileNotFoundError(f"no object at {uri}")
        return path

    def stream(self, uri: str) -> Iterator[bytes]:
        return _chunks(self.local_path(uri).open("rb"))

    def uris_under(self, key_prefix: str) -> list[str]:
        folder = self._path_of_key(key_prefix)
        if not folder.is_dir():
            return []
        return sorted(path.as_uri() for path in folder.rglob("*") if path.is_file())

    def exists(self, uri: str) -> bool:
        return self._path_of_uri(uri).is_file()

    def delete(self, uri: str) -> None:
        path = self._path_of_uri(uri)
        path.unlink(missing_ok=True)
        # Each object has a folder of its own (a job's or an upload's); drop it once empty.
        for folder in path.parents:
            if folder == self.root or not folder.is_relative_to(self.root):
                break
            try:
                folder.rmdir()
            except OSError:
                break

    def _path_of_key(self, key: str) -> Path:
        path = (self.root / key).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"artifact key {key!r} leaves the store")
        return path

    def _path_of_uri(self, uri: str) -> Path:
        path = _file_path(uri).resolve()
        if not path.is_relative_to(self.root):
            raise ValueError(f"{uri} is not in the artifact store at {self.url}")
        return path


def _file_path(uri: str) -> Path:
    parsed = urlparse(uri)
    if parsed.scheme != "file":
        raise ValueError(f"not a file:// URI: {uri}")
    return Path(unquote(parsed.path)).resolve()


def _chunks(handle: BinaryIO) -> Iterator[bytes]:
    with handle:
        while block := handle.read(CHUNK_BYTES):
            yield block


@contextmanager
def _owned_folder(parent: Path) -> Iterator[Path]:
    """A new folder in ``parent`` named for this host and process, removed on exit."""
    parent.mkdir(parents=True, exist_ok=True)
    prefix = f"{_staging_prefix()}{os.getpid()}-"
    folder = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _sweep(parent: Path) -> list[Path]:
    """Remove the folders :func:`_owned_folder` made in ``parent`` for this host's
    processes that no longer run; the folders removed."""
    prefix = _staging_prefix()
    removed = []
    for folder in parent.glob(f"{prefix}*"):
        owner = folder.name.removeprefix(prefix).partition("-")[0]
        if owner.isdigit() and not process_running(int(owner)):
            shutil.rmtree(folder, ignore_errors=True)
            removed.append(folder)
    return removed


def _staging_prefix() -> str:
    return f"stage-{socket.gethostname()}-"


def process_running(pid: int) -> bool:
    """Whether process ``pid`` of this host still runs (a zombie does not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return not _zombie(pid)


def _zombie(pid: int) -> bool:
    """A killed process whose parent died too stays a zombie where PID 1 does not reap
    (a container without an init): it answers signals, but writes nothing any more."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False  # no procfs: trust the signal
    return stat[stat.rfind(")") + 2 :].startswith("Z")


def _s3_store() -> type[ArtifactStore]:
    from core.s3store import S3Store  # its client library loads only where it is used

    return S3Store


#: Storage backends by URL scheme, each loaded when a store of its scheme is opened.
BACKENDS: dict[str, Callable[[], type[ArtifactStore]]] = {
    LocalStore.scheme: lambda: LocalStore,
    "s3": _s3_store,
}


def open_store(settings: Settings) -> ArtifactStore:
    """The artifact store ``settings`` name (``NETKILN_ARTIFACTS_URL``; by default the data
    folder itself)."""
    url = settings.resolved_artifacts_url
    scheme = urlparse(url).scheme
    backend = BACKENDS.get(scheme)
    if backend is None:
        known = ", ".join(f"{name}://" for name in sorted(BACKENDS))
        raise ValueError(f"NETKILN_ARTIFACTS_URL {url!r}: unknown scheme; use one of {known}")
    return backend().from_settings(settings)
