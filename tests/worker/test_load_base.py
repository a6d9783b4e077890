"""A transfer job's base is inspected again before Keras loads it: a file stored under
older rules cannot smuggle in what uploads refuse today."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import keras
import pytest

from worker.build.transfer import load_base
from worker.errors import JobError


def _saved(path: Path) -> Path:
    keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")]).save(path)
    return path


@pytest.mark.parametrize("suffix", ["keras", "h5"])
def test_a_clean_base_loads(tmp_path: Path, suffix: str) -> None:
    model = load_base(_saved(tmp_path / f"base.{suffix}"))
    assert [layer.name for layer in model.layers] == ["d"]


def test_a_base_claiming_to_be_netkiln_is_refused(tmp_path: Path) -> None:
    source = _saved(tmp_path / "base.keras")
    with zipfile.ZipFile(source) as original:
        members = {info.filename: original.read(info) for info in original.infolist()}
    config = json.loads(members["config.json"])
    layer = config["config"]["layers"][-1]
    layer.update(module="subprocess", class_name="Popen", registered_name="netkiln>Popen")
    members["config.json"] = json.dumps(config).encode()
    crafted = tmp_path / "crafted.keras"
    with zipfile.ZipFile(crafted, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    with pytest.raises(JobError, match="not one of netkiln's layers") as raised:
        load_base(crafted)
    assert raised.value.code == "invalid_data"
