"""Deleting what a tenant no longer needs: an ended job (its rows, its children's, their
stored artifacts) and uploads that no waiting job reads. Rows go in the request's
transaction and are committed here; the stored objects go after the commit, so a delete
that fails leaves everything as it was, and a store that fails afterwards leaves only
unreferenced objects behind (logged), never a row pointing at nothing."""

from __future__ import annotations

import contextlib
import json
import logging
import re
import uuid
from collections.abc import Callable, Iterator

from pydantic import ValidationError
from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from api.errors import Conflict
from core.storage import ArtifactStore, StorageUnavailable, UploadKind, job_folder
from models.kinds import kind_of
from models.kinds.base import Inputs
from models.spec import job_spec_adapter
from models.tables import Artifact, BaseModel, Dataset, Job, JobStatus

log = logging.getLogger(__name__)

#: A job in these states may still read its inputs.
WAITING = (JobStatus.QUEUED, JobStatus.RUNNING)


def delete_job(session: Session, store: ArtifactStore, job: Job) -> list[uuid.UUID]:
    """The ids deleted: the job's and its descendants' (a sweep's trials)."""
    if JobStatus(job.status) in WAITING:
        raise Conflict(
            f"job {job.id} is {job.status}; cancel it first, and delete it once it has ended"
        )
    family = _with_descendants(session, job.id)
    busy = session.scalars(select(Job.id).where(Job.id.in_(family), Job.status.in_(WAITING)))
    if first := busy.first():
        raise Conflict(f"job {job.id} has a child job {first} that has not ended")
    # A waiting job may build on the model of any of them (a sweep's trial, too).
    members = set(family)
    _refuse_if_needed(
        session, job.tenant_id, lambda inputs: bool(members & set(inputs.jobs)), f"job {job.id}"
    )
    uris = set(session.scalars(select(Artifact.uri).where(Artifact.job_id.in_(family))))
    # Objects no row names too: checkpoints a killed worker wrote but never recorded.
    for member in family:
        try:
            uris.update(store.uris_under(job_folder(job.tenant_id, member)))
        except StorageUnavailable as exc:
            log.warning("job %s: could not list its stored objects: %s", member, exc)
    # The database removes the children, epochs, events and artifact rows (ON DELETE
    # CASCADE), in one statement whatever their number.
    session.execute(delete(Job).where(Job.id == job.id))
    session.commit()
    _delete_objects(store, sorted(uris))
    return list(family)


def delete_upload(
    session: Session, store: ArtifactStore, upload: Dataset | BaseModel, kind: UploadKind
) -> None:
    """``kind`` names the upload's kind, and the :class:`Inputs` field that reads it."""
    _refuse_if_needed(
        session,
        upload.tenant_id,
        lambda inputs: upload.id in getattr(inputs, kind),
        f"{kind.removesuffix('s')} {upload.id}",
    )
    uri = upload.uri
    session.delete(upload)
    session.commit()
    _delete_objects(store, [uri])


def _refuse_if_needed(
    session: Session, tenant: str, needs: Callable[[Inputs], bool], what: str
) -> None:
    waiting = [job_id for job_id, inputs in _waiting_inputs(session, tenant) if needs(inputs)]
    if waiting:
        shown = ", ".join(str(job_id) for job_id in waiting[:5])
        raise Conflict(
            f"{what} is needed by {len(waiting)} job(s) that have not ended ({shown}); "
            "delete it once they have"
        )


def _waiting_inputs(session: Session, tenant: str) -> Iterator[tuple[uuid.UUID, Inputs]]:
    """What each of the tenant's queued and running jobs reads."""
    rows = session.execute(
        select(Job.id, Job.spec).where(Job.tenant_id == tenant, Job.status.in_(WAITING))
    )
    for job_id, stored in rows:
        try:
            spec = job_spec_adapter.validate_python(stored)
        except ValidationError:
            yield job_id, _every_id_in(stored)  # a spec of another version: err on the safe side
            continue
        yield job_id, kind_of(spec).inputs(spec)


def _every_id_in(value: object) -> Inputs:
    """Every UUID anywhere in a stored spec, as each kind of input."""
    found = set()
    for text in re.findall(r"[0-9a-fA-F-]{36}", json.dumps(value)):
        with contextlib.suppress(ValueError):
            found.add(uuid.UUID(text))
    ids = frozenset(found)
    return Inputs(datasets=ids, models=ids, jobs=ids)


def _with_descendants(session: Session, job_id: uuid.UUID) -> list[uuid.UUID]:
    family, frontier = [job_id], [job_id]
    while frontier:
        frontier = list(session.scalars(select(Job.id).where(Job.parent_id.in_(frontier))))
        family.extend(frontier)
    return family


def _delete_objects(store: ArtifactStore, uris: list[str]) -> None:
    for uri in uris:
        try:
            store.delete(uri)
        except (StorageUnavailable, OSError) as exc:
            log.warning("deleted %s from the database, but not from the store: %s", uri, exc)
