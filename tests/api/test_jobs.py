"""/v1/jobs in process, on both backends: submit, validation errors, listing, reads.

No worker runs here, so every job stays queued; the broker is inspected directly to see
that an accepted job's id was enqueued and a rejected one's was not.
"""

from __future__ import annotations

import base64
import copy
import json
import math
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from core.queue import JOB_QUEUE, RUN_JOB_TASK
from models.db import transaction
from models.spec import job_spec_adapter
from models.spec.examples import BN_AFTER_ACTIVATION
from models.tables import DEFAULT_TENANT, Job, JobStatus
from tests.conftest import Backend, api_client

SPEC: dict[str, Any] = {
    "name": "tiny-digits",
    "seed": 1,
    "dataset": {"name": "digits", "limit": 64},
    "model": {
        "input_shape": [8, 8],
        "layers": [
            {"type": "Flatten"},
            {"type": "Dropout", "rate": 0.1},
            {"type": "Dense", "units": 8, "activation": "relu"},
            {"type": "Dense", "units": 10, "activation": "softmax"},
        ],
    },
    "compile": {
        "loss": "sparse_categorical_crossentropy",
        "metrics": ["accuracy"],
        "optimizer": {"type": "SGD", "learning_rate": 0.05},
    },
    "fit": {"epochs": 1, "batch_size": 16},
}


@dataclass
class Api:
    client: TestClient
    backend: Backend
    submitted: list[str] = field(default_factory=list)

    @property
    def database_url(self) -> str:
        return str(self.backend.settings().resolved_database_url)

    def submit(self, spec: dict[str, Any] | None = None) -> httpx.Response:
        response = self.client.post("/v1/jobs", json=SPEC if spec is None else spec)
        if response.status_code == 202:
            self.submitted.append(response.json()["id"])
        return response

    def job_ids_in_database(self) -> set[str]:
        """Of tenant ``default``, whose key this client has (other modules leave theirs)."""
        with transaction(self.database_url) as session:
            query = select(Job.id).where(Job.tenant_id == DEFAULT_TENANT)
            return {str(job_id) for job_id in session.scalars(query)}

    def job_count(self) -> int:
        with transaction(self.database_url) as session:
            return int(session.scalar(select(func.count()).select_from(Job)) or 0)

    def enqueued_job_ids(self) -> list[str]:
        """The job ids of the run-job task messages waiting in the broker."""
        if self.backend.broker_url is None:
            folder = self.backend.settings().broker_dir
            payloads = [path.read_bytes() for path in folder.glob(f"*.{JOB_QUEUE}.msg")]
        else:
            import redis

            with redis.Redis.from_url(self.backend.broker_url) as client:
                payloads = client.lrange(JOB_QUEUE, 0, -1)
        return [job_id for payload in payloads for job_id in task_args(payload)]


def task_args(payload: bytes) -> list[str]:
    """The arguments of a run-job task message, as Kombu stores it in either broker."""
    message = json.loads(payload)
    assert message["headers"]["task"] == RUN_JOB_TASK
    args, _kwargs, _embed = json.loads(base64.b64decode(message["body"]))
    return list(args)


@pytest.fixture(scope="module")
def api(backend: Backend) -> Iterator[Api]:
    with api_client(backend.settings()) as client:
        api = Api(client, backend)
        yield api
    # The PostgreSQL database and Redis db outlive this module: leave no queued jobs or
    # messages of ours for the workers of later modules (and touch nobody else's).
    with transaction(api.database_url) as session:
        session.execute(delete(Job).where(Job.id.in_([uuid.UUID(i) for i in api.submitted])))
    if backend.broker_url is not None:
        import redis

        ours = set(api.submitted)
        with redis.Redis.from_url(backend.broker_url) as client:
            for payload in client.lrange(JOB_QUEUE, 0, -1):
                if set(task_args(payload)) <= ours:
                    client.lrem(JOB_QUEUE, 1, payload)


def mutated(change: Callable[[dict[str, Any]], object]) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    change(spec)
    return spec


def set_in(path: tuple[str | int, ...], value: Any) -> Callable[[dict[str, Any]], None]:
    def change(spec: dict[str, Any]) -> None:
        target: Any = spec
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value

    return change


