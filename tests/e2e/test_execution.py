"""The execution plan: the worker runs several train steps per round trip when it can, says
so on the job, and the numbers do not change — the same spec and seed with one step per
execution gives the same metrics, to the last bit (float32 on the CPU)."""

from __future__ import annotations

import copy
import time
from pathlib import Path
from typing import Any

import pytest

from models.spec.examples import DIGITS_SPEC
from tests.e2e.conftest import PATIENCE, Service

pytestmark = pytest.mark.e2e


def run(service: Service, name: str, **fit: Any) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": name}
    spec["fit"] = {**spec["fit"], **fit}
    with service.client() as client:
        job_id = client.post("/v1/jobs", json=spec).json()["id"]
        job = service.wait_for(job_id)
        assert job["status"] == "succeeded", (job, service.tail())
        epochs = client.get(f"/v1/jobs/{job_id}/metrics").json()["epochs"]
    return job, [row["values"] for row in epochs]


def test_steps_per_execution_changes_no_number(service: Service) -> None:
    # The running worker measures its speed once its pool process has imported the
    # backend; from then on the dry run estimates an epoch on it.
    deadline = time.monotonic() + PATIENCE
    with service.client() as client:
        while (dry := client.post("/v1/jobs", params={"dry_run": "true"}, json=DIGITS_SPEC).json())[
            "estimate"
        ] is None:
            assert time.monotonic() < deadline, service.tail()
            time.sleep(0.2)
    assert dry["estimate"]["epoch_seconds"] > 0
    assert dry["estimate"]["worker"].endswith(str(service.processes["worker"].pid))
    planned, planned_epochs = run(service, "spe-auto")
    single, single_epochs = run(service, "spe-1", steps_per_execution=1)

    [plan] = planned["execution"]
    assert plan["steps_per_execution"] > 1
    assert "GFLOP/s measured" in plan["reason"]
    assert plan["backend"] == "tensorflow"
    assert (plan["precision"], plan["jit_compile"]) == ("float32", False)  # Keras's CPU "auto"
    assert plan["device_gflops"] > 0
    assert plan["devices"] == ["cpu:0"]
    assert "Keras's array adapter" in plan["input_pipeline"]
    assert planned["progress"]["eta_seconds"] is None  # succeeded: nothing left
    assert single["execution"][0]["steps_per_execution"] == 1
    assert single["execution"][0]["reason"] == "fit.steps_per_execution in the spec"

    assert planned_epochs == single_epochs  # every loss, accuracy and rate, exactly
    assert planned["test_metrics"] == single["test_metrics"]


def test_a_per_step_schedule_keeps_one_step_per_execution(service: Service) -> None:
    spec_fit: dict[str, Any] = {"epochs": 2}
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "one-cycle"}
    spec["fit"] = {**spec["fit"], **spec_fit}
    spec["compile"]["optimizer"]["learning_rate"] = {"type": "one_cycle", "max_learning_rate": 0.1}
    with service.client() as client:
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        job = service.wait_for(response.json()["id"])
    assert job["status"] == "succeeded", (job, service.tail())
    [plan] = job["execution"]
    assert plan["steps_per_execution"] == 1
    assert "per step" in plan["reason"]


def test_mixed_precision_and_xla_are_opt_in_said_so_and_recorded(
    service: Service, tmp_path: Path
) -> None:
    spec = copy.deepcopy(DIGITS_SPEC) | {"name": "bf16-xla"}
    spec["fit"] = {**spec["fit"], "epochs": 2, "precision": "mixed_bfloat16", "jit_compile": True}
    with service.client() as client:
        dry = client.post("/v1/jobs", params={"dry_run": "true"}, json=spec).json()
        flagged = {tuple(w["loc"]) for w in dry["warnings"] if w["code"] == "changes_numerics"}
        assert flagged == {("fit", "precision"), ("fit", "jit_compile")}
        response = client.post("/v1/jobs", json=spec)
        assert response.status_code == 202, response.text
        job = service.wait_for(response.json()["id"])
        default = client.post("/v1/jobs", params={"dry_run": "true"}, json=DIGITS_SPEC).json()
        assert job["status"] == "succeeded", (job, service.tail())
        for fmt in ("keras", "h5"):
            download = client.get(f"/v1/jobs/{job['id']}/model", params={"format": fmt})
            assert download.status_code == 200
            (tmp_path / f"model.{fmt}").write_bytes(download.content)
    [plan] = job["execution"]
    assert (plan["precision"], plan["jit_compile"]) == ("mixed_bfloat16", True)
    assert all(value == value for value in job["test_metrics"].values())  # no NaN
    assert not [w for w in default["warnings"] if w["code"] == "changes_numerics"]

    # Trained in bfloat16, exported for plain Keras in float32, like any model a user builds.
    import keras
    import numpy as np

    for fmt in ("keras", "h5"):
        model = keras.models.load_model(tmp_path / f"model.{fmt}")
        assert {layer.dtype_policy.name for layer in model.layers} == {"float32"}, fmt
        assert {weight.dtype for weight in model.weights} == {"float32"}, fmt
        output = model.predict(np.ones((2, 8, 8), "float32"), verbose=0)
        assert output.dtype == np.float32
        np.testing.assert_allclose(output.sum(axis=1), 1.0, rtol=1e-5)
