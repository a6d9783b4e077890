"""``netkiln keys`` and ``netkiln tenants`` against a real (embedded) database, checked
through the API they govern."""

from __future__ import annotations

import json
from pathlib import Path

from fastapi.testclient import TestClient
from typer.testing import CliRunner

from api.app import create_app
from core.settings import Settings
from models.migrate import upgrade
from netkiln.cli import app

EXAMPLES = Path(__file__).parents[2] / "examples"


def test_create_list_revoke_and_limits(tmp_path: Path) -> None:
    # Limits and revocations read afresh on each request, not up to the read cache's age.
    settings = Settings(data_dir=tmp_path, read_cache_seconds=0)
    upgrade(settings.resolved_database_url)
    env = {"NETKILN_DATA_DIR": str(tmp_path), "COLUMNS": "200"}
    runner = CliRunner()

    created = runner.invoke(app, ["keys", "create", "--tenant", "acme", "--name", "ci"], env=env)
    assert created.exit_code == 0, created.output
    key = created.output.strip()
    assert key.startswith("nk_")
    assert len(key) > 40

    listed = runner.invoke(app, ["keys", "list"], env=env)
    assert listed.exit_code == 0
    assert key[:11] in listed.output
    assert key not in listed.output  # only the prefix is ever shown

    bad = runner.invoke(app, ["keys", "create", "--tenant", "Not A Slug"], env=env)
    assert bad.exit_code == 2
    assert "tenant" in bad.output

    limits = runner.invoke(app, ["tenants", "limits", "acme", "--max-params", "5"], env=env)
    assert limits.exit_code == 0, limits.output
    assert json.loads(limits.output)["effective"]["max_params"] == 5
    assert "acme" in runner.invoke(app, ["tenants", "list"], env=env).output

    spec = json.loads(
        (Path(__file__).parents[2] / "examples" / "bn_after_activation.json").read_text()
    )
    with TestClient(create_app(settings), headers={"Authorization": f"Bearer {key}"}) as client:
        too_big = client.post("/v1/jobs?dry_run=true", json=spec)
        assert too_big.status_code == 422
        assert too_big.json()["detail"][0]["ctx"]["limit"] == "max_params"
        cleared = runner.invoke(app, ["tenants", "limits", "acme", "--max-params", "0"], env=env)
        assert json.loads(cleared.output)["own"] == {}
        assert client.post("/v1/jobs?dry_run=true", json=spec).status_code == 200

        revoked = runner.invoke(app, ["keys", "revoke", key[:11]], env=env)
        assert revoked.exit_code == 0, revoked.output
        assert "acme" in revoked.output
        assert client.get("/v1/jobs").status_code == 401
    again = runner.invoke(app, ["keys", "revoke", key], env=env)
    assert again.exit_code == 1