# (id, spec, expected loc, expected error type, text the message must contain)
INVALID: list[tuple[str, dict[str, Any], list[str | int], str, str]] = [
    (
        "negative-epochs",
        mutated(set_in(("fit", "epochs"), -1)),
        ["body", "fit", "epochs"],
        "greater_than",
        "greater than 0",
    ),
    (
        "unknown-layer-type",
        mutated(set_in(("model", "layers", 2), {"type": "Conv9D", "units": 8})),
        ["body", "model", "layers", 2],
        "union_tag_invalid",
        "'Dense'",
    ),
    (
        "unknown-activation",
        mutated(set_in(("model", "layers", 2, "activation"), "swishy")),
        ["body", "model", "layers", 2, "Dense", "activation"],
        "literal_error",
        "'relu'",
    ),
    (
        "unknown-optimizer-type",
        mutated(set_in(("compile", "optimizer"), {"type": "Lion"})),
        ["body", "compile", "optimizer"],
        "union_tag_invalid",
        "'Adam'",
    ),
    (
        "unknown-optimizer-shorthand",
        mutated(set_in(("compile", "optimizer"), "lion")),
        ["body", "compile", "optimizer"],
        "value_error",
        "unknown optimizer 'lion'",
    ),
    (
        "dropout-rate-1",
        mutated(set_in(("model", "layers", 1, "rate"), 1.0)),
        ["body", "model", "layers", 1, "Dropout", "rate"],
        "less_than",
        "less than 1",
    ),
    (
        "dropout-rate-1.5",
        mutated(set_in(("model", "layers", 1, "rate"), 1.5)),
        ["body", "model", "layers", 1, "Dropout", "rate"],
        "less_than",
        "less than 1",
    ),
    (
        "missing-layers",
        mutated(lambda spec: spec["model"].pop("layers")),
        ["body", "model", "layers"],
        "missing",
        "required",
    ),
    (
        "empty-layers",
        mutated(set_in(("model", "layers"), [])),
        ["body", "model", "layers"],
        "too_short",
        "at least 1",
    ),
    (
        "units-not-a-number",
        mutated(set_in(("model", "layers", 2, "units"), "abc")),
        ["body", "model", "layers", 2, "Dense", "units"],
        "int_parsing",
        "integer",
    ),
    (
        "unknown-top-level-field",
        mutated(set_in(("epochs",), 3)),
        ["body", "epochs"],
        "extra_forbidden",
        "not permitted",
    ),
    (
        "unknown-nested-field",
        mutated(set_in(("compile", "optimizer", "lrate"), 0.1)),
        ["body", "compile", "optimizer", "SGD", "lrate"],
        "extra_forbidden",
        "not permitted",
    ),
    (
        "clipnorm-with-global-clipnorm",
        mutated(
            set_in(
                ("compile", "optimizer"), {"type": "SGD", "clipnorm": 1.0, "global_clipnorm": 1.0}
            )
        ),
        ["body", "compile", "optimizer", "SGD"],
        "value_error",
        "at most one of clipnorm and global_clipnorm",
    ),
]


class TestSubmit:
    def test_valid_spec_is_stored_queued_and_enqueued(self, api: Api) -> None:
        response = api.submit()

        assert response.status_code == 202, response.text
        body = response.json()
        assert response.headers["location"] == f"/v1/jobs/{body['id']}"
        assert body["status"] == "queued"
        assert body["name"] == "tiny-digits"
        assert body["progress"] == {
            "epoch": 0,
            "epochs": 1,
            "batch": 0,
            "steps_per_epoch": 0,
            "fraction": 0.0,
            "eta_seconds": None,
        }
        assert body["spec"] == job_spec_adapter.validate_python(SPEC).model_dump(mode="json")
        base = f"/v1/jobs/{body['id']}"
        assert body["links"] == {
            "self": base,
            "metrics": f"{base}/metrics",
            "events": f"{base}/events",
            "logs": f"{base}/logs",
            "cancel": f"{base}/cancel",
        }

        read = api.client.get(response.headers["location"])
        assert read.status_code == 200
        assert read.json()["id"] == body["id"]
        assert read.json()["status"] == "queued"
        assert read.json()["spec"] == body["spec"]
        assert read.json()["artifacts"] == []

        with transaction(api.database_url) as session:
            row = session.get(Job, uuid.UUID(body["id"]))
            assert row is not None
            assert row.status == JobStatus.QUEUED
            assert row.spec == body["spec"]
            assert row.epochs_total == 1
        assert body["id"] in api.enqueued_job_ids()

    def test_keras_2_spellings_are_stored_in_their_normal_form(self, api: Api) -> None:
        spec = mutated(set_in(("compile", "optimizer"), "rmsprop"))
        response = api.submit(spec)
        assert response.status_code == 202, response.text
        assert response.json()["spec"]["compile"]["optimizer"]["type"] == "RMSprop"

        spec = mutated(set_in(("compile", "optimizer"), {"type": "SGD", "lr": 0.2, "decay": 0.5}))
        response = api.submit(spec)
        assert response.status_code == 202, response.text
        optimizer = response.json()["spec"]["compile"]["optimizer"]
        assert optimizer["learning_rate"] == 0.2
        assert optimizer["decay"] == 0.5
        assert "lr" not in optimizer


