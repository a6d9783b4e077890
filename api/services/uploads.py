"""What base-model and dataset uploads share below the routes: staging the uploaded file
within the size limit, and turning refusals into 4xx errors."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path, PurePath
from typing import Any, BinaryIO, TypeVar

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from api.errors import NetkilnError
from api.services.jobs import decode_cursor, encode_cursor
from core.settings import Settings
from core.storage import ArtifactStore, UploadKind, upload_key
from models.tables import BaseModel as BaseModelRow
from models.tables import Dataset
from models.tenancy import Caller
from uploads.archives import InvalidUpload, StagedFile, UploadTooLarge, copy_bounded

UploadRow = TypeVar("UploadRow", BaseModelRow, Dataset)

ZIP_MAGIC = b"PK\x03\x04"
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


class UnprocessableUpload(NetkilnError):
    status_code = 422
    code = "invalid_upload"


class PayloadTooLarge(NetkilnError):
    status_code = 413
    code = "upload_too_large"

    def __init__(self, message: str, limit: int | None = None) -> None:
        super().__init__(message)
        self.allowed = limit

    def body(self) -> dict[str, Any]:
        return {**super().body(), "limit": "max_upload_bytes", "allowed": self.allowed}


def upload_limit(settings: Settings, caller: Caller) -> int:
    """Bytes one uploaded file may have: the server's cap, or the tenant's if lower."""
    tenant_limit = caller.limits.max_upload_bytes
    if tenant_limit is None:
        return settings.max_upload_bytes
    return min(tenant_limit, settings.max_upload_bytes)


@contextmanager
def refusals() -> Iterator[None]:
    """Domain refusals of an upload as the errors the API answers with."""
    try:
        yield
    except InvalidUpload as exc:
        raise UnprocessableUpload(str(exc)) from exc
    except UploadTooLarge as exc:
        raise PayloadTooLarge(str(exc), exc.limit) from exc


def stage(source: BinaryIO, folder: Path, limit: int) -> StagedFile:
    staged = copy_bounded(source, folder / "upload", limit)
    if staged.size == 0:
        raise InvalidUpload("the uploaded file is empty")
    return staged


def publish(
    session: Session,
    store: ArtifactStore,
    tenant: str,
    kind: UploadKind,
    filename: str,
    staged: StagedFile,
    make_row: Callable[[uuid.UUID, str], UploadRow],
) -> UploadRow:
    """Record the accepted upload's row (``make_row(id, uri)``, flushed), then publish its
    file: a row that cannot be inserted leaves nothing stored. The request's commit follows
    (:func:`commit_or_discard`)."""
    upload_id = uuid.uuid4()
    key = upload_key(tenant, kind, upload_id, filename)
    row = make_row(upload_id, store.uri_for(key))
    session.add(row)
    session.flush()
    store.put(key, staged.path, staged.sha256)
    return row


def commit_or_discard(session: Session, store: ArtifactStore, row: BaseModelRow | Dataset) -> None:
    """Commit the upload's row; if that fails, its published file goes too."""
    try:
        session.commit()
    except Exception:
        store.delete(row.uri)
        raise


def magic(path: Path) -> bytes:
    with path.open("rb") as handle:
        return handle.read(len(HDF5_MAGIC))


def clean_filename(filename: str | None, default: str) -> str:
    """The uploaded file's own name, without any folders a client put in front of it, or
    control characters (a NUL cannot be stored in PostgreSQL)."""
    name = PurePath((filename or "").replace("\\", "/")).name
    name = "".join(ch for ch in name if ch.isprintable())
    return name[:255] or default


Row = TypeVar("Row", BaseModelRow, Dataset)


def newest_first(
    session: Session, table: type[Row], tenant: str, limit: int, cursor: str | None
) -> tuple[list[Row], str | None]:
    """A page of a tenant's uploads, newest first, keyset-paginated on (created_at, id)
    like jobs."""
    query = (
        select(table)
        .where(table.tenant_id == tenant)
        .order_by(table.created_at.desc(), table.id.desc())
    )
    if cursor is not None:
        created_at, row_id = decode_cursor(cursor)
        query = query.where(
            or_(
                table.created_at < created_at,
                and_(table.created_at == created_at, table.id < row_id),
            )
        )
    rows = list(session.scalars(query.limit(limit + 1)))
    if len(rows) <= limit:
        return rows, None
    last = rows[limit - 1]
    return rows[:limit], encode_cursor(last.created_at, last.id)
