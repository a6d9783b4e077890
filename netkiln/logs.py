"""Logging for every netkiln process: one JSON object per line (``NETKILN_LOG_FORMAT=json``,
for log collectors) or plain lines for humans. Passwords in URLs never reach the output."""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import IO, Any, Literal

LogFormat = Literal["text", "json"]

#: user:secret@host → user:***@host, in any scheme://… URL inside a log line.
_URL_PASSWORD = re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.\-]*://[^\s/:@]*:)[^\s/@]+@")

#: Attributes every LogRecord has; anything else on a record came in through ``extra=``
#: (uvicorn's ``color_message`` is the message again, with terminal colours).
_NOT_EXTRAS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", "color_message"}

#: Loggers that ship their own handlers; they propagate to the root handler instead.
FRAMEWORK_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.access", "celery", "alembic")
#: Chatter at INFO that says nothing about netkiln (a line per Alembic plugin).
_QUIET_LOGGERS = ("alembic.runtime.plugins",)


def redact(text: str) -> str:
    return _URL_PASSWORD.sub(r"\g<head>***@", text)


class TextFormatter(logging.Formatter):
    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """``time`` (ISO 8601, UTC), ``level``, ``logger``, ``message``, then the record's extras
    (``log.info(..., extra={"job_id": ...})``) and ``exception`` / ``stack`` as text."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _NOT_EXTRAS and key not in entry:
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # Redacted as a whole, so URLs nested in extras are caught too.
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


def configure_logging(level: str, fmt: LogFormat, stream: IO[str] | None = None) -> None:
    """One handler on the root logger, on stderr; framework loggers propagate to it."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    for name in FRAMEWORK_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.setLevel(logging.NOTSET)
        logger.propagate = True
    for name in _QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(root.level, logging.WARNING))
    logging.captureWarnings(True)