class TestValidation:
    @pytest.mark.parametrize(
        ("spec", "loc", "error_type", "message"),
        [case[1:] for case in INVALID],
        ids=[case[0] for case in INVALID],
    )
    def test_invalid_spec_is_422_at_the_field_and_nothing_is_stored(
        self, api: Api, spec: dict[str, Any], loc: list[str | int], error_type: str, message: str
    ) -> None:
        jobs_before, enqueued_before = api.job_count(), len(api.enqueued_job_ids())

        response = api.submit(spec)

        assert response.status_code == 422, response.text
        errors = response.json()["detail"]
        matching = [error for error in errors if error["loc"] == loc]
        assert matching, f"no error at {loc}: {errors}"
        assert matching[0]["type"] == error_type
        assert message in matching[0]["msg"]
        assert api.job_count() == jobs_before
        assert len(api.enqueued_job_ids()) == enqueued_before

    def test_a_union_field_reports_the_form_that_was_sent_at_its_own_path(self, api: Api) -> None:
        """learning_rate is a number or a schedule: a number out of range gets one error
        at learning_rate, not pydantic's branch names and the schedule's complaints too."""
        lr = ["body", "compile", "optimizer", "SGD", "learning_rate"]
        too_high = mutated(set_in(("compile", "optimizer", "learning_rate"), 100))
        [error] = api.submit(too_high).json()["detail"]
        assert error["loc"] == lr
        assert error["msg"] == "Input should be less than or equal to 10"
        schedule = {"type": "exponential", "decay_steps": -1}
        bad_schedule = mutated(set_in(("compile", "optimizer", "learning_rate"), schedule))
        errors = api.submit(bad_schedule).json()["detail"]
        assert {tuple(e["loc"]) for e in errors} == {
            (*lr, "exponential", "initial_learning_rate"),
            (*lr, "exponential", "steps"),
            (*lr, "exponential", "decay_steps"),
        }
        assert all("[" not in str(part) for e in errors for part in e["loc"])

    @pytest.mark.parametrize("value", [math.nan, math.inf])
    def test_non_finite_numbers_are_422_not_stored_as_null(self, api: Api, value: float) -> None:
        # Python's JSON parser accepts NaN and Infinity; JSON columns cannot store them.
        spec = mutated(
            set_in(
                ("model", "layers", 2, "kernel_initializer"), {"type": "Constant", "value": value}
            )
        )
        response = api.client.post(
            "/v1/jobs", content=json.dumps(spec), headers={"content-type": "application/json"}
        )
        assert response.status_code == 422, response.text
        initializer = ["body", "model", "layers", 2, "Dense", "kernel_initializer"]
        assert any(
            error["loc"][:6] == initializer
            and error["loc"][-2:] == ["Constant", "value"]
            and error["type"] == "finite_number"
            for error in response.json()["detail"]
        ), response.json()["detail"]

    @pytest.mark.parametrize(
        ("content", "content_type"),
        [
            (b'{"name": "x", ', "application/json"),
            (b"not json at all", "application/json"),
            (b"", "application/json"),
            (json.dumps(SPEC).encode(), "text/plain"),
            (b"<job/>", "application/xml"),
        ],
        ids=["truncated-json", "garbage", "empty", "text-plain", "xml"],
    )
    def test_body_that_is_not_a_json_object_is_4xx_with_json_detail(
        self, api: Api, content: bytes, content_type: str
    ) -> None:
        jobs_before = api.job_count()
        response = api.client.post(
            "/v1/jobs", content=content, headers={"content-type": content_type}
        )
        assert 400 <= response.status_code < 500
        assert response.headers["content-type"] == "application/json"
        assert response.json()["detail"]
        assert api.job_count() == jobs_before


