"""``netkiln datasets import NAME DIR``: seed this host's Keras cache with a built-in's
files, for workers that cannot download them (no internet, or a proxy in the way)."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from models.spec.data import IDX_FILES, IDX_SOURCES, keras_home

datasets_app = typer.Typer(help="Built-in datasets on this host.", no_args_is_help=True)


@datasets_app.command("import")
def import_dataset(
    name: Annotated[str, typer.Argument(help=f"One of {', '.join(sorted(IDX_SOURCES))}.")],
    folder: Annotated[
        Path, typer.Argument(help="Holds the four IDX files under their standard names.")
    ],
) -> None:
    """Copy a built-in's IDX files into $KERAS_HOME (where the worker's Keras looks first);
    each is checked to be a gzipped unsigned-byte IDX file, and published with a rename."""
    if name not in IDX_SOURCES:
        raise typer.BadParameter(f"{name!r}: use one of {', '.join(sorted(IDX_SOURCES))}")
    missing = [fname for fname in IDX_FILES.values() if not (folder / fname).is_file()]
    if missing:
        raise typer.BadParameter(f"{folder} lacks {', '.join(missing)}")
    for fname in IDX_FILES.values():
        _check_idx(folder / fname)
    target = keras_home() / IDX_SOURCES[name][0]
    target.mkdir(parents=True, exist_ok=True)
    for fname in IDX_FILES.values():
        handle, staged = tempfile.mkstemp(prefix=f".{fname}.", dir=target)
        os.close(handle)
        shutil.copyfile(folder / fname, staged)
        os.replace(staged, target / fname)
    typer.echo(f"{name}: {len(IDX_FILES)} files in {target}")


def _check_idx(path: Path) -> None:
    try:
        with gzip.open(path, "rb") as handle:
            magic = handle.read(4)
    except (OSError, EOFError) as exc:
        raise typer.BadParameter(f"{path.name} is not gzipped: {exc}") from exc
    if len(magic) != 4 or magic[:3] != b"\x00\x00\x08":
        raise typer.BadParameter(f"{path.name} is not an unsigned-byte IDX file")
