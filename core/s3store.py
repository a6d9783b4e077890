"""An S3-compatible object store as the artifact store: ``s3://bucket/prefix`` on AWS S3,
MinIO, Ceph RGW, SeaweedFS… (``NETKILN_S3_*`` name the server and credentials).

The client is MinIO's ``minio`` library, chosen on a measurement against the test server
(SeaweedFS, 10 MB objects, this 2-core machine, 2026-12-04; two runs each): minio wrote
68–84 MB/s and read 324–376 MB/s, boto3 40–58 and 127–164, obstore 62–82 and 161–183. It
is small (urllib3 and two crypto packages, no botocore: 47 MB of venv against boto3's 62),
synchronous like the rest of the seam, works with any S3-compatible server, and is kept by
MinIO with releases every few weeks. An S3 PUT — single or multipart — becomes
visible only once complete, so a reader never sees half an object; each object carries its
sha256 as metadata (``x-amz-meta-sha256``), which keys the local cache of fetched copies.
"""

from __future__ import annotations

import hashlib
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path, PurePosixPath
from typing import TypeVar
from urllib.parse import urlparse

import urllib3
from minio import Minio
from minio.credentials.providers import (
    ChainedProvider,
    EnvAWSProvider,
    IamAwsProvider,
    StaticProvider,
)
from minio.error import S3Error, ServerError

from core.settings import Settings
from core.storage import (
    CHUNK_BYTES,
    ArtifactStore,
    StorageUnavailable,
    StoredObject,
    process_running,
    sha256_file,
)

log = logging.getLogger(__name__)

T = TypeVar("T")

SHA256_METADATA = "x-amz-meta-sha256"
#: Name prefix of a cache file being fetched (then the fetching process's id).
FETCHING = ".fetch-"
#: S3 error codes that say "not now" rather than "no".
TRANSIENT_CODES = frozenset(
    {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "RequestTimeTooSkewed"}
)
MISSING_CODES = frozenset({"NoSuchKey", "NoSuchObject"})


class S3Store(ArtifactStore):
    scheme = "s3"

    def __init__(
        self,
        url: str,
        staging_root: Path,
        client: Minio,
        cache: ObjectCache,
        retry_seconds: float,
    ) -> None:
        super().__init__(url, staging_root)
        parsed = urlparse(self.url)
        if not parsed.netloc:
            raise ValueError(f"NETKILN_ARTIFACTS_URL {url!r}: name a bucket (s3://bucket/prefix)")
        self.bucket = parsed.netloc
        prefix = parsed.path.strip("/")
        self.prefix = f"{prefix}/" if prefix else ""
        self.client = client
        self.cache = cache
        self.retry_seconds = retry_seconds

    @classmethod
    def from_settings(cls, settings: Settings) -> S3Store:
        endpoint = urlparse(settings.s3_endpoint_url)
        if endpoint.scheme not in {"http", "https"} or not endpoint.netloc:
            raise ValueError(
                f"NETKILN_S3_ENDPOINT_URL {settings.s3_endpoint_url!r}: use http(s)://host[:port]"
            )
        secret = settings.s3_secret_access_key
        credentials = (
            StaticProvider(settings.s3_access_key_id, secret.get_secret_value())
            if settings.s3_access_key_id and secret
            else ChainedProvider([EnvAWSProvider(), IamAwsProvider()])
        )
        # Short timeouts and few retries per request: an outage is ridden out by
        # :meth:`_retrying`, whose backoff and deadline apply to every operation alike.
        http = urllib3.PoolManager(
            timeout=urllib3.Timeout(connect=5, read=60),
            retries=urllib3.Retry(total=2, backoff_factor=0.2, status_forcelist=[502, 503, 504]),
            maxsize=16,
        )
        client = Minio(
            endpoint.netloc,
            secure=endpoint.scheme == "https",
            region=settings.s3_region,
            http_client=http,
            credentials=credentials,
        )
        cache = ObjectCache(settings.cache_dir, settings.cache_max_mb * 1024 * 1024)
        return cls(
            settings.resolved_artifacts_url,
            settings.staging_dir,
            client,
            cache,
            settings.store_retry_seconds,
        )

    def prepare(self) -> None:
        if not self._retrying("look up the bucket", lambda: self.client.bucket_exists(self.bucket)):
            log.info("creating bucket %s", self.bucket)
            self._retrying(
                f"create bucket {self.bucket}", lambda: self.client.make_bucket(self.bucket)
            )

    def uri_for(self, key: str) -> str:
        return f"s3://{self.bucket}/{self.prefix}{_checked_key(key)}"

    def put(self, key: str, source: Path, sha256: str | None = None) -> StoredObject:
        size, digest = source.stat().st_size, sha256 or sha256_file(source)
        name = f"{self.prefix}{_checked_key(key)}"
        self._retrying(
            f"store {name}",
            lambda: self.client.fput_object(
                self.bucket, name, str(source), metadata={SHA256_METADATA: digest}
            ),
        )
        source.unlink(missing_ok=True)
        return StoredObject(self.uri_for(key), size, digest)

    def local_path(self, uri: str) -> Path:
        name = self._name_of(uri)
        for _ in range(3):
            stat = self._retrying(
                f"look up {name}", lambda: self.client.stat_object(self.bucket, name)
            )
            digest = (stat.metadata or {}).get(SHA256_METADATA)
            suffix = PurePosixPath(name).suffix  # Keras picks a model's format by it
            cached = self.cache.get(digest, suffix)
            if cached is not None:
                return cached
            try:
                return self.cache.add(digest, suffix, lambda target: self._download(name, target))
            except ContentChanged:
                continue  # replaced between the look-up and the read (a newer checkpoint)
        raise StorageUnavailable(f"{uri} kept changing while it was read")

    def stream(self, uri: str) -> Iterator[bytes]:
        name = self._name_of(uri)
        response = self._retrying(f"read {name}", lambda: self.client.get_object(self.bucket, name))

        def chunks() -> Iterator[bytes]:
            try:
                yield from response.stream(CHUNK_BYTES)
            finally:
                response.close()
                response.release_conn()

        return chunks()

    def clean_staging(self) -> list[Path]:
        return [*super().clean_staging(), *self.cache.sweep()]

    def exists(self, uri: str) -> bool:
        name = self._name_of(uri)
        try:
            self._retrying(f"look up {name}", lambda: self.client.stat_object(self.bucket, name))
        except FileNotFoundError:
            return False
        return True

    def uris_under(self, key_prefix: str) -> list[str]:
        prefix = f"{self.prefix}{_checked_key(key_prefix)}"
        listed = self._retrying(
            f"list {prefix}",
            lambda: list(self.client.list_objects(self.bucket, prefix=prefix, recursive=True)),
        )
        return sorted(f"s3://{self.bucket}/{item.object_name}" for item in listed)

    def delete(self, uri: str) -> None:
        name = self._name_of(uri)
        self._retrying(f"delete {name}", lambda: self.client.remove_object(self.bucket, name))

    def _download(self, name: str, target: Path) -> str:
        """Write the object to ``target``; its sha256 as read."""
        response = self._retrying(f"read {name}", lambda: self.client.get_object(self.bucket, name))
        digest = hashlib.sha256()
        try:
            with target.open("wb") as handle:
                for block in response.stream(CHUNK_BYTES):
                    digest.update(block)
                    handle.write(block)
        finally:
            response.close()
            response.release_conn()
        return digest.hexdigest()

    def _name_of(self, uri: str) -> str:
        parsed = urlparse(uri)
        name = parsed.path.lstrip("/")
        if (
            parsed.scheme != self.scheme
            or parsed.netloc != self.bucket
            or not name.startswith(self.prefix)
        ):
            raise ValueError(f"{uri} is not in the artifact store at {self.url}")
        _checked_key(name)
        return name

    def _retrying(self, what: str, operation: Callable[[], T]) -> T:
        """Run ``operation``, retrying with backoff while the store is unreachable or
        answers "not now", up to ``retry_seconds``; a missing object is
        ``FileNotFoundError`` at once."""
        deadline = time.monotonic() + self.retry_seconds
        delay = 0.25
        while True:
            try:
                return operation()
            except S3Error as exc:
                if exc.code in MISSING_CODES:
                    raise FileNotFoundError(f"no object {what.split()[-1]}") from None
                if exc.code not in TRANSIENT_CODES:
                    raise StorageUnavailable(f"{what}: {exc.code}: {exc.message}") from exc
                failure: Exception = exc
            except (ServerError, urllib3.exceptions.HTTPError, ConnectionError) as exc:
                failure = exc
            if time.monotonic() + delay > deadline:
                raise StorageUnavailable(
                    f"{what}: the store is unavailable ({failure})"
                ) from failure
            log.warning("%s failed (%s); retrying in %.1f s", what, failure, delay)
            time.sleep(delay)
            delay = min(delay * 2, 8.0)


