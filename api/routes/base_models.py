"""/v1/models: upload Keras models for transfer jobs to start from; list and read them."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Depends, File, Form, Query, Response, UploadFile, status

from api.body_limit import UploadRoute
from api.deps import CallerDep, SessionDep, SettingsDep, StoreDep, get_caller
from api.errors import UNAUTHORIZED, NotFound, error_responses
from api.services import base_models as service
from api.services import deletion
from api.services.uploads import commit_or_discard, newest_first
from api.upload_schemas import BaseModelOut, BaseModelPage
from models.spec.job import PRINTABLE
from models.tables import BaseModel as BaseModelRow

router = APIRouter(
    prefix="/v1/models",
    tags=["models"],
    route_class=UploadRoute,
    dependencies=[Depends(get_caller)],
    responses=UNAUTHORIZED,
)


def base_model_or_404(model_id: uuid.UUID, session: SessionDep, caller: CallerDep) -> BaseModelRow:
    row = session.get(BaseModelRow, model_id)
    if row is None or row.tenant_id != caller.tenant:
        raise NotFound(f"no uploaded model {model_id}")
    return row


BaseModelDep = Annotated[BaseModelRow, Depends(base_model_or_404)]


@router.post(
    "",
    status_code=status.HTTP_201_CREATED,
    response_model=BaseModelOut,
    responses={
        **error_responses(
            {
                400: "The body is not a multipart form.",
                413: "Larger than the tenant's upload limit.",
            }
        ),
        422: {
            "description": "Not a Keras model, damaged, or not accepted (a Lambda layer, "
            "a custom object, a zip bomb); the detail says which."
        },
    },
)
def upload_model(
    file: Annotated[UploadFile, File(description="A .keras or legacy .h5 Keras model.")],
    session: SessionDep,
    settings: SettingsDep,
    store: StoreDep,
    caller: CallerDep,
    response: Response,
    name: Annotated[str | None, Form(max_length=200, pattern=PRINTABLE)] = None,
) -> BaseModelOut:
    """The file is inspected, never loaded: layers that carry code (Lambda) and custom
    objects other than netkiln's layers are refused."""
    row = service.create(session, settings, store, caller, file.file, file.filename, name)
    commit_or_discard(session, store, row)
    response.headers["Location"] = f"/v1/models/{row.id}"
    return BaseModelOut.from_row(row)


@router.get(
    "",
    response_model=BaseModelPage,
    responses=error_responses({400: "A cursor this API did not issue."}),
)
def list_models(
    session: SessionDep,
    caller: CallerDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    cursor: str | None = None,
) -> BaseModelPage:
    rows, next_cursor = newest_first(session, BaseModelRow, caller.tenant, limit, cursor)
    return BaseModelPage(
        items=[BaseModelOut.from_row(row) for row in rows], next_cursor=next_cursor
    )


@router.get(
    "/{model_id}",
    response_model=BaseModelOut,
    responses=error_responses({404: "No such uploaded model."}),
)
def get_model(model: BaseModelDep) -> BaseModelOut:
    return BaseModelOut.from_row(model)


@router.delete(
    "/{model_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    responses=error_responses(
        {404: "No such uploaded model.", 409: "A queued or running job still needs it."}
    ),
)
def delete_model(model: BaseModelDep, session: SessionDep, store: StoreDep) -> Response:
    """The upload and its stored file. Jobs that already trained from it keep their
    models; a job that still waits for it makes this a 409."""
    deletion.delete_upload(session, store, model, "models")
    return Response(status_code=status.HTTP_204_NO_CONTENT)
