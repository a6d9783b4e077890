"""Datasets: load a split, apply the spec's preprocessing, hand NumPy arrays to ``fit``.

MNIST and Fashion-MNIST are the IDX files Keras's loaders fetch, read through
``keras.utils.get_file`` and its cache (``$KERAS_HOME/datasets``): a file already in the
cache is used as is, a missing one is downloaded from the canonical mirror.
"""

from __future__ import annotations

import gzip
import socket
import uuid
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import keras
import numpy as np
from numpy.typing import NDArray

from core.settings import get_settings
from models.spec import DatasetSpec
from models.spec.data import IDX_FILES, IDX_SOURCES, keras_home
from worker.errors import JobError


@dataclass(frozen=True)
class Dataset:
    x_train: NDArray[np.float32]
    y_train: NDArray[np.generic]  # class ids, or one-hot rows when the spec asks
    x_test: NDArray[np.float32]
    y_test: NDArray[np.generic]
    n_classes: int


@dataclass(frozen=True)
class RawDataset:
    x_train: NDArray[np.generic]
    y_train: NDArray[np.generic]
    x_test: NDArray[np.generic]
    y_test: NDArray[np.generic]
    value_max: float  # the largest value the features can take, for "scale"


def read_idx(path: str | Path) -> NDArray[np.uint8]:
    """An IDX file (optionally gzipped): magic 0x0000 08 <ndim>, big-endian dims, uint8 data."""
    opener = gzip.open if str(path).endswith(".gz") else open
    try:
        with opener(path, "rb") as handle:
            data = handle.read()
    except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
        # A cut-off download, or an error page saved under the .gz name.
        raise JobError("invalid_data", f"{Path(path).name} is damaged: {exc}") from exc
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise JobError("invalid_data", f"{Path(path).name} is not an unsigned-byte IDX file")
    ndim = data[3]
    header_end = 4 + 4 * ndim
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(dims)) if dims else 0
    if len(data) - header_end != expected:
        raise JobError(
            "invalid_data",
            f"{Path(path).name}: header promises {expected} bytes, "
            f"file has {len(data) - header_end}",
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header_end).reshape(dims)


def load_idx_dataset(name: str) -> RawDataset:
    cache_subdir, origin = IDX_SOURCES[name]
    arrays = {
        key: read_idx(_cached_file(name, fname, origin, cache_subdir))
        for key, fname in IDX_FILES.items()
    }
    return RawDataset(**arrays, value_max=255.0)