class ContentChanged(Exception):
    """The bytes read are not those the object's sha256 named."""


class ObjectCache:
    """Local copies of remote objects, one file per sha256, the least recently used
    removed past ``max_bytes``. A copy is written to a temporary name, checked against its
    sha256 and renamed into place, so a reader finds a whole, verified file or none."""

    def __init__(self, root: Path, max_bytes: int) -> None:
        self.root = root
        self.max_bytes = max_bytes

    def get(self, sha256: str | None, suffix: str) -> Path | None:
        if sha256 is None:
            return None
        path = self.root / f"{sha256}{suffix}"
        try:
            os.utime(path)  # recently used
        except FileNotFoundError:
            return None
        return path

    def add(self, sha256: str | None, suffix: str, fetch: Callable[[Path], str]) -> Path:
        """Fetch an object (``fetch(target)`` writes it, returning the sha256 it read) and
        keep it as ``<sha256><suffix>``; an object stored without a sha256 is checked by
        nothing and kept under what it read."""
        self.root.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=self.root, prefix=f"{FETCHING}{os.getpid()}-")
        os.close(handle)
        target = Path(temporary)
        try:
            read = fetch(target)
            if sha256 is not None and read != sha256:
                raise ContentChanged(sha256)
            final = self.root / f"{read}{suffix}"
            os.replace(target, final)
        finally:
            target.unlink(missing_ok=True)
        self._evict(keep=final)
        return final

    def sweep(self) -> list[Path]:
        """Remove what fetches of processes that no longer run left behind."""
        removed = []
        for path in self.root.glob(f"{FETCHING}*"):
            owner = path.name.removeprefix(FETCHING).partition("-")[0]
            if owner.isdigit() and not process_running(int(owner)):
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed

    def _evict(self, keep: Path) -> None:
        entries = []
        for path in self.root.iterdir():
            if path.name.startswith(FETCHING):
                continue
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            if path != keep:
                path.unlink(missing_ok=True)
                total -= size


def _checked_key(key: str) -> str:
    parts = PurePosixPath(key).parts
    if key.startswith("/") or not parts or any(part in {"..", "."} for part in parts):
        raise ValueError(f"artifact key {key!r} leaves the store")
    return key
