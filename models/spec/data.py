"""Dataset selection and preprocessing."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from models.spec.base import StrictModel

#: Built-in datasets: name → (input shape, number of classes). Uploaded datasets join later.
BUILTIN_DATASETS: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((8, 8), 10),
    "mnist": ((28, 28), 10),
    "fashion_mnist": ((28, 28), 10),
}

#: name → (train examples, test examples, x dtype, y dtype), as the worker loads them.
BUILTIN_SPLITS: dict[str, tuple[int, int, str, str]] = {
    "digits": (1437, 360, "float64", "int64"),
    "mnist": (60000, 10000, "uint8", "uint8"),
    "fashion_mnist": (60000, 10000, "uint8", "uint8"),
}

DatasetName = Literal["digits", "mnist", "fashion_mnist"]

#: Built-ins a worker reads through Keras's download cache (digits comes with scikit-learn):
#: name → (folder under $KERAS_HOME, download base URL). Fashion-MNIST shares Keras's.
IDX_SOURCES: dict[str, tuple[str, str]] = {
    "fashion_mnist": (
        "datasets/fashion-mnist",
        "https://storage.googleapis.com/tensorflow/tf-keras-datasets/",
    ),
    "mnist": ("datasets/mnist-idx", "https://storage.googleapis.com/cvdf-datasets/mnist/"),
}
IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}


def keras_home() -> Path:
    """Where Keras keeps its cache (``$KERAS_HOME``, else ``~/.keras``)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras")


def cached_here(name: str) -> bool:
    """Whether this host can load built-in ``name`` without a download."""
    if name not in IDX_SOURCES:
        return True
    folder = keras_home() / IDX_SOURCES[name][0]
    return all((folder / filename).is_file() for filename in IDX_FILES.values())


class SplitLimit(StrictModel):
    train: int | None = Field(default=None, gt=0)
    test: int | None = Field(default=None, gt=0)


class DatasetSpec(StrictModel):
    """A built-in (``name``) or uploaded (``id``) dataset, and which of it to use.

    Selection happens in this order: ``classes`` keeps those classes, ``relabel`` maps
    original labels to new ones (without it, ``classes[i]`` becomes label ``i``), then
    ``limit`` keeps the first n of each split after a shuffle seeded with ``seed``. Géron's
    task A is Fashion-MNIST with ``classes`` all but 5 (sandal) and 6 (shirt); task B is
    ``classes: [5, 6]``, ``relabel: {"5": 0, "6": 1}``, ``limit: {"train": 200}``.
    """

    name: DatasetName | None = None
    id: uuid.UUID | None = Field(default=None, description="An uploaded dataset's id.")
    preprocessing: Literal["none", "scale", "standardize"] = Field(
        default="scale",
        description=(
            "none: raw values; scale: divide by the maximum pixel value; standardize: "
            "per-feature mean 0 / std 1 with statistics from the training split only."
        ),
    )
    one_hot: bool = Field(
        default=False,
        description="Class ids as one-hot rows (for categorical_crossentropy or mse heads).",
    )
    classes: list[int] | None = Field(
        default=None, min_length=1, max_length=10_000, description="Keep only these classes."
    )
    relabel: dict[int, int] | None = Field(
        default=None, description="Original label → new label, for the kept classes."
    )
    limit: int | SplitLimit | None = Field(
        default=None,
        description="n, or {train: n, test: m}: keep the first n examples of a split after "
        "the seeded shuffle.",
    )
    seed: int = Field(default=0, ge=0, description="Seeds the shuffle that limit draws from.")
    unlabeled: bool = Field(
        default=False, description="Inputs only (for pretraining); labels are dropped."
    )

    @model_validator(mode="after")
    def _consistent(self) -> DatasetSpec:
        if (self.name is None) == (self.id is None):
            raise ValueError("give exactly one of name (a built-in) and id (an upload)")
        if isinstance(self.limit, int) and self.limit <= 0:
            raise ValueError("limit must be positive")
        if self.classes is not None and len(set(self.classes)) != len(self.classes):
            raise ValueError("classes must not repeat")
        if self.relabel is not None:
            kept = set(self.classes) if self.classes is not None else set(self.relabel)
            missing = sorted(kept - set(self.relabel))
            if missing:
                raise ValueError(f"relabel has no new label for class(es) {missing}")
        return self

    @property
    def kept_classes(self) -> list[int] | None:
        if self.classes is not None:
            return self.classes
        return sorted(self.relabel) if self.relabel is not None else None

    def new_label(self, original: int) -> int:
        """The label a kept class gets."""
        if self.relabel is not None:
            return self.relabel[original]
        assert self.classes is not None
        return self.classes.index(original)

    def split_limit(self, split: Literal["train", "test"]) -> int | None:
        if isinstance(self.limit, SplitLimit):
            return getattr(self.limit, split)
        return self.limit
