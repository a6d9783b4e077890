"""What every phase of ``api_load`` shares: the job it submits, the error a phase raises,
and percentiles."""

from __future__ import annotations

from typing import Any

from models.spec.examples import DIGITS_SPEC

#: The tests' digits job, one epoch: seconds a job, nothing to download.
BENCH_SPEC: dict[str, Any] = {
    **DIGITS_SPEC,
    "name": "bench-digits",
    "fit": {**DIGITS_SPEC["fit"], "epochs": 1},
}


class BenchError(Exception):
    """A phase could not run (the message says why, with logs)."""


def percentile(values: list[float], q: float) -> float | None:
    """Linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)
