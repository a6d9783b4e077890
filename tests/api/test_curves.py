"""/v1/jobs/{id}/curves.png and /v1/jobs/compare.png in process, on both backends: rows are
written through the ORM as a worker would, the PNGs are decoded and measured."""

from __future__ import annotations

import io
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient
from matplotlib.image import imread
from sqlalchemy import delete

from api.routes.curves import draw_curves
from models.db import transaction
from models.tables import EpochMetrics, Job, JobStatus
from tests.conftest import Backend, api_client

#: FIGSIZE × DPI of api.routes.curves: (height, width) of every PNG.
PIXELS = (600, 1000)


class Jobs:
    def __init__(self, client: TestClient, database_url: str) -> None:
        self.client = client
        self.database_url = database_url
        self.ids: list[uuid.UUID] = []

    def add(self, name: str, rows: list[dict[str, Any]], status: JobStatus) -> str:
        job_id = uuid.uuid4()
        with transaction(self.database_url) as session:
            session.add(
                Job(id=job_id, name=name, kind="train", status=status, spec={}, epochs_total=3)
            )
            session.flush()
            for epoch, values in enumerate(rows, start=1):
                session.add(EpochMetrics(job_id=job_id, epoch=epoch, values=values, seconds=0.5))
        self.ids.append(job_id)
        return str(job_id)


@pytest.fixture(scope="module")
def jobs(backend: Backend) -> Iterator[Jobs]:
    database_url = str(backend.settings().resolved_database_url)
    with api_client(backend.settings()) as client:
        jobs = Jobs(client, database_url)
        yield jobs
    with transaction(database_url) as session:
        session.execute(delete(Job).where(Job.id.in_(jobs.ids)))


def epochs(lrs: list[float], val: bool = True) -> list[dict[str, Any]]:
    rows = []
    for index, lr in enumerate(lrs):
        row = {"loss": 2.0 / (index + 1), "accuracy": 0.5 + 0.1 * index, "learning_rate": lr}
        if val:
            row |= {"val_loss": 2.2 / (index + 1), "val_accuracy": 0.45 + 0.1 * index}
        rows.append(row)
    return rows


def decoded(response: Any) -> np.ndarray:
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "image/png"
    image: np.ndarray = imread(io.BytesIO(response.content), format="png")
    return image


class TestCurves:
    @pytest.mark.parametrize("lrs", [[0.01, 0.01, 0.01], [0.1, 0.01, 0.001]])
    def test_png_of_the_epochs(self, jobs: Jobs, lrs: list[float]) -> None:
        job_id = jobs.add("curvy", epochs(lrs), JobStatus.SUCCEEDED)
        image = decoded(jobs.client.get(f"/v1/jobs/{job_id}/curves.png"))
        assert image.shape[:2] == PIXELS
        assert image[..., :3].std() > 0.05  # something is drawn on the white

    def test_running_job_without_validation(self, jobs: Jobs) -> None:
        job_id = jobs.add("no-val", epochs([0.01], val=False), JobStatus.RUNNING)
        assert decoded(jobs.client.get(f"/v1/jobs/{job_id}/curves.png")).shape[:2] == PIXELS

    def test_unknown_job_is_404(self, jobs: Jobs) -> None:
        response = jobs.client.get(f"/v1/jobs/{uuid.uuid4()}/curves.png")
        assert response.status_code == 404
        assert response.json()["code"] == "not_found"

    def test_job_without_epochs_is_409(self, jobs: Jobs) -> None:
        job_id = jobs.add("fresh", [], JobStatus.QUEUED)
        response = jobs.client.get(f"/v1/jobs/{job_id}/curves.png")
        assert response.status_code == 409
        assert "no finished epoch" in response.json()["detail"]


class TestCompare:
    def test_two_jobs_overlaid(self, jobs: Jobs) -> None:
        first = jobs.add("sgd", epochs([0.01] * 3), JobStatus.SUCCEEDED)
        second = jobs.add("adam", epochs([0.001] * 2, val=False), JobStatus.SUCCEEDED)
        for params in ({"ids": f"{first},{second}"}, {"ids": first, "metric": "val_accuracy"}):
            image = decoded(jobs.client.get("/v1/jobs/compare.png", params=params))
            assert image.shape[:2] == PIXELS

    def test_is_not_read_as_a_job_id(self, jobs: Jobs) -> None:
        assert jobs.client.get("/v1/jobs/compare.png").status_code == 422  # ids is required

    def test_unknown_job_is_404(self, jobs: Jobs) -> None:
        first = jobs.add("known", epochs([0.01]), JobStatus.SUCCEEDED)
        response = jobs.client.get(
            "/v1/jobs/compare.png", params={"ids": f"{first},{uuid.uuid4()}"}
        )
        assert response.status_code == 404

    def test_malformed_ids_are_400(self, jobs: Jobs) -> None:
        response = jobs.client.get("/v1/jobs/compare.png", params={"ids": "nope"})
        assert response.status_code == 400

    def test_names_that_look_like_tex_are_drawn_as_written(self, jobs: Jobs) -> None:
        names = [r"a $\foo{$", "$x$ and $", "$$", r"\$ $"]
        ids = [jobs.add(name, epochs([0.01] * 2), JobStatus.SUCCEEDED) for name in names]
        for job_id in ids:
            assert decoded(jobs.client.get(f"/v1/jobs/{job_id}/curves.png")).shape[:2] == PIXELS
        image = decoded(
            jobs.client.get(
                "/v1/jobs/compare.png", params={"ids": ",".join(ids), "metric": r"$\bad{$"}
            )
        )
        assert image.shape[:2] == PIXELS

    def test_no_epochs_at_all_is_409(self, jobs: Jobs) -> None:
        job_id = jobs.add("empty", [], JobStatus.QUEUED)
        response = jobs.client.get("/v1/jobs/compare.png", params={"ids": job_id})
        assert response.status_code == 409


LAYOUT_ROWS = ((1, {"loss": 1.0, "val_loss": 1.2}), (2, {"loss": 0.5, "val_loss": 0.7}))


class TestLayout:
    """The legend hides no line; the learning-rate axis is there only when the rate moved."""

    def test_constant_rate_is_in_the_title_not_on_an_axis(self) -> None:
        rows = [(epoch, {**values, "learning_rate": 0.01}) for epoch, values in LAYOUT_ROWS]
        figure = draw_curves("job", rows)
        [axes] = figure.axes
        assert "learning rate 0.01" in axes.get_title()
        assert axes.get_legend() is None  # outside the axes, on the figure
        assert len(figure.legends) == 1

    def test_changing_rate_gets_its_axis(self) -> None:
        rates = [0.1, 0.01]
        pairs = zip(LAYOUT_ROWS, rates, strict=True)
        rows = [(e, {**v, "learning_rate": r}) for (e, v), r in pairs]
        figure = draw_curves("job", rows)
        assert len(figure.axes) == 2
        assert figure.axes[1].get_yscale() == "log"
        labels = [text.get_text() for text in figure.legends[0].get_texts()]
        assert labels == ["loss", "val_loss", "learning_rate"]