class TestHealth:
    def test_service_stays_healthy_after_bad_requests(self, api: Api) -> None:
        for _, spec, *_ in INVALID:
            assert api.submit(spec).status_code == 422
        api.client.post("/v1/jobs", content=b"{", headers={"content-type": "application/json"})
        api.client.get("/v1/jobs", params={"cursor": "!!"})
        api.client.get("/v1/jobs/not-a-uuid")

        assert api.client.get("/healthz").json() == {"status": "ok"}
        ready = api.client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
        assert api.submit().status_code == 202


def _cursor(*items: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(list(items)).encode()).decode().rstrip("=")


class TestList:
    def test_pages_cover_every_job_once_newest_first(self, api: Api) -> None:
        created = []
        for _ in range(5):
            response = api.submit()
            assert response.status_code == 202
            created.append(response.json()["id"])

        pages: list[list[dict[str, Any]]] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
            response = api.client.get("/v1/jobs", params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            pages.append(page["items"])
            cursor = page["next_cursor"]
            if cursor is None:
                break
            assert len(pages) < 1000, "pagination does not end"

        assert all(len(items) == 2 for items in pages[:-1])
        assert 1 <= len(pages[-1]) <= 2
        listed = [item["id"] for items in pages for item in items]
        assert len(listed) == len(set(listed)), "a job appeared on two pages"
        assert set(listed) == api.job_ids_in_database()
        stamps = [datetime.fromisoformat(item["created_at"]) for items in pages for item in items]
        assert stamps == sorted(stamps, reverse=True)
        assert [job_id for job_id in listed if job_id in created] == created[::-1]

    def test_status_and_kind_filters(self, api: Api) -> None:
        mine = api.submit().json()["id"]

        queued = api.client.get("/v1/jobs", params={"status": "queued", "limit": 200}).json()
        assert queued["items"]
        assert {item["status"] for item in queued["items"]} == {"queued"}
        assert mine in {item["id"] for item in queued["items"]}

        running = api.client.get("/v1/jobs", params={"status": "running", "limit": 200}).json()
        assert {item["status"] for item in running["items"]} <= {"running"}
        assert mine not in {item["id"] for item in running["items"]}

        train = api.client.get("/v1/jobs", params={"kind": "train", "limit": 200}).json()
        assert {item["kind"] for item in train["items"]} == {"train"}
        assert mine in {item["id"] for item in train["items"]}

        other = api.client.get("/v1/jobs", params={"kind": "finetune"}).json()
        assert other == {"items": [], "next_cursor": None}

    @pytest.mark.parametrize(
        "cursor",
        [
            "garbage!!",
            "abc",
            _cursor(1, 2),
            _cursor("2024-01-01T00:00:00+00:00"),
            _cursor("2024-01-01T00:00:00+00:00", 5),
            _cursor("2024-01-01T00:00:00", str(uuid.uuid4())),
            _cursor("yesterday", str(uuid.uuid4())),
            _cursor("0001-01-01T00:00:00+14:00", str(uuid.uuid4())),
            _cursor("9999-12-31T23:59:59-14:00", str(uuid.uuid4())),
        ],
        ids=[
            "symbols",
            "short",
            "numbers",
            "one-item",
            "int-id",
            "naive-time",
            "bad-time",
            "before-year-1-in-utc",
            "past-9999-in-utc",
        ],
    )
    def test_cursor_this_api_did_not_issue_is_400(self, api: Api, cursor: str) -> None:
        response = api.client.get("/v1/jobs", params={"cursor": cursor})
        assert response.status_code == 400, response.text
        assert response.json()["code"] == "bad_cursor"

    @pytest.mark.parametrize(
        "params", [{"status": "sleeping"}, {"limit": 0}, {"limit": 201}], ids=str
    )
    def test_bad_query_parameters_are_422(self, api: Api, params: dict[str, Any]) -> None:
        response = api.client.get("/v1/jobs", params=params)
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", next(iter(params))]


class TestControlCharacters:
    """PostgreSQL cannot store NUL: text with control characters is a 422, not a 500."""

    @pytest.mark.parametrize("name", ["a\x00b", "tab\there", "bell\x07"])
    def test_job_names(self, api: Api, name: str) -> None:
        response = api.submit({**SPEC, "name": name})
        assert response.status_code == 422, response.text
        assert response.json()["detail"][0]["loc"] == ["body", "name"]

    def test_names_with_any_printable_text_are_kept(self, api: Api) -> None:
        response = api.submit({**SPEC, "name": "étude #1 — 5×5 ✓"})
        assert response.status_code == 202, response.text
        assert response.json()["name"] == "étude #1 — 5×5 ✓"

    def test_list_filters(self, api: Api) -> None:
        response = api.client.get("/v1/jobs", params={"kind": "tr\x00ain"})
        assert response.status_code == 422
        assert response.json()["detail"][0]["loc"] == ["query", "kind"]


class TestEventIds:
    def test_event_ids_past_64_bits_are_422_or_mean_nothing_new(self, api: Api) -> None:
        job_id = api.submit().json()["id"]
        huge = 2**63
        for path in ("logs", "events"):
            response = api.client.get(f"/v1/jobs/{job_id}/{path}", params={"after": huge})
            assert response.status_code == 422, response.text
            assert response.json()["detail"][0]["loc"] == ["query", "after"]
        logs = api.client.get(f"/v1/jobs/{job_id}/logs", params={"after": huge - 1})
        assert logs.status_code == 200
        assert logs.json()["lines"] == []
        api.client.post(f"/v1/jobs/{job_id}/cancel")  # the stream below then ends
        with api.client.stream(
            "GET", f"/v1/jobs/{job_id}/events", headers={"Last-Event-ID": str(10**30)}
        ) as stream:
            assert stream.status_code == 200
            assert "data:" not in "".join(stream.iter_text())


class TestRead:
    @pytest.mark.parametrize("suffix", ["", "/metrics", "/model"])
    def test_unknown_job_is_404(self, api: Api, suffix: str) -> None:
        missing = uuid.uuid4()
        response = api.client.get(f"/v1/jobs/{missing}{suffix}")
        assert response.status_code == 404
        assert response.json() == {"detail": f"no job {missing}", "code": "not_found"}

    def test_malformed_id_is_404(self, api: Api) -> None:
        # Job routes match UUIDs only, so /v1/jobs/compare.png never depends on which
        # router was mounted first; anything else names no job.
        response = api.client.get("/v1/jobs/not-a-uuid")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"

    def test_model_of_queued_job_is_409(self, api: Api) -> None:
        job_id = api.submit().json()["id"]
        response = api.client.get(f"/v1/jobs/{job_id}/model")
        assert response.status_code == 409
        assert response.json()["code"] == "conflict"
        assert "queued" in response.json()["detail"]

    def test_metrics_of_queued_job_are_empty(self, api: Api) -> None:
        job_id = api.submit().json()["id"]
        response = api.client.get(f"/v1/jobs/{job_id}/metrics")
        assert response.status_code == 200
        assert response.json() == {"job_id": job_id, "epochs": [], "test": None}


class TestOpenApi:
    def test_submit_documents_the_bn_after_activation_example(self, api: Api) -> None:
        schema = api.client.get("/openapi.json").json()
        body = schema["paths"]["/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]
        assert body["examples"]["bn_after_activation"]["value"] == BN_AFTER_ACTIVATION


class TestDryRun:
    def test_dry_run_summarizes_without_storing_or_queueing(self, api: Api) -> None:
        before_rows, before_messages = api.job_count(), len(api.enqueued_job_ids())
        response = api.client.post("/v1/jobs?dry_run=true", json=BN_AFTER_ACTIVATION)
        assert response.status_code == 200
        body = response.json()
        # The seed notebook's BN net: 784-300-100-10 with BN on the input and after each layer.
        assert body["summary"]["total"] == 271_346
        assert body["summary"]["non_trainable"] == 2_368
        assert body["summary"]["trainable"] == 271_346 - 2_368
        assert [row["output_shape"] for row in body["summary"]["layers"]][:2] == [
            [None, 784],
            [None, 784],
        ]
        assert body["summary"]["memory_estimate_bytes"] > 4 * 271_346
        assert body["spec"]["fit"]["shuffle"] is True  # defaults filled in
        assert api.job_count() == before_rows
        assert len(api.enqueued_job_ids()) == before_messages

    def test_submitted_job_carries_counts_and_warnings(self, api: Api) -> None:
        selu = copy.deepcopy(SPEC)
        selu["model"]["layers"][2] = {"type": "Dense", "units": 8, "activation": "selu"}
        body = api.submit(selu).json()
        assert body["params"] == {
            "total": 64 * 8 + 8 + 8 * 10 + 10,
            "trainable": 610,
            "non_trainable": 0,
        }
        codes = {warning["code"] for warning in body["warnings"]}
        assert codes == {
            "selu_inputs_not_standardized",
            "selu_init_not_lecun_normal",
            "selu_dropout",
        }
        stored = api.client.get(f"/v1/jobs/{body['id']}").json()
        assert stored["warnings"] == body["warnings"]

    def test_shape_that_cannot_be_built_is_422_at_the_layer(self, api: Api) -> None:
        broken = copy.deepcopy(SPEC)
        broken["model"]["layers"].insert(1, {"type": "Reshape", "target_shape": [7, 7]})
        before = api.job_count()
        for query in ("", "?dry_run=true"):
            response = api.client.post(f"/v1/jobs{query}", json=broken)
            assert response.status_code == 422
            [error] = response.json()["detail"]
            assert error["loc"] == ["body", "model", "layers", 1]
            assert "Reshape" in error["msg"]
        assert api.job_count() == before


class TestIdempotency:
    def test_retry_with_the_same_key_returns_the_same_job(self, api: Api) -> None:
        key = f"key-{uuid.uuid4()}"
        first = api.client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": key})
        assert first.status_code == 202
        api.submitted.append(first.json()["id"])
        rows = api.job_count()
        messages = len(api.enqueued_job_ids())
        again = api.client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": key})
        assert again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        assert again.headers["location"] == first.headers["location"]
        assert api.job_count() == rows
        assert len(api.enqueued_job_ids()) == messages  # not enqueued twice

    def test_same_key_with_another_spec_is_409(self, api: Api) -> None:
        key = f"key-{uuid.uuid4()}"
        first = api.client.post("/v1/jobs", json=SPEC, headers={"Idempotency-Key": key})
        api.submitted.append(first.json()["id"])
        other = copy.deepcopy(SPEC)
        other["fit"]["epochs"] = 2
        response = api.client.post("/v1/jobs", json=other, headers={"Idempotency-Key": key})
        assert response.status_code == 409
        assert response.json()["code"] == "idempotency_key_reused"


class TestCancel:
    def test_queued_job_is_cancelled_at_once_and_twice_is_409(self, api: Api) -> None:
        job_id = api.submit().json()["id"]
        response = api.client.post(f"/v1/jobs/{job_id}/cancel")
        assert response.status_code == 202
        body = response.json()
        assert (body["status"], body["cancel_requested"]) == ("cancelled", True)
        assert body["finished_at"] is not None
        again = api.client.post(f"/v1/jobs/{job_id}/cancel")
        assert again.status_code == 409
        assert "cancelled" in again.json()["detail"]

    def test_unknown_job_is_404(self, api: Api) -> None:
        assert api.client.post(f"/v1/jobs/{uuid.uuid4()}/cancel").status_code == 404

    def test_events_of_a_cancelled_job_end_with_its_status(self, api: Api) -> None:
        job_id = api.submit().json()["id"]
        api.client.post(f"/v1/jobs/{job_id}/cancel")
        response = api.client.get(f"/v1/jobs/{job_id}/events")
        assert response.status_code == 200
        statuses = [
            json.loads(line[len("data: ") :])["status"]
            for line in response.text.splitlines()
            if line.startswith("data: ")
        ]
        assert statuses == ["queued", "cancelled"]
        assert api.client.get(f"/v1/jobs/{uuid.uuid4()}/events").status_code == 404
