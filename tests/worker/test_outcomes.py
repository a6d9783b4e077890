"""Outcome warnings: chance from the labels, accuracy against it, loss that ran away."""

from __future__ import annotations

import numpy as np
import pytest

from worker.outcomes import chance_accuracy, judge


def test_chance_is_the_majority_share_for_ids_and_one_hot_rows() -> None:
    ids = np.array([0, 1, 1, 1, 2])
    assert chance_accuracy(ids, 3) == pytest.approx(0.6)
    assert chance_accuracy(np.eye(3)[ids], 3) == pytest.approx(0.6)
    assert chance_accuracy(np.array([0.5, 1.5]), 0) is None  # regression targets


def test_accuracy_at_chance_is_flagged_from_the_test_split_first() -> None:
    epochs = [{"loss": 2.3, "accuracy": 0.9, "val_accuracy": 0.9}]
    [warning] = judge(epochs, {"loss": 2.3, "accuracy": 0.105}, chance=0.1)
    assert warning["code"] == "no_better_than_chance"
    assert "test accuracy 0.105" in warning["message"]
    assert judge(epochs, {"loss": 0.3, "accuracy": 0.93}, chance=0.1) == []


def test_without_a_test_split_the_validation_accuracy_decides() -> None:
    epochs = [{"loss": 2.3, "accuracy": 0.5, "val_accuracy": 0.1}]
    [warning] = judge(epochs, {}, chance=0.1)
    assert "validation accuracy" in warning["message"]
    assert judge(epochs, {}, chance=None) == []  # no classes, no chance


def test_a_loss_that_ran_away_without_nan_is_flagged() -> None:
    rising = [{"loss": 0.9}, {"loss": 0.5}, {"loss": 40.0}, {"loss": 1.0e6}]
    [warning] = judge(rising, {}, chance=None)
    assert warning["code"] == "loss_diverged"
    assert "from 0.5 (epoch 2)" in warning["message"]
    falling = [{"loss": 0.9}, {"loss": 0.5}, {"loss": 0.6}]
    assert judge(falling, {}, chance=None) == []
