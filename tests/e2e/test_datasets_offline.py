"""A worker that has no built-in in its Keras cache and cannot download it: the job fails
``dataset_unavailable`` naming the folder and files, ``GET /v1/datasets`` says the
built-in is not available, and once ``netkiln datasets import`` put the files there the
next job trains. No network needed: the download goes to a closed local port."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from models.spec.data import IDX_FILES, IDX_SOURCES
from netkiln.harness import process_env
from tests.conftest import Backend
from tests.e2e.conftest import FAST_RECOVERY, Service

pytestmark = pytest.mark.e2e

SPEC = {
    "name": "offline-fashion",
    "dataset": {"name": "fashion_mnist", "limit": {"train": 100, "test": 20}},
    "model": {
        "input_shape": [28, 28],
        "layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10, "activation": "softmax"}],
    },
    "compile": {"loss": "sparse_categorical_crossentropy", "metrics": ["accuracy"]},
    "fit": {"epochs": 1},
}


@pytest.fixture(scope="module")
def offline(
    backend: Backend, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Service, Path]]:
    empty_home = tmp_path_factory.mktemp("empty_keras_home")
    settings = {
        **backend.env,
        **FAST_RECOVERY,
        "NETKILN_DATASETS_MIRROR": "http://127.0.0.1:9/",  # nothing listens there
    }
    service = Service(
        backend, None, process_env(empty_home, settings), tmp_path_factory.mktemp("logs")
    )
    service.start()
    yield service, empty_home
    service.stop()


def test_unavailable_built_in_fails_typed_until_imported(
    offline: tuple[Service, Path], keras_home: Path
) -> None:
    service, empty_home = offline
    folder = empty_home / IDX_SOURCES["fashion_mnist"][0]
    with service.client() as client:
        listed = {d["name"]: d for d in client.get("/v1/datasets").json()["items"] if d["builtin"]}
        assert listed["fashion_mnist"]["available"] is False
        assert listed["digits"]["available"] is True

        first = service.wait_for(client.post("/v1/jobs", json=SPEC).json()["id"])
        assert first["status"] == "failed", first
        assert first["error"]["code"] == "dataset_unavailable"
        assert str(folder) in first["error"]["message"]
        assert IDX_FILES["x_train"] in first["error"]["message"]
        assert first["attempt"] == 1  # not retried: another try cannot find it either

        # The tests' Keras cache holds tiny Fashion-MNIST files under the standard names.
        source = keras_home / IDX_SOURCES["fashion_mnist"][0]
        imported = subprocess.run(
            [sys.executable, "-m", "netkiln", "datasets", "import", "fashion_mnist", str(source)],
            env=service.env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert imported.returncode == 0, imported.stderr
        assert sorted(path.name for path in folder.iterdir()) == sorted(IDX_FILES.values())
        listed = {d["name"]: d for d in client.get("/v1/datasets").json()["items"] if d["builtin"]}
        assert listed["fashion_mnist"]["available"] is True

        second = service.wait_for(client.post("/v1/jobs", json=SPEC).json()["id"])
        assert second["status"] == "succeeded", (second, service.tail())
