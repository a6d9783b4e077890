"""/readyz on a database the API cannot use (on one it can: tests/api/test_jobs.py), and
what any route answers when it breaks: a 500 in the shape of the other errors, with its
traceback in the log (the issue: ``POST /v1/jobs`` on a database no one migrated answered
a bare text 500, logged nothing, and /readyz said ready)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from sqlalchemy.exc import DBAPIError

from api.app import create_app
from core.settings import Settings
from tests.api.test_jobs import SPEC
from tests.models.test_migrate import (
    move_ahead,
    unmigrated_url_fixture,  # noqa: F401 - the fixture ``unmigrated_url``
)


def unmigrated_client(database_url: str, data_dir: Path) -> TestClient:
    settings = Settings(data_dir=data_dir, database_url=database_url, auth="none")
    # As a server would: the error is answered, not raised into the test.
    return TestClient(create_app(settings), raise_server_exceptions=False)


class TestUnmigratedDatabase:
    def test_not_ready_and_says_what_to_run(self, unmigrated_url: str, tmp_path: Path) -> None:
        with unmigrated_client(unmigrated_url, tmp_path) as client:
            response = client.get("/readyz")

        assert response.status_code == 503
        body = response.json()
        assert body["status"] == "not ready"
        assert "never migrated; run 'netkiln db upgrade'" in body["checks"]["database"]

    def test_not_ready_when_a_newer_netkiln_migrated_it(
        self, unmigrated_url: str, tmp_path: Path
    ) -> None:
        move_ahead(unmigrated_url)

        with unmigrated_client(unmigrated_url, tmp_path) as client:
            response = client.get("/readyz")

        assert response.status_code == 503
        assert "newer netkiln" in response.json()["checks"]["database"]

    def test_a_failing_route_answers_json_500_and_logs_the_traceback(
        self, unmigrated_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        with unmigrated_client(unmigrated_url, tmp_path) as client:
            response = client.post("/v1/jobs", json=SPEC)

        assert response.status_code == 500
        assert response.headers["content-type"] == "application/json"
        assert response.json()["code"] == "internal"
        assert "log" in response.json()["detail"]
        [record] = [r for r in caplog.records if r.name == "api.errors"]
        assert record.levelno == logging.ERROR
        assert record.getMessage() == "unhandled error in POST /v1/jobs"
        assert record.exc_info is not None
        assert isinstance(record.exc_info[1], DBAPIError)  # the missing table
        assert "Traceback" in caplog.text

    def test_the_server_does_not_log_it_twice(
        self, unmigrated_url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
    ) -> None:
        """Starlette re-raises after the answer; uvicorn would log the traceback again."""
        with unmigrated_client(unmigrated_url, tmp_path) as client:
            client.post("/v1/jobs", json=SPEC)
        [logged] = [r.exc_info[1] for r in caplog.records if r.name == "api.errors" and r.exc_info]
        server_log = logging.getLogger("uvicorn.error")
        caplog.clear()

        server_log.error("Exception in ASGI application\n", exc_info=logged)
        server_log.error("Exception in ASGI application\n", exc_info=RuntimeError("other"))

        [kept] = caplog.records
        assert kept.exc_info is not None
        assert str(kept.exc_info[1]) == "other"