def _cached_file(name: str, fname: str, origin: str, cache_subdir: str) -> str:
    settings = get_settings()
    if settings.datasets_mirror:
        origin = settings.datasets_mirror.rstrip("/") + "/"
    # Keras downloads with urllib and no time-out: a blocked network would hang the job.
    # The pool process runs one job, so the process-wide default is this download's alone.
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(settings.dataset_download_timeout)
    try:
        path: str = keras.utils.get_file(fname, origin=origin + fname, cache_subdir=cache_subdir)
    except Exception as exc:  # Keras wraps URL and HTTP errors in a bare Exception
        folder = keras_home() / cache_subdir
        raise JobError(
            "dataset_unavailable",
            f"{name} is not in this worker's Keras cache ({folder}) and could not be "
            f"downloaded from {origin} ({exc}); copy its four IDX files "
            f"({', '.join(IDX_FILES.values())}) there (netkiln datasets import {name} DIR), "
            "or let the worker reach the internet or a mirror (NETKILN_DATASETS_MIRROR)",
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
    return path


def load_digits() -> RawDataset:
    """scikit-learn's bundled 8×8 digits (1,797 images, offline), a fixed stratified split."""
    from sklearn.datasets import load_digits as sklearn_digits
    from sklearn.model_selection import train_test_split

    bunch = sklearn_digits()
    x_train, x_test, y_train, y_test = train_test_split(
        bunch.images, bunch.target, test_size=0.2, random_state=0, stratify=bunch.target
    )
    return RawDataset(x_train, y_train, x_test, y_test, value_max=16.0)


LOADERS: dict[str, Callable[[], RawDataset]] = {
    "digits": load_digits,
    "mnist": lambda: load_idx_dataset("mnist"),
    "fashion_mnist": lambda: load_idx_dataset("fashion_mnist"),
}


def load_npz_dataset(path: Path) -> RawDataset:
    """An uploaded dataset, normalized to .npz at upload; never unpickled."""
    with np.load(path, allow_pickle=False) as archive:
        x_train, y_train = archive["x_train"], archive["y_train"]
        x_test = archive["x_test"] if "x_test" in archive else x_train[:0]
        y_test = archive["y_test"] if "y_test" in archive else y_train[:0]
    value_max = float(max(np.abs(x_train).max(initial=0), 1e-12))
    return RawDataset(x_train, y_train, x_test, y_test, value_max=value_max)


UploadResolver = Callable[[uuid.UUID], Path]


def load_dataset(spec: DatasetSpec, resolve_upload: UploadResolver | None = None) -> Dataset:
    if spec.id is not None:
        if resolve_upload is None:
            raise JobError("invalid_data", "uploaded datasets need the upload store")
        raw = load_npz_dataset(resolve_upload(spec.id))
    else:
        assert spec.name is not None
        raw = LOADERS[spec.name]()
    x_train, y_train = _select(spec, raw.x_train, raw.y_train, "train")
    x_test, y_test = _select(spec, raw.x_test, raw.y_test, "test")
    if len(x_train) == 0:
        raise JobError("invalid_data", "the selection leaves no training examples")

    if spec.preprocessing == "scale":
        x_train /= raw.value_max
        x_test /= raw.value_max
    elif spec.preprocessing == "standardize":
        # Statistics from the training split only: the test split must stay unseen.
        mean = x_train.mean(axis=0, keepdims=True)
        std = x_train.std(axis=0, keepdims=True)
        std[std == 0] = 1.0
        x_train = (x_train - mean) / std
        x_test = (x_test - mean) / std
    _check_finite(x_train, "training inputs")
    if spec.unlabeled or y_train.dtype.kind == "f":
        return Dataset(x_train, y_train, x_test, y_test, n_classes=0)
    n_classes = int(max(y_train.max(initial=0), y_test.max(initial=0))) + 1
    if spec.one_hot:
        return Dataset(
            x_train, _one_hot(y_train, n_classes), x_test, _one_hot(y_test, n_classes), n_classes
        )
    return Dataset(x_train, y_train, x_test, y_test, n_classes)


def _select(
    spec: DatasetSpec,
    x: NDArray[np.generic],
    y: NDArray[np.generic],
    split: Literal["train", "test"],
) -> tuple[NDArray[np.float32], NDArray[np.generic]]:
    """Keep classes, relabel, then the first n after a seeded shuffle."""
    kept = spec.kept_classes
    if kept is not None:
        mask = np.isin(y, kept)
        x, y = x[mask], y[mask]
        mapping = np.zeros(int(max(kept)) + 1, dtype=np.int64)
        for original in kept:
            mapping[original] = spec.new_label(original)
        y = mapping[y.astype(np.int64)]
    limit = spec.split_limit(split)
    if limit is not None:
        # One generator per split, so the train selection does not depend on the test one.
        order = np.random.default_rng([spec.seed, 0 if split == "train" else 1]).permutation(len(x))
        x, y = x[order[:limit]], y[order[:limit]]
    labels = y.astype(np.float32) if y.dtype.kind == "f" else y.astype(np.int64)
    return x.astype(np.float32), labels


def _one_hot(labels: NDArray[np.generic], n_classes: int) -> NDArray[np.float32]:
    return np.eye(n_classes, dtype=np.float32)[labels]


def _check_finite(values: NDArray[np.float32], what: str) -> None:
    if not np.isfinite(values).all():
        raise JobError("invalid_data", f"{what} contain NaN or infinite values")
