"""fit.validation holds examples out by position (Géron's first 5,000); validation_split
takes Keras's last fraction; one or the other."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from models.spec.job import FitSpec


def test_first_examples_validate_and_the_rest_train() -> None:
    fit = FitSpec(epochs=1, validation={"take": "first", "examples": 5000})
    train, held = fit.held_out(60_000)
    rows = np.arange(60_000)
    assert held is not None
    assert rows[held].tolist() == list(range(5000))
    assert rows[train][0] == 5000
    assert len(rows[train]) == 55_000
    assert fit.split_counts(60_000) == (55_000, 5000)
    assert fit.validates


def test_last_examples_like_keras_but_counted() -> None:
    fit = FitSpec(epochs=1, validation={"take": "last", "examples": 10})
    train, held = fit.held_out(100)
    assert (train, held) == (slice(0, 90), slice(90, 100))


def test_validation_split_counts_as_keras_splits() -> None:
    fit = FitSpec(epochs=1, validation_split=0.1)
    assert fit.held_out(1437) == (slice(0, 1437), None)  # Keras splits it itself
    assert fit.split_counts(1437) == (1293, 144)  # floor(1437 × 0.9) train
    assert not FitSpec(epochs=1).validates


def test_not_both() -> None:
    with pytest.raises(ValidationError, match="not both"):
        FitSpec(epochs=1, validation_split=0.1, validation={"examples": 10})


def test_a_fraction_from_the_front() -> None:
    fit = FitSpec(epochs=1, validation={"take": "first", "fraction": 0.1})
    assert fit.held_out(1437) == (slice(143, 1437), slice(0, 143))
    assert fit.split_counts(1437) == (1294, 143)


def test_examples_or_fraction_not_both_nor_neither() -> None:
    for held in ({"examples": 5, "fraction": 0.1}, {"take": "first"}):
        with pytest.raises(ValidationError, match=r"examples \(a count\) or fraction"):
            FitSpec(epochs=1, validation=held)
