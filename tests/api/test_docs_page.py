"""/docs works without internet: every asset the page loads is served by the API."""

from __future__ import annotations

import re
from pathlib import Path

from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings


def test_docs_load_nothing_from_elsewhere(tmp_path: Path) -> None:
    with TestClient(create_app(Settings(data_dir=tmp_path))) as client:
        page = client.get("/docs")
        assert page.status_code == 200
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url: ?['"]([^'"]+)['"]""", page.text)
        loaded = {url for pair in urls for url in pair if url}
        assert loaded, page.text
        assert all(url.startswith("/") for url in loaded), loaded
        for url in loaded:
            response = client.get(url)
            assert response.status_code == 200, url
            assert response.content, url
        assert "/openapi.json" in loaded
        assert client.get("/docs/assets/../../../etc/passwd").status_code == 404
        assert client.get("/docs/assets/index.html").status_code == 404  # a fixed list
