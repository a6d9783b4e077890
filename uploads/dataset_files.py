"""Check an uploaded dataset and write it as the .npz the worker reads, without unpickling
anything.

The stored file holds ``x_train`` and ``y_train``, and optionally ``x_test`` and ``y_test``:
x numeric with the example axis first; y integer class ids (1-D, non-negative) or floats
(regression targets, one-hot rows). An ``.npz`` upload must hold exactly those arrays; a
``.csv`` upload is a header row naming its columns, a label column, and numeric features,
split into train and test by a seeded shuffle when asked.
"""

from __future__ import annotations

import csv
import io
import warnings
import zipfile
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from pydantic import BaseModel, Field

from uploads.archives import ARCHIVE_ERRORS, InvalidUpload, open_archive

DatasetFormat = Literal["npz", "csv"]
Arrays = dict[str, NDArray[Any]]

ARRAY_NAMES = ("x_train", "y_train", "x_test", "y_test")
MAX_CLASSES = 10_000
#: Examples first, then at most 4 axes (the spec's input_shape); labels: ids or one-hot rows.
MAX_X_RANK = 5
MAX_Y_RANK = 2
MAX_CSV_COLUMNS = 10_000
#: Column names are short; a longer header row is not a table's.
MAX_CSV_HEADER_CHARS = 1024 * 1024
#: Values a CSV may hold (parsed as float64: 400 MB at most).
MAX_CSV_CELLS = 50_000_000
SPLIT_SEED = 0


class SplitInfo(BaseModel):
    n: int = Field(description="Examples.")
    x_shape: list[int] = Field(description="Shape of x, examples first.")
    x_dtype: str
    y_shape: list[int] | None = None
    y_dtype: str | None
    class_counts: dict[str, int] | None = Field(
        description="Examples per class id, for integer labels."
    )


class DatasetInfo(BaseModel):
    splits: dict[str, SplitInfo] = Field(description="train, and test when there is one.")


def read_npz(path: Path, max_expanded: int) -> Arrays:
    """The arrays of an ``.npz`` upload, checked; object arrays (which would need
    unpickling) are refused before any is read."""
    what = ".npz file"
    with open_archive(path, what, max_expanded) as archive:
        names = [name.removesuffix(".npy") for name in archive.namelist()]
        if len(set(names)) != len(names):
            raise InvalidUpload(f"the {what} holds an array twice")
        unexpected = sorted(set(names) - set(ARRAY_NAMES))
        if unexpected:
            raise InvalidUpload(
                f"the {what} holds arrays {unexpected[:5]}; expected x_train, y_train and "
                "optionally x_test, y_test"
            )
        for member in archive.infolist():
            _check_header(archive, member)
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {name: npz[name] for name in npz.files}
    except (*ARCHIVE_ERRORS, OSError, ValueError) as exc:
        raise InvalidUpload(f"the {what} is damaged: {exc}") from exc
    return arrays


def _check_header(archive: zipfile.ZipFile, member: zipfile.ZipInfo) -> None:
    name = member.filename.removesuffix(".npy")
    try:
        with archive.open(member) as handle:
            version = np.lib.format.read_magic(handle)
            if version == (1, 0):
                shape, _, dtype = np.lib.format.read_array_header_1_0(handle)
            elif version == (2, 0):
                shape, _, dtype = np.lib.format.read_array_header_2_0(handle)
            else:
                raise ValueError(f"unsupported .npy format version {version}")
    except (*ARCHIVE_ERRORS, OSError, ValueError) as exc:
        raise InvalidUpload(f"{name} in the .npz file is not a NumPy array: {exc}") from exc
    if dtype.hasobject:
        raise InvalidUpload(f"{name} is an object array: pickled arrays are not accepted")
    max_rank = MAX_X_RANK if name.startswith("x_") else MAX_Y_RANK
    if not 1 <= len(shape) <= max_rank:
        raise InvalidUpload(
            f"{name} has {len(shape)} dimensions; use 1 to {max_rank} (examples first)"
        )
    if any(dim < 1 for dim in shape):
        # Zero-width arrays hold no bytes, so the size check below passes them, yet each
        # of their rows still costs memory once loaded.
        raise InvalidUpload(f"{name} has shape {list(shape)}; every dimension must be at least 1")
    expected = int(np.prod(shape)) * dtype.itemsize
    if expected > member.file_size:
        raise InvalidUpload(f"{name} in the .npz file is truncated")


