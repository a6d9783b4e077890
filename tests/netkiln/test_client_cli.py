"""The client commands against a real ``netkiln api`` and ``netkiln worker`` on the
embedded default: submit and follow, a failing job, validate, list, status, logs, download."""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from models.migrate import upgrade
from netkiln.cli import app
from netkiln.harness import free_port, spawn
from tests.conftest import make_backend
from tests.e2e.conftest import Service
from tests.e2e.test_train import DIGITS_SPEC

pytestmark = pytest.mark.e2e

SPEC: dict[str, Any] = {
    **DIGITS_SPEC,
    "name": "cli-digits",
    "fit": {"epochs": 2, "batch_size": 32, "validation_split": 0.1},
}
#: 64·32 + 32, 4·32 (half non-trainable), dropout 0, 32·10 + 10
PARAMS_TOTAL = 2080 + 128 + 330


@pytest.fixture(scope="module")
def service(
    tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest
) -> Iterator[Service]:
    root = tmp_path_factory.mktemp("cli")
    backend = make_backend("embedded", root / "data", request)
    upgrade(backend.settings().resolved_database_url)
    port = free_port()
    env = {
        **os.environ,
        **backend.env,
        "KERAS_HOME": str(root / "keras"),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "PYTHONUNBUFFERED": "1",
        "NETKILN_HEARTBEAT_INTERVAL": "0.5",
    }
    logs = root / "logs"
    logs.mkdir()
    processes = {
        "api": spawn(["api", "--port", str(port)], env, logs / "api.log"),
        "worker": spawn(["worker"], env, logs / "worker.log"),
    }
    svc = Service(backend, f"http://127.0.0.1:{port}", env, logs, processes)
    try:
        svc.wait_ready()
        yield svc
    finally:
        for process in svc.processes.values():
            process.stop()


def netkiln(service: Service, *args: str, env: dict[str, str] | None = None) -> Any:
    base = {"NETKILN_URL": service.base_url, "NETKILN_API_KEY": service.api_key, "COLUMNS": "200"}
    return CliRunner().invoke(app, [*args], env={**base, **(env or {})})


def spec_file(tmp_path: Path, spec: dict[str, Any]) -> Path:
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(spec))
    return path


def test_submit_wait_follows_a_job_to_success(service: Service, tmp_path: Path) -> None:
    result = netkiln(service, "submit", str(spec_file(tmp_path, SPEC)), "--wait")
    assert result.exit_code == 0, (result.output, service.tail())
    job_id = result.output.splitlines()[0].strip()
    assert "epoch 1/2" in result.output
    assert "epoch 2/2" in result.output
    assert "val_loss=" in result.output
    assert f"{job_id} succeeded" in result.output

    listed = netkiln(service, "jobs", "--status", "succeeded")
    assert listed.exit_code == 0
    assert "cli-digits" in listed.output

    shown = netkiln(service, "status", job_id)
    assert shown.exit_code == 0, shown.output
    assert "succeeded" in shown.output
    assert "epoch 2/2" in shown.output
    assert f"{PARAMS_TOTAL:,}" in shown.output

    logged = netkiln(service, "logs", job_id, "--follow")
    assert logged.exit_code == 0
    epochs = [line for line in logged.output.splitlines() if " epoch " in line]
    assert len(epochs) == 2, logged.output  # one line per epoch
    assert "epoch 2/2: " in epochs[1]
    assert "val_loss=" in epochs[1]

    # A unique start of the id does, as `netkiln jobs` may cut ids to fit the terminal.
    short = netkiln(service, "status", job_id[:8], "--json")
    assert short.exit_code == 0, short.output
    assert json.loads(short.output)["id"] == job_id
    as_json = netkiln(service, "jobs", "--json")
    assert job_id in {item["id"] for item in json.loads(as_json.output)}
    unknown = netkiln(service, "status", "fffffffff")
    assert unknown.exit_code == 1
    assert "no job id starts with fffffffff" in unknown.output

    target = tmp_path / "net.h5"
    fetched = netkiln(service, "download", job_id, "--format", "h5", "-o", str(target))
    assert fetched.exit_code == 0, fetched.output
    assert target.read_bytes()[:8] == b"\x89HDF\r\n\x1a\n"

    ended = netkiln(service, "cancel", job_id)
    assert ended.exit_code == 1
    assert "409" in ended.output

    deleted = netkiln(service, "delete", job_id[:8])
    assert deleted.exit_code == 0, deleted.output
    assert f"{job_id} deleted" in deleted.output
    gone = netkiln(service, "status", job_id)
    assert gone.exit_code == 1


