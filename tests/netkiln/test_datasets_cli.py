"""``netkiln datasets import``: checked files land in $KERAS_HOME; anything else is
refused before a file is copied."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from models.spec.data import IDX_FILES, IDX_SOURCES, cached_here
from netkiln.cli import app
from tests.conftest import write_idx


def _idx_folder(path: Path) -> Path:
    path.mkdir()
    for key, fname in IDX_FILES.items():
        shape = (5, 28, 28) if key.startswith("x") else (5,)
        write_idx(path / fname, np.zeros(shape, np.uint8))
    return path


def test_import_seeds_the_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    assert not cached_here("mnist")
    folder = _idx_folder(tmp_path / "in")
    result = CliRunner().invoke(app, ["datasets", "import", "mnist", str(folder)])
    assert result.exit_code == 0, result.output
    assert cached_here("mnist")
    assert str(tmp_path / "home" / IDX_SOURCES["mnist"][0]) in result.output


@pytest.mark.parametrize("damage", ["missing", "not-gzip", "not-idx"])
def test_import_refuses_what_is_not_the_four_idx_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, damage: str
) -> None:
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "home"))
    folder = _idx_folder(tmp_path / "in")
    victim = folder / IDX_FILES["y_test"]
    if damage == "missing":
        victim.unlink()
    elif damage == "not-gzip":
        victim.write_bytes(b"<html>proxy error</html>")
    else:  # gzipped, but float data (type code 0x0d), not unsigned bytes
        victim.write_bytes(gzip.compress(b"\x00\x00\x0d\x01" + bytes(8)))
    result = CliRunner().invoke(app, ["datasets", "import", "mnist", str(folder)])
    assert result.exit_code != 0
    assert not cached_here("mnist")
