"""/v1/datasets: the built-in datasets and uploaded ones (.npz or .csv, stored as .npz)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile, status

from api.body_limit import UploadRoute
from api.deps import CallerDep, SessionDep, SettingsDep, StoreDep, get_caller
from api.errors import UNAUTHORIZED, NotFound, error_responses
from api.services import datasets as service
from api.services import deletion
from api.services.uploads import commit_or_discard, newest_first
from api.upload_schemas import DatasetOut, DatasetPage
from models.spec.data import BUILTIN_DATASETS
from models.spec.job import PRINTABLE
from models.tables import Dataset

router = APIRouter(
    prefix="/v1/datasets",
    tags=["datasets"],
    route_class=UploadRoute,
    dependencies=[Depends(get_caller)],
    responses=UNAUTHORIZED,
)


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=DatasetOut,
    responses={
        **error_responses(
            {
                400: "The body is not a multipart form.",
                413: "Larger than the tenant's upload limit.",
            }
        ),
        422: {
            "description": "Not a dataset netkiln accepts (pickled arrays, non-numeric "
            "features, mismatched lengths, …); the detail says which."
        },
    },
)
def upload_dataset(
    file: Annotated[
        UploadFile,
        File(
            description=".npz with x_train, y_train (optionally x_test, y_test), or .csv with "
            "a header row, a label column and numeric feature columns."
        ),
    ],
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    caller: CallerDep,
    response: Response,
    name: Annotated[str | None, Form(max_length=200, pattern=PRINTABLE)] = None,
    label: Annotated[
        str,
        Form(min_length=1, max_length=200, pattern=PRINTABLE, description="CSV: the label column."),
    ] = "label",
    test_fraction: Annotated[
        float,
        Form(ge=0, lt=1, description="Hold out this share as the test split (seeded, 0)."),
    ] = 0.0,
) -> DatasetOut:
    row = service.create(
        session, settings, store, caller, file.file, file.filename, name, label, test_fraction
    )
    commit_or_discard(session, store, row)
    response.headers["Location"] = f"/v1/datasets/{row.id}"
    return DatasetOut.from_row(row)


@router.get(
    "",
    response_model=DatasetPage,
    responses=error_responses({400: "A cursor this API did not issue."}),
)
def list_datasets(
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200, description="Uploads per page.")] = 50,
    cursor: str | None = None,
) -> DatasetPage:
    rows, next_cursor = newest_first(session, Dataset, caller.tenant, limit, cursor)
    first = service.builtins() if cursor is None else []
    return DatasetPage(
        items=[*first, *(DatasetOut.from_row(row) for row in rows)], next_cursor=next_cursor
    )


@router.get(
    "/{dataset}",
    response_model=DatasetOut,
    responses=error_responses({404: "No such built-in or uploaded dataset."}),
)
def get_dataset(dataset: str, session: SessionDep, caller: CallerDep) -> DatasetOut:
    """A built-in by name (``mnist``), or an upload by id."""
    if dataset in BUILTIN_DATASETS:
        return service.builtin(dataset)
    return DatasetOut.from_row(_upload_or_404(session, caller, dataset))


@router.delete(
    "/{dataset}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        {
            404: "No such uploaded dataset (built-ins cannot be deleted).",
            409: "A queued or running job still needs it.",
        }
    ),
)
def delete_dataset(
    dataset: str, session: SessionDep, caller: CallerDep, store: StoreDep
) -> Response:
    """The upload and its stored file. Jobs that already trained on it keep their
    results; a job that still waits for it makes this a 409."""
    deletion.delete_upload(session, store, _upload_or_404(session, caller, dataset), "datasets")
    return Response(status_code=status.HTTP_204_NO_CONTENT)


def _upload_or_404(session: SessionDep, caller: CallerDep, dataset: str) -> Dataset:
    try:
        row = session.get(Dataset, uuid.UUID(dataset))
    except ValueError:
        row = None
    if row is None or row.tenant_id != caller.tenant:
        raise NotFound(f"no uploaded dataset {dataset}")
    return row
