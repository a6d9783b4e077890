"""The API process never imports TensorFlow or Keras: checked in a fresh interpreter, since
this test session has long imported both."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

PROBE = """
import json, sys
import api.app, api.routes.jobs, models.db, models.spec, models.tables
from api.app import create_app
from models.settings import Settings

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