def read_csv(path: Path, label: str, test_fraction: float) -> Arrays:
    """x (float32) from every column but ``label``; y from ``label``: class ids (int64)
    when every value is a whole number in [0, MAX_CLASSES), floats otherwise."""
    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            line = handle.readline(MAX_CSV_HEADER_CHARS + 1)
        if len(line) > MAX_CSV_HEADER_CHARS:
            raise InvalidUpload(
                f"the CSV file's header row is longer than {MAX_CSV_HEADER_CHARS:,} characters"
            )
        header = next(csv.reader(io.StringIO(line)), [])
    except UnicodeDecodeError as exc:
        raise InvalidUpload(f"the CSV file is not UTF-8 text: {exc}") from exc
    except csv.Error as exc:  # a column name past the csv module's field limit
        raise InvalidUpload(f"the CSV file's header row cannot be read: {exc}") from exc
    columns = [column.strip() for column in header]
    if not columns or not any(columns):
        raise InvalidUpload("the CSV file needs a header row naming its columns")
    if len(columns) > MAX_CSV_COLUMNS + 1:
        raise InvalidUpload(f"the CSV file has {len(columns)} columns; at most {MAX_CSV_COLUMNS}")
    if label not in columns:
        shown = ", ".join(repr(column) for column in columns[:10])
        raise InvalidUpload(f"the CSV file has no label column {label!r}; its columns: {shown}")
    if len(columns) < 2:
        raise InvalidUpload("the CSV file has no feature columns besides the label")
    max_rows = MAX_CSV_CELLS // len(columns)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "input contained no data"
            table = np.loadtxt(
                path,
                delimiter=",",
                skiprows=1,
                dtype=np.float64,
                comments=None,
                ndmin=2,
                max_rows=max_rows + 1,
                encoding="utf-8-sig",
                quotechar='"',
            )
    except (ValueError, UnicodeDecodeError) as exc:
        raise InvalidUpload(f"the CSV file has a value that is not a number: {exc}") from exc
    if table.shape[0] == 0:
        raise InvalidUpload("the CSV file has a header but no rows")
    if table.shape[0] > max_rows:
        raise InvalidUpload(f"the CSV file has more than {max_rows} rows")
    if table.shape[1] != len(columns):
        raise InvalidUpload(
            f"the CSV rows have {table.shape[1]} values; the header names {len(columns)}"
        )
    target = columns.index(label)
    x = np.delete(table, target, axis=1).astype(np.float32)
    raw_y = table[:, target]
    whole = np.isfinite(raw_y).all() and (raw_y == np.round(raw_y)).all()
    classes = whole and raw_y.min() >= 0 and raw_y.max() < MAX_CLASSES
    y = raw_y.astype(np.int64) if classes else raw_y.astype(np.float32)
    return split(x, y, test_fraction)


def split(x: NDArray[Any], y: NDArray[Any], test_fraction: float) -> Arrays:
    if not 0 <= test_fraction < 1:
        raise InvalidUpload(f"test_fraction must be in [0, 1), got {test_fraction}")
    n_test = round(len(x) * test_fraction)
    if test_fraction == 0:
        return {"x_train": x, "y_train": y}
    if n_test == 0 or n_test == len(x):
        raise InvalidUpload(f"test_fraction {test_fraction} of {len(x)} rows leaves an empty split")
    order = np.random.default_rng(SPLIT_SEED).permutation(len(x))
    test, train = order[:n_test], order[n_test:]
    return {"x_train": x[train], "y_train": y[train], "x_test": x[test], "y_test": y[test]}


def describe(arrays: Arrays) -> DatasetInfo:
    """Check the arrays a dataset must hold and describe each split."""
    if "x_train" not in arrays or "y_train" not in arrays:
        raise InvalidUpload("a dataset needs x_train and y_train")
    if ("x_test" in arrays) != ("y_test" in arrays):
        raise InvalidUpload("give x_test and y_test together, or neither")
    splits = {"train": _split_info("train", arrays["x_train"], arrays["y_train"])}
    if "x_test" in arrays:
        splits["test"] = _split_info("test", arrays["x_test"], arrays["y_test"])
        train, test = arrays["x_train"], arrays["x_test"]
        if train.shape[1:] != test.shape[1:]:
            raise InvalidUpload(
                f"x_test examples have shape {list(test.shape[1:])}, x_train's "
                f"{list(train.shape[1:])}"
            )
        if (arrays["y_train"].dtype.kind == "f") != (arrays["y_test"].dtype.kind == "f"):
            raise InvalidUpload("y_train and y_test must both be class ids or both floats")
        if arrays["y_train"].shape[1:] != arrays["y_test"].shape[1:]:
            raise InvalidUpload("y_train and y_test rows differ in shape")
    return DatasetInfo(splits=splits)


def _split_info(split: str, x: NDArray[Any], y: NDArray[Any]) -> SplitInfo:
    if x.dtype.kind not in "biuf":
        raise InvalidUpload(f"x_{split} must be numeric, not {x.dtype}")
    if x.ndim < 2 or x.shape[0] == 0:
        raise InvalidUpload(
            f"x_{split} must have an example axis and a feature axis, shape {list(x.shape)}"
        )
    if y.shape[:1] != x.shape[:1]:
        raise InvalidUpload(f"x_{split} has {x.shape[0]} examples, y_{split} {len(y)}")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InvalidUpload(f"x_{split} has NaN or infinite values")
    counts = None
    if y.dtype.kind in "iu":
        if y.ndim != 1:
            raise InvalidUpload(f"integer y_{split} must be class ids, one per example (1-D)")
        labels, freq = np.unique(y, return_counts=True)
        if labels[0] < 0:
            raise InvalidUpload(f"y_{split} has a negative class id {labels[0]}")
        if len(labels) > MAX_CLASSES:
            raise InvalidUpload(
                f"y_{split} has {len(labels)} classes; at most {MAX_CLASSES} (store "
                "regression targets as floats)"
            )
        counts = {str(label): int(count) for label, count in zip(labels, freq, strict=True)}
    elif y.dtype.kind == "f":
        if not np.isfinite(y).all():
            raise InvalidUpload(f"y_{split} has NaN or infinite values")
    else:
        raise InvalidUpload(f"y_{split} must be integer class ids or floats, not {y.dtype}")
    return SplitInfo(
        n=int(x.shape[0]),
        x_shape=list(x.shape),
        x_dtype=str(x.dtype),
        y_shape=list(y.shape),
        y_dtype=str(y.dtype),
        class_counts=counts,
    )


def write_npz(arrays: Arrays, target: Path) -> Path:
    with target.open("wb") as handle:
        kept = {name: arrays[name] for name in ARRAY_NAMES if name in arrays}
        np.savez(handle, allow_pickle=False, **kept)
    return target
