"""Listings splice the stored JSON into their pages unparsed; single reads validate the
same document into ``JobOut``. Both must say the same thing about every job, on both
backends, whatever its state and values."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete

from api.documents import _progress, page_json
from api.schemas import JobOut, JobPage
from api.services import jobs as service
from models.db import session_factory, transaction
from models.tables import Job, JobStatus
from models.tenancy import create_key
from tests.conftest import Backend

UTC_TIMES = st.datetimes(
    min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
)
FINITE = st.floats(allow_nan=False, allow_infinity=False, width=64)
METRICS = st.dictionaries(st.sampled_from(["loss", "accuracy", "val_loss", "lr"]), FINITE)
TEXT = st.text(st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
WARNINGS = st.lists(
    st.fixed_dictionaries(
        {
            "code": st.sampled_from(["selu_inputs", "dropout_before_output"]),
            "message": TEXT,
            "loc": st.lists(st.one_of(st.integers(0, 9), st.sampled_from(["model", "layers"]))),
        }
    ),
    max_size=2,
)


@st.composite
def jobs(draw: st.DrawFn) -> dict[str, Any]:
    status = draw(st.sampled_from(list(JobStatus)))
    steps = draw(st.integers(0, 500))
    epochs = draw(st.integers(0, 50))
    started = draw(st.none() | UTC_TIMES)
    if status == JobStatus.RUNNING:
        started = datetime.now(UTC) - timedelta(seconds=draw(st.integers(1, 10_000)))
    params = draw(st.none() | st.integers(0, 2**40))
    return {
        "name": draw(st.none() | TEXT),
        "kind": draw(st.sampled_from(["train", "transfer", "pretrain"])),
        "status": status,
        "spec": {"kind": "train"},
        "created_at": draw(UTC_TIMES),
        "started_at": started,
        "finished_at": draw(st.none() | UTC_TIMES),
        "heartbeat_at": draw(st.none() | UTC_TIMES),
        "attempt": draw(st.integers(0, 5)),
        "max_attempts": draw(st.integers(1, 5)),
        "worker_host": draw(st.none() | TEXT),
        "error_code": draw(st.none() | st.sampled_from(["nan_loss", "timeout"])),
        "error_message": draw(st.none() | TEXT),
        "epoch": draw(st.integers(0, epochs)),
        "epochs_total": epochs,
        "batch": draw(st.integers(0, steps)),
        "steps_per_epoch": steps,
        "epoch_seconds_estimate": draw(st.none() | st.floats(0.001, 1e5)),
        "cancel_requested_at": draw(st.none() | UTC_TIMES),
        "checkpoint_epoch": draw(st.none() | st.integers(0, epochs)),
        "params_total": params,
        "params_trainable": None if params is None else draw(st.integers(0, params)),
        "params_non_trainable": None if params is None else draw(st.integers(0, 2**20)),
        "versions": draw(st.none() | st.dictionaries(st.sampled_from(["keras", "python"]), TEXT)),
        "warnings": draw(WARNINGS),
        "last_metrics": draw(st.none() | METRICS),
        "test_metrics": draw(st.none() | METRICS),
        "phases": draw(
            st.none() | st.lists(st.fixed_dictionaries({"phase": st.integers(1, 3)}), max_size=2)
        ),
    }


@pytest.fixture(scope="module")
def tenant(backend: Backend) -> Iterator[str]:
    url = backend.settings().resolved_database_url
    name = f"documents-{uuid.uuid4().hex[:8]}"
    with transaction(url) as session:
        create_key(session, name)
    yield name
    with transaction(url) as session:  # other modules count the jobs in the database
        session.execute(delete(Job).where(Job.tenant_id == name))


def without_eta(document: dict[str, Any]) -> tuple[dict[str, Any], float | None]:
    """A running job's ETA is computed at read time; the rest must match exactly. Numbers
    compare as the doubles a JSON client reads (PostgreSQL's jsonb writes 3.6e16 as
    36028797018963970, the same double)."""
    document = json.loads(json.dumps(document), parse_int=float)
    return document, document["progress"].pop("eta_seconds")


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(values=jobs())
def test_listed_document_equals_the_single_read(
    backend: Backend, tenant: str, values: dict[str, Any]
) -> None:
    url = backend.settings().resolved_database_url
    with transaction(url) as session:
        session.execute(delete(Job).where(Job.tenant_id == tenant))
        session.add(Job(tenant_id=tenant, **values))
    with session_factory(url)() as session:
        rows, _ = service.list_jobs(session, tenant, status=None, kind=None, limit=5, cursor=None)
        body = page_json(rows, None)
        single = JobOut.from_row(session.query(Job).filter_by(tenant_id=tenant).one(), listed=True)
    page = JobPage.model_validate_json(body)  # the documented schema holds
    listed, listed_eta = without_eta(json.loads(body)["items"][0])
    expected, expected_eta = without_eta(single.model_dump(mode="json"))
    assert listed == expected
    assert page.items[0] == JobOut.model_validate(json.loads(body)["items"][0])
    if values["status"] == JobStatus.RUNNING and expected_eta is not None:
        assert listed_eta is not None
        assert abs(listed_eta - expected_eta) < 60
    else:
        assert listed_eta == expected_eta


def test_cursor_pages_of_listed_rows_cover_every_job_once(backend: Backend, tenant: str) -> None:
    url = backend.settings().resolved_database_url
    start = datetime(2026, 1, 1, tzinfo=UTC)
    with transaction(url) as session:
        session.execute(delete(Job).where(Job.tenant_id == tenant))
        # Equal timestamps in pairs: the cursor's id tiebreak decides their order.
        for index in range(9):
            session.add(
                Job(
                    tenant_id=tenant,
                    kind="train",
                    spec={},
                    created_at=start + timedelta(microseconds=index // 2),
                )
            )
    seen: list[str] = []
    cursor = None
    with session_factory(url)() as session:
        while True:
            rows, cursor = service.list_jobs(
                session, tenant, status=None, kind=None, limit=2, cursor=cursor
            )
            seen += [item["id"] for item in json.loads(page_json(rows, cursor))["items"]]
            if cursor is None:
                break
    assert len(seen) == len(set(seen)) == 9


def test_eta_comes_from_the_plans_estimate_until_the_job_has_a_pace() -> None:
    started = datetime.now(UTC) - timedelta(seconds=30)
    # Running, no batch done yet (building the model): 4 epochs of the estimated 2.5 s.
    assert _progress(JobStatus.RUNNING, 0, 4, 0, 100, started, 2.5) == (0.0, 10.0)
    assert _progress(JobStatus.RUNNING, 0, 4, 0, 100, started, None) == (0.0, None)
    # Once a quarter is done in ~30 s, the job's own pace: ~90 s left.
    fraction, eta = _progress(JobStatus.RUNNING, 1, 4, 0, 100, started, 2.5)
    assert fraction == 0.25
    assert eta is not None
    assert 89 < eta < 95
    assert _progress(JobStatus.QUEUED, 0, 4, 0, 0, None, 2.5) == (0.0, None)
