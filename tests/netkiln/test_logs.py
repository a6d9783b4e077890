"""Log formats: JSON lines with the fields collectors index on, and no password ever."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest

from netkiln.logs import FRAMEWORK_LOGGERS, JsonFormatter, TextFormatter, configure_logging, redact

SECRET_URL = "postgresql+psycopg://netkiln:s3cret@db:5432/netkiln"


def record(message: str, *args: object, **extra: object) -> logging.LogRecord:
    made = logging.LogRecord("worker.runner", logging.WARNING, __file__, 1, message, args, None)
    made.__dict__.update(extra)
    return made


def json_line(made: logging.LogRecord) -> dict[str, object]:
    line = JsonFormatter().format(made)
    assert "\n" not in line
    parsed: dict[str, object] = json.loads(line)
    return parsed


class TestJsonFormatter:
    def test_fields_and_extras(self) -> None:
        job_id = uuid.uuid4()
        entry = json_line(record("job %s: attempt %d started", job_id, 2, job_id=job_id))

        assert set(entry) == {"time", "level", "logger", "message", "job_id"}
        assert entry["level"] == "WARNING"
        assert entry["logger"] == "worker.runner"
        assert entry["message"] == f"job {job_id}: attempt 2 started"
        assert entry["job_id"] == str(job_id)
        assert isinstance(entry["time"], str)
        assert entry["time"].endswith("Z")
        assert datetime.fromisoformat(entry["time"]).utcoffset() == timedelta(0)

    def test_exception_as_text(self) -> None:
        try:
            raise ValueError("boom")
        except ValueError:
            made = record("failed")
            made.exc_info = sys.exc_info()
        entry = json_line(made)

        assert isinstance(entry["exception"], str)
        assert entry["exception"].startswith("Traceback (most recent call last)")
        assert entry["exception"].rstrip().endswith("ValueError: boom")


class TestRedaction:
    @pytest.mark.parametrize(
        ("text", "expected"),
        [
            (SECRET_URL, "postgresql+psycopg://netkiln:***@db:5432/netkiln"),
            ("broker redis://:pw@redis:6379/0 up", "broker redis://:***@redis:6379/0 up"),
            ("redis://redis:6379/0", "redis://redis:6379/0"),
            ("postgresql://netkiln@db/netkiln", "postgresql://netkiln@db/netkiln"),
            ("mail me: a@b.c", "mail me: a@b.c"),
        ],
    )
    def test_redact(self, text: str, expected: str) -> None:
        assert redact(text) == expected

    def test_json_message_extras_nested_extras_and_exception(self) -> None:
        try:
            raise ConnectionError(f"cannot reach {SECRET_URL}")
        except ConnectionError:
            made = record("database %s", SECRET_URL, url=SECRET_URL, data={"urls": [SECRET_URL]})
            made.exc_info = sys.exc_info()
        line = JsonFormatter().format(made)

        assert "s3cret" not in line
        assert line.count("netkiln:***@db") == 4
        assert json.loads(line)["data"] == {"urls": [redact(SECRET_URL)]}

    def test_text(self) -> None:
        line = TextFormatter().format(record("database %s", SECRET_URL))
        assert "s3cret" not in line
        assert line.endswith("WARNING worker.runner: database " + redact(SECRET_URL))


@pytest.fixture
def restored_logging() -> Iterator[None]:
    """configure_logging changes process-wide state; put it back for the other tests."""
    loggers = [logging.getLogger(), *map(logging.getLogger, FRAMEWORK_LOGGERS)]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    yield
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate


@pytest.mark.usefixtures("restored_logging")
class TestConfigureLogging:
    def test_json_for_our_loggers_and_the_frameworks(self) -> None:
        logging.getLogger("uvicorn.error").addHandler(logging.NullHandler())
        stream = io.StringIO()
        configure_logging("info", "json", stream)

        logging.getLogger("api.routes.jobs").info("submitted", extra={"job_id": "j1"})
        logging.getLogger("uvicorn.error").info("Application startup complete.")
        logging.getLogger("celery.worker").debug("below the level")

        entries = [json.loads(line) for line in stream.getvalue().splitlines()]
        assert [(e["logger"], e["message"]) for e in entries] == [
            ("api.routes.jobs", "submitted"),
            ("uvicorn.error", "Application startup complete."),
        ]
        assert entries[0]["job_id"] == "j1"
        assert logging.getLogger("uvicorn.error").handlers == []

    def test_text(self) -> None:
        stream = io.StringIO()
        configure_logging("WARNING", "text", stream)
        logging.getLogger("worker").warning("hello %s", "there")
        assert stream.getvalue().rstrip().endswith("WARNING worker: hello there")
