"""Every spec in examples/ (one per code cell of the seed notebook, and more) is accepted,
trains one epoch on tiny data through the real service, and its downloaded models load
in plain Keras: a fresh interpreter that never imports netkiln."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from matplotlib.image import imread

from tests.conftest import Backend, make_backend
from tests.e2e.conftest import Service

pytestmark = pytest.mark.e2e

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.json"))


@pytest.fixture(scope="module")
def backend(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Backend:
    """The examples exercise the spec vocabulary, not storage: the embedded default does."""
    from models.migrate import upgrade

    chosen = make_backend("embedded", tmp_path_factory.mktemp("examples"), request)
    upgrade(chosen.settings().resolved_database_url)
    return chosen


def quick(spec: dict[str, Any]) -> dict[str, Any]:
    """The example as written, shortened to one epoch on the tiny cached dataset."""
    fit = {**spec["fit"], "epochs": 1, "batch_size": 16}
    fit.pop("early_stopping", None)
    return {**spec, "fit": fit, "dataset": {**spec["dataset"], "limit": 64}}


def test_examples_exist_for_the_seed_cells() -> None:
    names = {path.stem for path in EXAMPLES}
    assert {
        "he_initialization",
        "selu_self_normalizing",
        "bn_after_activation",
        "bn_before_activation",
        "gradient_clipping",
        "sgd_momentum",
        "sgd_nesterov",
        "rmsprop",
        "adam",
        "power_scheduling_decay",
        "exponential_scheduling",
        "l2_regularization",
        "dropout",
    } <= names


def test_every_example_trains_and_reloads_in_plain_keras(service: Service, tmp_path: Path) -> None:
    with service.client() as client:
        submitted = {}
        for path in EXAMPLES:
            response = client.post("/v1/jobs", json=quick(json.loads(path.read_text())))
            assert response.status_code == 202, (path.name, response.text)
            submitted[path.stem] = response.json()["id"]

        files = []
        for name, job_id in submitted.items():
            job = service.wait_for(job_id)
            assert job["status"] == "succeeded", (name, job["error"], service.tail())
            assert job["progress"]["epoch"] == 1
            for fmt in ("keras", "h5"):
                target = tmp_path / f"{name}.{fmt}"
                target.write_bytes(client.get(f"/v1/jobs/{job_id}/model?format={fmt}").content)
                files.append((target, job["params"]["total"]))
            if name == "bn_after_activation":
                # The seed's BN example as a picture: loss, accuracy, their val_ twins, LR.
                png = client.get(f"/v1/jobs/{job_id}/curves.png")
                assert png.headers["content-type"] == "image/png"
                image = imread(io.BytesIO(png.content), format="png")
                assert image.shape[:2] == (600, 1000)
                assert image[..., :3].std() > 0.05  # curves and text on the white

    script = (
        "import sys, keras\n"
        "for path, total in zip(sys.argv[1::2], sys.argv[2::2]):\n"
        "    model = keras.models.load_model(path)\n"
        "    assert model.count_params() == int(total), (path, model.count_params(), total)\n"
        "    assert not any(type(l).__module__.startswith('worker') for l in model.layers)\n"
        "print('loaded', len(sys.argv[1::2]))\n"
    )
    args = [str(item) for pair in files for item in pair]
    result = subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"loaded {len(files)}" in result.stdout


SWEEPS = sorted((Path(__file__).parents[2] / "examples" / "sweeps").glob("*.json"))


def test_every_sweep_example_is_planned_and_the_grid_runs(service: Service) -> None:
    """The chapter's comparisons as sweeps: each is accepted as written (its trials listed
    by the dry run), and the activation × initializer grid runs, shortened."""
    counts = {}
    with service.client() as client:
        for path in SWEEPS:
            sweep = json.loads(path.read_text())
            dry = client.post("/v1/jobs", params={"dry_run": "true"}, json=sweep)
            assert dry.status_code == 200, (path.name, dry.text)
            counts[path.stem] = len(dry.json()["trials"])
        assert counts == {
            "activation_x_initializer": 15,
            "learning_rate_schedules": 6,
            "optimizer_x_learning_rate": 27,
        }
        grid = json.loads(
            (EXAMPLES[0].parent / "sweeps" / "activation_x_initializer.json").read_text()
        )
        grid["base"] = quick(grid["base"])
        grid["parallelism"] = 4
        response = client.post("/v1/jobs", json=grid)
        assert response.status_code == 202, response.text
        done = service.wait_for(response.json()["id"])
        assert done["status"] == "succeeded", (done, service.tail())
        table = client.get(f"/v1/jobs/{done['id']}/trials").json()
        assert len(table["trials"]) == 15
        assert all(trial["state"] == "succeeded" for trial in table["trials"])
