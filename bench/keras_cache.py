"""A private Keras cache holding the real Fashion-MNIST, so that both arms of a bench read
the same four IDX files through ``keras.utils.get_file`` and nothing is downloaded.

(The tests write tiny synthetic IDX files instead: ``tests/conftest.py``'s ``keras_home``.)
"""

from __future__ import annotations

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DEFAULT_DATASETS = REPO.parent / "shared" / "datasets"
#: Where Keras's ``fashion_mnist.load_data()`` and netkiln's loader look, under KERAS_HOME.
FASHION_FOLDER = Path("datasets") / "fashion-mnist"
FASHION_FILES = (
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
)


def make_keras_home(root: Path, datasets: Path, *, copy_files: bool) -> Path:
    """``root/keras_home/datasets/fashion-mnist/`` holding the four IDX files of
    ``datasets/fashion-mnist`` (or of ``datasets`` itself), linked or copied."""
    source = datasets / "fashion-mnist" if (datasets / "fashion-mnist").is_dir() else datasets
    missing = [name for name in FASHION_FILES if not (source / name).is_file()]
    if missing:
        raise SystemExit(f"{source} lacks {', '.join(missing)} (pass --datasets DIR)")
    keras_home = root / "keras_home"
    target = keras_home / FASHION_FOLDER
    target.mkdir(parents=True)
    for name in FASHION_FILES:
        if copy_files:
            shutil.copyfile(source / name, target / name)
        else:
            (target / name).symlink_to((source / name).resolve())
    return keras_home
