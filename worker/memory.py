"""Between jobs: hand back the memory a finished job's TensorFlow graphs held.

A pool process trains job after job, so whatever a job leaves behind adds up. Measured with
``bench/api_load.py --only rss`` (100 one-epoch ``digits`` jobs), a pool process grew by
~4.5 MB a job (+447 MB) with ``keras.backend.clear_session()`` and ``gc.collect()``
alone, and by ~0.07 MB a job (+7 MB) with :func:`release`. What grew was not
fragmentation (``malloc_trim``, ``MALLOC_ARENA_MAX=2``, jemalloc and fewer TF threads each
changed nothing) but live objects: every traced ``tf.function`` of every job, FuncGraphs
and their C++ graphs.

The anchor is TensorFlow's global gradient registry. Keras's TF optimizer sums gradients
with ``ReplicaContext.all_reduce`` (even under the default strategy), which is wrapped in
``tf.custom_gradient``; traced in graph mode, that registers a ``CustomGradient-<n>``
gradient function whose closure holds tensors of the train step's graph, and nothing ever
removes it (tensorflow/tensorflow#97697, keras-team/tf-keras#898). Two per train function,
so every job pinned its whole train graph forever. Once the job's models are gone no graph
can ask for those gradients again, so :func:`release` drops the entries the job added.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
from collections.abc import Callable
from functools import lru_cache
from typing import Any

import keras

log = logging.getLogger(__name__)

CUSTOM_GRADIENT_PREFIX = "CustomGradient-"


def gradient_registry() -> dict[str, Any] | None:
    """TensorFlow's global registry of gradient functions (a private API, so None if this
    TensorFlow has moved it, or if Keras runs on another backend)."""
    if keras.backend.backend() != "tensorflow":
        return None
    try:
        from tensorflow.python.framework import ops
    except ImportError:
        return None
    registry = getattr(getattr(ops, "_gradient_registry", None), "_registry", None)
    return registry if isinstance(registry, dict) else None


def registered_gradients() -> frozenset[str]:
    """The names in the gradient registry now: take it before a job, pass it to
    :func:`release` after."""
    registry = gradient_registry()
    return frozenset(registry) if registry is not None else frozenset()


def drop_custom_gradients(before: frozenset[str]) -> int:
    """Remove the ``CustomGradient-*`` entries registered since ``before``; returns how many."""
    registry = gradient_registry()
    if registry is None:
        return 0
    added = [
        name
        for name in list(registry)
        if name.startswith(CUSTOM_GRADIENT_PREFIX) and name not in before
    ]
    for name in added:
        registry.pop(name, None)
    return len(added)


@lru_cache(maxsize=1)
def _malloc_trim() -> Callable[[int], int] | None:
    """glibc's ``malloc_trim``; None elsewhere (musl, macOS)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        trim: Callable[[int], int] = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


def trim_heap() -> bool:
    """Return free heap pages to the OS (glibc keeps them otherwise); False if unavailable."""
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def release(before: frozenset[str]) -> None:
    """After a job, with no model of it left in use: free its graphs and weights."""
    dropped = drop_custom_gradients(before)
    # Resets Keras's state and runs gc.collect(): the FuncGraphs are reference cycles, so
    # they go now rather than at some later threshold. A second collection frees nothing
    # more (measured) and costs ~0.2 s with TensorFlow's ~370k objects.
    keras.backend.clear_session(free_memory=True)
    # Small, but measured: ~0.25 → ~0.1 MB a job left resident without it.
    trim_heap()
    log.debug("released the job's graphs (%d custom gradients)", dropped)
