"""The web page's route, in process: ``/`` and its three static files, with no access of
their own to the API (the browser calls /v1 with the visitor's key)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import Settings


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    return TestClient(create_app(Settings(data_dir=tmp_path_factory.mktemp("ui"))))


def test_page_and_assets_are_served_without_a_key(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert "script-src 'self'" in page.headers["content-security-policy"]
    assert 'src="static/netkiln.js"' in page.text
    for name, media_type in (("netkiln.js", "text/javascript"), ("netkiln.css", "text/css")):
        asset = client.get(f"/static/{name}")
        assert asset.status_code == 200
        assert asset.headers["content-type"].startswith(media_type)
    assert client.get("/favicon.ico").status_code == 204


@pytest.mark.parametrize("name", ["index.html", "missing.js", "..%2Fapp.py", "%2E%2E%2Fapp.py"])
def test_only_the_listed_assets(client: TestClient, name: str) -> None:
    assert client.get(f"/static/{name}").status_code == 404


def test_the_page_stays_out_of_the_api_schema(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    assert not {"/", "/static/{name}", "/favicon.ico"} & set(paths)


def test_the_page_inserts_api_text_only_as_text() -> None:
    script = (Path(__file__).parents[2] / "api" / "static" / "netkiln.js").read_text()
    assert "innerHTML" not in script
    assert "insertAdjacentHTML" not in script
    assert "document.write" not in script
