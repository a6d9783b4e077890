"""A small HTTP client of the netkiln API (httpx), used by the ``netkiln`` CLI commands."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(Exception):
    """A non-2xx answer: its status and the JSON ``detail`` (or the body's text)."""

    def __init__(self, status_code: int, detail: Any) -> None:
        super().__init__(f"HTTP {status_code}: {format_detail(detail)}")
        self.status_code = status_code
        self.detail = detail


def format_detail(detail: Any) -> str:
    """FastAPI's 422 list as one line per field (``model.layers.0.units: …``), else text."""
    if isinstance(detail, list):
        lines = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(part) for part in item.get("loc", []) if part != "body")
                lines.append(f"{loc}: {item.get('msg', item)}" if loc else str(item.get("msg")))
            else:
                lines.append(str(item))
        return "\n".join(lines)
    return str(detail)


def parse_sse(lines: Iterable[str]) -> Iterator[dict[str, Any]]:
    """Server-sent events from a text/event-stream, as {"id", "event", "data"} dicts."""
    event: dict[str, Any] = {}
    for line in lines:
        if not line:
            if "data" in event:
                event["data"] = json.loads(event["data"])
                yield event
            event = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            event[field] = value[1:] if value.startswith(" ") else value


class Client:
    def __init__(
        self, url: str | None = None, key: str | None = None, timeout: float = 30.0
    ) -> None:
        url = url or os.environ.get("NETKILN_URL") or DEFAULT_URL
        key = key or os.environ.get("NETKILN_API_KEY")
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        self.http = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=timeout)

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *_: object) -> None:
        self.http.close()

    def _json(self, response: httpx.Response) -> Any:
        if response.is_error:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(response.status_code, detail)
        return response.json()

    def submit(self, spec: dict[str, Any], dry_run: bool = False) -> dict[str, Any]:
        params = {"dry_run": "true"} if dry_run else {}
        result: dict[str, Any] = self._json(self.http.post("/v1/jobs", json=spec, params=params))
        return result

    def job(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.get(f"/v1/jobs/{job_id}"))
        return result

    def trials(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.get(f"/v1/jobs/{job_id}/trials"))
        return result

    def resolve(self, job_id: str) -> str:
        """A whole job id for ``job_id`` or a unique prefix of one of the caller's jobs
        (as ``netkiln jobs`` prints them); ``ApiError`` 404 or 409 otherwise."""
        try:
            return str(uuid.UUID(job_id))
        except ValueError:
            pass
        prefix = job_id.lower()
        if not prefix or any(char not in "0123456789abcdef-" for char in prefix):
            raise ApiError(404, f"{job_id!r} is not a job id or the start of one")
        found: list[str] = []
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"limit": 200} | ({"cursor": cursor} if cursor else {})
            page = self._json(self.http.get("/v1/jobs", params=params))
            found += [item["id"] for item in page["items"] if item["id"].startswith(prefix)]
            cursor = page["next_cursor"]
            if cursor is None or len(found) > 1:
                break
        if not found:
            raise ApiError(404, f"no job id starts with {job_id}")
        if len(found) > 1:
            raise ApiError(409, f"{job_id} starts several job ids ({', '.join(found[:3])}, …)")
        return found[0]

    def jobs(self, status: str | None = None, limit: int = 50) -> list[dict[str, Any]]:
        params: dict[str, Any] = {"limit": limit} | ({"status": status} if status else {})
        items: list[dict[str, Any]] = self._json(self.http.get("/v1/jobs", params=params))["items"]
        return items

    def logs(self, job_id: str, after: int = 0) -> dict[str, Any]:
        page: dict[str, Any] = self._json(
            self.http.get(f"/v1/jobs/{job_id}/logs", params={"after": after})
        )
        return page

    def delete(self, job_id: str) -> None:
        response = self.http.delete(f"/v1/jobs/{job_id}")
        if response.is_error:
            self._json(response)

    def cancel(self, job_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._json(self.http.post(f"/v1/jobs/{job_id}/cancel"))
        return result

    def events(self, job_id: str, after: int = 0) -> Iterator[dict[str, Any]]:
        """The job's events until its stream ends (the job ended)."""
        params = {"after": after} if after else {}
        timeout = httpx.Timeout(30.0, read=None)
        with self.http.stream(
            "GET", f"/v1/jobs/{job_id}/events", params=params, timeout=timeout
        ) as response:
            if response.is_error:
                response.read()
                self._json(response)
            yield from parse_sse(response.iter_lines())

    def download(self, job_id: str, fmt: str, path: Path | None) -> Path:
        """Stream the model to ``path`` (default: the server's file name in the cwd)."""
        with self.http.stream(
            "GET", f"/v1/jobs/{job_id}/model", params={"format": fmt}
        ) as response:
            if response.is_error:
                response.read()
                self._json(response)
            if path is None:
                path = Path(_attachment_name(response) or f"{job_id}.{fmt}")
            with path.open("wb") as handle:
                for chunk in response.iter_bytes():
                    handle.write(chunk)
        return path


def _attachment_name(response: httpx.Response) -> str:
    """The bare file name of ``Content-Disposition: attachment; filename="…"``, if any."""
    disposition = response.headers.get("content-disposition", "")
    _, _, value = disposition.partition('filename="')
    return Path(value.split('"', 1)[0]).name