def test_submit_wait_exits_1_with_the_reason(service: Service, tmp_path: Path) -> None:
    # Valid against the data (preflight passes it); it cannot end within its time.
    spec = copy.deepcopy(SPEC) | {"name": "cli-out-of-time", "max_runtime": 0.5}
    spec["fit"] = {**spec["fit"], "epochs": 10_000}
    result = netkiln(service, "submit", str(spec_file(tmp_path, spec)), "--wait")
    assert result.exit_code == 1, (result.output, service.tail())
    assert "failed: timeout:" in result.output
    job_id = result.output.splitlines()[0].strip()
    logged = netkiln(service, "logs", job_id)
    assert "failed: timeout:" in logged.output  # the reason is in the job's log too


def test_validate_prints_layers_and_totals(service: Service, tmp_path: Path) -> None:
    result = netkiln(service, "validate", str(spec_file(tmp_path, SPEC)))
    assert result.exit_code == 0, result.output
    assert "BatchNormalization" in result.output
    assert f"total params: {PARAMS_TOTAL:,}" in result.output


def test_validate_an_invalid_spec_exits_1_with_the_field(service: Service, tmp_path: Path) -> None:
    spec = copy.deepcopy(SPEC)
    spec["model"]["layers"][1]["units"] = -1
    result = netkiln(service, "validate", str(spec_file(tmp_path, spec)))
    assert result.exit_code == 1
    assert "error 422" in result.output
    assert "model.layers.1" in result.output


def test_unknown_job_exits_1(service: Service) -> None:
    result = netkiln(service, "status", "00000000-0000-0000-0000-000000000000")
    assert result.exit_code == 1
    assert "404" in result.output


def test_the_key_netkiln_up_saved_is_used_without_key_options(service: Service) -> None:
    from netkiln.admin_cli import ensure_local_key

    settings = service.backend.settings()
    key, new = ensure_local_key(settings)
    assert new
    assert (settings.data_dir / "api-key").stat().st_mode & 0o777 == 0o600
    assert ensure_local_key(settings) == (key, False)  # the next start reuses it
    env = {"NETKILN_API_KEY": "", "NETKILN_DATA_DIR": str(settings.data_dir)}
    result = netkiln(service, "jobs", env=env)
    assert result.exit_code == 0, result.output
    result = netkiln(service, "jobs", env={**env, "NETKILN_DATA_DIR": "/nonexistent"})
    assert result.exit_code == 1
    assert "401" in result.output


def test_a_sweep_validates_as_its_trials_and_waits_with_a_trial_table(
    service: Service, tmp_path: Path
) -> None:
    base = copy.deepcopy(DIGITS_SPEC)
    base["fit"] = {**base["fit"], "epochs": 1}
    sweep = {
        "kind": "sweep",
        "name": "cli-sweep",
        "base": base,
        "space": {"compile.optimizer.momentum": {"type": "choice", "values": [0.0, 0.9]}},
    }
    path = spec_file(tmp_path, sweep)
    planned = netkiln(service, "validate", str(path))
    assert planned.exit_code == 0, planned.output
    assert "compile.optimizer.momentum=0.9" in planned.output
    assert "2 trials, 2 epochs" in planned.output

    waited = netkiln(service, "submit", "--wait", str(path))
    assert waited.exit_code == 0, waited.output
    sweep_id = waited.output.split()[0]
    assert "best #" in waited.output
    listed = netkiln(service, "trials", sweep_id[:8], "--json")
    assert listed.exit_code == 0, listed.output
    table = json.loads(listed.output)
    assert [trial["state"] for trial in table["trials"]] == ["succeeded", "succeeded"]
    assert sorted(trial["params"]["compile.optimizer.momentum"] for trial in table["trials"]) == [
        0.0,
        0.9,
    ]
    shown = netkiln(service, "trials", sweep_id, env={"COLUMNS": "200"})
    assert "compile.optimizer.momentum=0.9" in shown.output
    assert f"{table['best']} *" in shown.output
