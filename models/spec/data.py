"""Dataset selection and preprocessing."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from models.spec.base import StrictModel

#: Built-in datasets: name → (input shape, number of classes). Uploaded datasets join later.
BUILTIN_DATASETS: dict[str, tuple[tuple[int, ...], int]] = {
    "digits": ((8, 8), 10),
    "mnist": ((28, 28), 10),
    "fashion_mnist": ((28, 28), 10),
}

DatasetName = Literal["digits", "mnist", "fashion_mnist"]


class DatasetSpec(StrictModel):
    name: DatasetName
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
    limit: int | None = Field(
        default=None, gt=0, description="Keep the first n examples of each split (for quick runs)."
    )
