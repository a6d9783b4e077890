"""The architecture's arrows: the API process never imports TensorFlow or Keras (checked in
a fresh interpreter, since this test session has long imported both), and each package
imports only the layers below it — ``api/`` and ``worker/`` never each other."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = """
import json, sys
import api.app, api.routes.jobs, models.db, models.spec, models.tables
from api.app import create_app
from core.settings import Settings

app = create_app(Settings(data_dir=sys.argv[1]))
assert "/v1/jobs/{job_id}/model" in app.openapi()["paths"]
heavy = sorted(name for name in sys.modules if name.startswith(("tensorflow", "keras")))
print(json.dumps(heavy))
"""


def test_api_and_models_do_not_import_tensorflow_or_keras(tmp_path: Path) -> None:
    root = Path(__file__).parents[1]
    env = {key: value for key, value in os.environ.items() if not key.startswith("NETKILN_")}
    result = subprocess.run(
        [sys.executable, "-c", PROBE, str(tmp_path)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )

    assert result.returncode == 0, result.stderr
    heavy = json.loads(result.stdout.strip().splitlines()[-1])
    assert heavy == [], f"the API imports {heavy[:10]}"


#: Which top-level packages each package may import. The API and the worker meet only in
#: the shared seams (core: settings, storage, queue contract) and models (spec, tables).
ALLOWED_IMPORTS = {
    "models": {"models"},
    "core": {"core", "models"},
    "uploads": {"uploads", "models"},
    "api": {"api", "core", "models", "uploads"},
    "worker": {"worker", "core", "models", "uploads"},
}
OURS = {*ALLOWED_IMPORTS, "netkiln"}


def _imported_packages(path: Path) -> set[str]:
    """Top-level packages of ours that a module imports, lazily inside functions too."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names & OURS


@pytest.mark.parametrize("package", sorted(ALLOWED_IMPORTS))
def test_packages_import_only_their_layers(package: str) -> None:
    root = Path(__file__).parents[1] / package
    breaches = {
        f"{path.relative_to(root.parent)} imports {name}"
        for path in root.rglob("*.py")
        for name in _imported_packages(path) - ALLOWED_IMPORTS[package]
    }
    assert not breaches, sorted(breaches)


def test_every_image_copies_every_package() -> None:
    """The Dockerfile's targets install the project from copied folders: a package left out
    installs fine and fails at the first import (core/ and uploads/ once were)."""
    import re
    import tomllib

    root = Path(__file__).parents[1]
    found = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"][
        "find"
    ]["include"]
    packages = {pattern.rstrip("*") for pattern in found}
    dockerfile = (root / "Dockerfile").read_text()
    stages = {
        name: base
        for base, name in re.findall(r"^FROM (\S+) AS (\S+)$", dockerfile, flags=re.MULTILINE)
    }
    assert set(re.findall(r"^COPY (\w+) \1$", dockerfile, flags=re.MULTILINE)) == packages
    # Every image derives from the stage that copies them.
    assert {target: stages[target] for target in ("api", "worker-cpu", "worker")} == {
        "api": "source",
        "worker-cpu": "source",
        "worker": "source",
    }
