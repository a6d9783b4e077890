"""Honest outcomes: a job that trained to no better than chance, or whose loss ran away
without ever becoming NaN, still ends ``succeeded`` (it did what it was asked), but says
so with a warning of a stable code on the job, which the CLI and the page show.

Chance is the share of the most common class among the labels the model was judged on
(the test split, else the training labels): what always answering that class scores.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

#: Accuracy this close to chance (absolute) counts as chance.
CHANCE_MARGIN = 0.01
#: A final loss this many times the best epoch's loss, and above the first's, diverged.
DIVERGED_FACTOR = 2.0


def chance_accuracy(labels: NDArray[Any], n_classes: int) -> float | None:
    """The majority class's share of ``labels`` (class ids or one-hot rows); None where
    the targets are not classes."""
    if n_classes < 2 or not len(labels):
        return None
    ids = labels.argmax(axis=1) if labels.ndim == 2 else labels.astype(np.int64)
    return float(np.bincount(ids, minlength=n_classes).max() / len(ids))


def judge(
    epochs: Sequence[Mapping[str, float]],
    test_metrics: Mapping[str, float],
    chance: float | None,
) -> list[dict[str, Any]]:
    """The outcome warnings of a finished job (``SpecWarning`` documents)."""
    return [*_no_better_than_chance(epochs, test_metrics, chance), *_loss_diverged(epochs)]


def _no_better_than_chance(
    epochs: Sequence[Mapping[str, float]], test_metrics: Mapping[str, float], chance: float | None
) -> Iterator[dict[str, Any]]:
    if chance is None:
        return
    last = epochs[-1] if epochs else {}
    for source, metrics in (
        ("test", test_metrics),
        ("validation", _validation(last)),
        ("training", last),
    ):
        accuracy = next((value for key, value in metrics.items() if _is_accuracy(key)), None)
        if accuracy is None:
            continue
        if accuracy <= chance + CHANCE_MARGIN:
            yield {
                "code": "no_better_than_chance",
                "message": f"{source} accuracy {accuracy:.3f} is no better than always "
                f"answering the most common class ({chance:.3f}); try a lower learning "
                "rate, another initializer or activation, or standardized inputs",
                "loc": [],
            }
        return


def _loss_diverged(epochs: Sequence[Mapping[str, float]]) -> Iterator[dict[str, Any]]:
    losses = [row["loss"] for row in epochs if "loss" in row]
    if len(losses) < 2:
        return
    best = min(losses)
    best_epoch = losses.index(best) + 1
    final = losses[-1]
    if final > losses[0] and final > DIVERGED_FACTOR * max(best, 1e-12):
        yield {
            "code": "loss_diverged",
            "message": f"the training loss rose from {best:.4g} (epoch {best_epoch}) to "
            f"{final:.4g} (epoch {len(losses)}); lower the learning rate, or clip gradients "
            "(clipnorm / clipvalue)",
            "loc": [],
        }


def _validation(row: Mapping[str, float]) -> dict[str, float]:
    return {key.removeprefix("val_"): value for key, value in row.items() if key.startswith("val_")}


def _is_accuracy(key: str) -> bool:
    return key.endswith("accuracy") and "top_k" not in key and not key.startswith("val_")
