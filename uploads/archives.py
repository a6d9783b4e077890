"""An uploaded file on its way in: copied into a staging folder (bounded, hashed), and its
zip archive opened defensively. Only once inspection accepted it does the API publish it
through the storage seam (:mod:`core.storage`), so a refused upload leaves nothing stored
and a stored file is never partial.
"""

from __future__ import annotations

import hashlib
import shutil
import zipfile
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

CHUNK_BYTES = 1024 * 1024
#: An archive may expand to at most this many times the upload limit, and never past 2 GiB.
EXPANSION_FACTOR = 4
MAX_EXPANDED_BYTES = 2 * 1024**3
MAX_ARCHIVE_MEMBERS = 10_000
#: Members larger than this (expanded) may not be compressed better than ``MAX_RATIO``:
#: real weights and arrays never are; zip bombs always are.
RATIO_FLOOR_BYTES = 1024 * 1024
MAX_RATIO = 100
#: Everything ``zipfile`` raises on damaged, truncated or unsupported archives.
ARCHIVE_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError)


class InvalidUpload(ValueError):
    """The uploaded file is not what it claims to be, or is not accepted (a Lambda layer,
    a pickled array); the message says why."""


class UploadTooLarge(ValueError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the upload exceeds the limit of {limit} bytes (max_upload_bytes)")
        self.limit = limit


@dataclass(frozen=True)
class StagedFile:
    path: Path
    size: int
    sha256: str


def copy_bounded(source: BinaryIO, target: Path, limit: int) -> StagedFile:
    """Copy ``source`` to ``target``, hashing it; ``UploadTooLarge`` past ``limit`` bytes."""
    digest = hashlib.sha256()
    size = 0
    with target.open("wb") as out:
        while chunk := source.read(CHUNK_BYTES):
            size += len(chunk)
            if size > limit:
                raise UploadTooLarge(limit)
            digest.update(chunk)
            out.write(chunk)
    return StagedFile(target, size, digest.hexdigest())


def hash_file(path: Path) -> StagedFile:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK_BYTES):
            digest.update(chunk)
    return StagedFile(path, path.stat().st_size, digest.hexdigest())


def expanded_limit(max_upload_bytes: int) -> int:
    return min(EXPANSION_FACTOR * max_upload_bytes, MAX_EXPANDED_BYTES)


@contextmanager
def open_archive(path: Path, what: str, max_expanded: int) -> Iterator[zipfile.ZipFile]:
    """A zip archive whose members are safe to read: relative paths inside the archive,
    no duplicates or encryption, a bounded expanded size and sane compression ratios.
    ``zipfile`` itself stops every member at its declared size and checks its CRC."""
    try:
        archive = zipfile.ZipFile(path)
    except (*ARCHIVE_ERRORS, OSError) as exc:
        raise InvalidUpload(f"not a valid {what} (a zip archive): {exc}") from exc
    with archive:
        check_members(archive.infolist(), what, max_expanded)
        yield archive


def check_members(members: list[zipfile.ZipInfo], what: str, max_expanded: int) -> None:
    if len(members) > MAX_ARCHIVE_MEMBERS:
        raise InvalidUpload(f"the {what} holds {len(members)} files; at most {MAX_ARCHIVE_MEMBERS}")
    seen: set[str] = set()
    total = 0
    for member in members:
        name = member.filename
        parts = PurePosixPath(name).parts
        if (
            not name
            or name.startswith("/")
            or "\\" in name
            or ".." in parts
            or (parts and ":" in parts[0])
        ):
            raise InvalidUpload(f"the {what} holds a file with an unsafe path: {name!r}")
        if name in seen:
            raise InvalidUpload(f"the {what} holds {name!r} twice")
        seen.add(name)
        if member.flag_bits & 0x1:
            raise InvalidUpload(f"the {what} holds an encrypted file: {name!r}")
        total += member.file_size
        if total > max_expanded:
            raise InvalidUpload(f"the {what} expands to more than {max_expanded} bytes")
        ratio = member.file_size / max(member.compress_size, 1)
        if member.file_size > RATIO_FLOOR_BYTES and ratio > MAX_RATIO:
            raise InvalidUpload(
                f"{name!r} in the {what} expands {ratio:.0f}-fold ({member.compress_size} to "
                f"{member.file_size} bytes), a likely zip bomb; at most {MAX_RATIO}-fold"
            )


def read_member(archive: zipfile.ZipFile, name: str, what: str, limit: int) -> bytes:
    member = archive.getinfo(name)
    if member.file_size > limit:
        raise InvalidUpload(f"{name} in the {what} is larger than {limit} bytes")
    try:
        return archive.read(member)
    except ARCHIVE_ERRORS as exc:
        raise InvalidUpload(f"{name} in the {what} is damaged: {exc}") from exc


def extract_member(archive: zipfile.ZipFile, name: str, what: str, target: Path) -> Path:
    """Copy one member out (its declared, already bounded size), checking its CRC."""
    try:
        with archive.open(name) as source, target.open("wb") as out:
            shutil.copyfileobj(source, out, CHUNK_BYTES)
    except ARCHIVE_ERRORS as exc:
        raise InvalidUpload(f"{name} in the {what} is damaged: {exc}") from exc
    return target
