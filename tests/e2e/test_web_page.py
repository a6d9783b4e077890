"""The web page at ``/`` in headless Chromium, served by the real API: a job trained by the
real worker shows up with its status, its detail shows the learning curves and downloads
the model, and a screenshot of it decodes at the viewport's size. Then, with the browser
stubbing the answers, the page's handling of a refused key, a failed job and a job
without epochs.

Chromium is Debian's (``apt-get install chromium``; ``.ci/run`` installs it), driven by
playwright without its own browser download. Where it is missing the tests skip, unless
NETKILN_REQUIRE_SERVICES=1, where they fail."""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlparse

import pytest
from matplotlib.image import imread

from models.spec.examples import DIGITS_SPEC
from tests.conftest import Backend, _unavailable, make_backend
from tests.e2e.conftest import Service

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page, Route, ViewportSize

pytestmark = pytest.mark.e2e

CHROMIUM = Path(os.environ.get("NETKILN_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1280, "height": 800}
WAIT_MS = 60_000  # the page refreshes every 2 s; a bound on a hang, not a pace

#: Markup in the name: the page must show it as text.
NAME = 'web <b>page</b> & "digits"'
TINY_SPEC: dict[str, Any] = {
    **DIGITS_SPEC,
    "name": NAME,
    "fit": {"epochs": 2, "batch_size": 64, "validation_split": 0.1},
}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.is_file():
        _unavailable(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as exc:
        _unavailable(f"playwright is not installed (pip install -e '.[dev]'): {exc}")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture(scope="module")
def backend(
    browser: Browser, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Backend:
    """The page reads the API, not storage: the embedded default serves it. Takes the
    browser first, so that a missing Chromium skips before any process starts."""
    from models.migrate import upgrade

    chosen = make_backend("embedded", tmp_path_factory.mktemp("web"), request)
    upgrade(chosen.settings().resolved_database_url)
    return chosen


def open_page(browser: Browser, url: str, problems: list[str]) -> Page:
    page = browser.new_context(viewport=VIEWPORT, accept_downloads=True).new_page()
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "console",
        lambda message: (
            problems.append(f"console: {message.text}") if message.type == "error" else None
        ),
    )
    page.goto(url)
    return page


def test_page_lists_a_trained_job_with_its_curves(
    browser: Browser, service: Service, tmp_path: Path
) -> None:
    from playwright.sync_api import expect

    with service.client() as client:  # with the service's key, as the page will be
        created = client.post("/v1/jobs", json=TINY_SPEC)
        assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    job = service.wait_for(job_id)
    assert job["status"] == "succeeded", (job, service.tail())

    problems: list[str] = []
    key = service.api_key
    page = open_page(browser, f"{service.base_url}/#key={quote(key)}", problems)
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".badge")).to_have_text("succeeded", timeout=WAIT_MS)
    expect(row.locator("td.name")).to_have_text(NAME)  # as text: no <b> element
    assert row.locator("b").count() == 0
    expect(row.locator("td.id")).to_have_text(job_id[:8])
    expect(row.locator("td.epoch")).to_have_text("2/2")
    expect(row.locator("progress")).to_have_js_property("value", 1)
    expect(row.locator("td.metrics")).to_contain_text("val_accuracy")
    assert "key=" not in page.url  # taken out of the address bar, kept in storage
    assert page.evaluate("localStorage.getItem('netkiln.apiKey')") == key

    row.click()
    expect(page.locator("#d-status")).to_have_text("succeeded")
    page.wait_for_function(
        "() => { const img = document.getElementById('d-curves');"
        " return !img.hidden && img.complete && img.naturalWidth > 0; }",
        timeout=WAIT_MS,
    )
    size = page.locator("#d-curves").evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert size == [1000, 600]  # api.routes.curves draws 1000 × 600
    expect(page.locator("#d-curves-note")).to_have_text("")
    expect(page.locator("#d-facts")).to_contain_text("cpu:0 (tensorflow, float32)")

    # A download goes through fetch (with the key) and a blob, not a bare link.
    artifact = next(item for item in job["artifacts"] if item["format"] == "h5")
    with page.expect_download(timeout=WAIT_MS) as info:
        page.locator('#d-downloads a[data-format="h5"]').click()
    download = info.value
    assert download.suggested_filename.endswith(".h5")
    saved = tmp_path / "model.h5"
    download.save_as(saved)
    assert hashlib.sha256(saved.read_bytes()).hexdigest() == artifact["sha256"]
    expect(page.locator('#d-downloads a[data-format="keras"]')).to_be_visible()

    screenshot = tmp_path / "page.png"
    page.screenshot(path=str(screenshot))
    image = imread(screenshot)
    assert image.shape[:2] == (VIEWPORT["height"], VIEWPORT["width"])
    assert image[..., :3].std() > 0.05  # a page, not a blank
    page.context.close()
    assert not problems, problems  # no script errors, CSP violations or failed loads


def test_page_says_why_a_job_waits(browser: Browser, service: Service) -> None:
    from playwright.sync_api import expect

    spec = {
        **TINY_SPEC,
        "name": "waits-for-h200s",
        "resources": {"accelerator": "gpu", "gpu_type": "h200"},
    }
    with service.client() as client:
        created = client.post("/v1/jobs", json=spec)
        assert created.status_code == 202, created.text
    job_id = created.json()["id"]
    problems: list[str] = []
    page = open_page(browser, f"{service.base_url}/#key={quote(service.api_key)}", problems)
    try:
        page.locator(f'tr[data-job-id="{job_id}"]').click(timeout=WAIT_MS)
        expect(page.locator("#d-facts")).to_contain_text(
            "no_worker_for_resources · #1 in netkiln.gpu.h200.x1", timeout=WAIT_MS
        )
    finally:
        page.context.close()
        with service.client() as client:
            client.post(f"/v1/jobs/{job_id}/cancel")
    # curves.png answers 409 for a job without epochs (the page says so in its note).
    assert not [problem for problem in problems if "409 (Conflict)" not in problem], problems


def test_a_sweep_row_opens_to_its_trials(browser: Browser, service: Service) -> None:
    from playwright.sync_api import expect

    base = {**TINY_SPEC, "name": "paged", "fit": {**TINY_SPEC["fit"], "epochs": 1}}
    sweep = {
        "kind": "sweep",
        "name": "page sweep",
        "base": base,
        "space": {"fit.batch_size": {"type": "choice", "values": [32, 64]}},
    }
    with service.client() as client:
        created = client.post("/v1/jobs", json=sweep)
        assert created.status_code == 202, created.text
    sweep_id = created.json()["id"]
    assert service.wait_for(sweep_id)["status"] == "succeeded", service.tail()
    with service.client() as client:
        table = client.get(f"/v1/jobs/{sweep_id}/trials").json()

    problems: list[str] = []
    page = open_page(browser, f"{service.base_url}/#key={quote(service.api_key)}", problems)
    page.locator(f'tr[data-job-id="{sweep_id}"]').click(timeout=WAIT_MS)
    rows = page.locator("#d-trials tbody tr")
    expect(rows).to_have_count(2, timeout=WAIT_MS)
    expect(page.locator("#d-trials caption")).to_contain_text(f"best #{table['best']}")
    expect(rows.first).to_contain_text("fit.batch_size=")
    page.wait_for_function(
        "() => { const img = document.getElementById('d-curves');"
        " return !img.hidden && img.complete && img.naturalWidth > 0; }",
        timeout=WAIT_MS,
    )
    rows.first.click()  # the best trial's own job
    expect(page.locator("#d-id")).to_have_text(table["trials"][0]["job_id"], timeout=WAIT_MS)
    expect(page.locator("#d-trials")).to_be_hidden()
    page.context.close()
    assert not problems, problems


def test_page_explains_a_refused_key_a_failed_job_and_missing_epochs(
    browser: Browser, service: Service
) -> None:
    """The page's own handling, with /v1 answered by the browser: independent of the
    service's auth and of timing."""
    from playwright.sync_api import expect

    job_id = "0f1e2d3c-4b5a-4978-8695-a4b3c2d1e0f9"
    message = 'loss is NaN <img src=x onerror="window.x=1">'
    failed: dict[str, Any] = {
        "id": job_id,
        "name": None,
        "kind": "train",
        "status": "failed",
        "created_at": "2025-01-02T03:04:05+00:00",
        "started_at": "2025-01-02T03:04:06+00:00",
        "finished_at": "2025-01-02T03:04:07+00:00",
        "attempt": 1,
        "max_attempts": 3,
        "error": {"code": "nan_loss", "message": message},
        "progress": {
            "epoch": 0,
            "epochs": 5,
            "batch": 3,
            "steps_per_epoch": 10,
            "fraction": 0.06,
            "eta_seconds": None,
        },
        "params": {"total": 1234, "trainable": 1234, "non_trainable": 0},
        "last_metrics": None,
        "test_metrics": None,
        "artifacts": [],
    }
    authorizations: list[str | None] = []
    refuse = True

    def answer(route: Route) -> None:
        authorizations.append(route.request.headers.get("authorization"))
        path = urlparse(route.request.url).path
        if refuse:
            route.fulfill(status=401, json={"detail": "unknown API key", "code": "unauthorized"})
        elif path == "/v1/jobs":
            route.fulfill(json={"items": [failed], "next_cursor": None})
        elif path == f"/v1/jobs/{job_id}":
            route.fulfill(json=failed)
        elif path == f"/v1/jobs/{job_id}/curves.png":
            route.fulfill(status=409, body=json.dumps({"detail": "no epoch", "code": "conflict"}))
        else:
            route.fulfill(status=404, json={"detail": path, "code": "not_found"})

    problems: list[str] = []
    page = open_page(browser, "about:blank", problems)
    page.route(re.compile(r"/v1/"), answer)
    page.goto(f"{service.base_url}/#key=wrong%20key")
    expect(page.locator("#notice")).to_contain_text("enter an API key", timeout=WAIT_MS)
    assert set(authorizations) == {"Bearer wrong key"}
    assert page.evaluate("localStorage.getItem('netkiln.apiKey')") == "wrong key"
    assert page.locator("#rows tr").count() == 0

    # Clearing the key: requests go without the header (single-tenant mode).
    refuse = False
    authorizations.clear()
    page.locator("#key").fill("")
    page.locator("#key-form button").click()
    row = page.locator(f'tr[data-job-id="{job_id}"]')
    expect(row.locator(".badge")).to_have_text("failed", timeout=WAIT_MS)
    expect(page.locator("#notice")).to_be_hidden()
    assert set(authorizations) == {None}
    assert page.evaluate("localStorage.getItem('netkiln.apiKey')") is None
    expect(row.locator("td.name")).to_have_text("(unnamed)")
    expect(row.locator("td.epoch")).to_have_text("0/5")
    expect(row.locator("td.metrics")).to_have_text("—")

    row.click()
    expect(page.locator("#d-curves-note")).to_have_text("no epochs yet", timeout=WAIT_MS)
    expect(page.locator("#d-curves")).to_be_hidden()
    expect(page.locator("#d-error-code")).to_have_text("nan_loss")
    expect(page.locator("#d-error-message")).to_have_text(message)
    assert page.locator("#detail img").count() == 1  # the message's <img> stayed text
    assert page.evaluate("window.x") is None
    expect(page.locator("#d-downloads")).to_be_hidden()
    page.context.close()
    assert not [p for p in problems if p.startswith("page error")], problems
