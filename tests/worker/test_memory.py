"""What a job leaves behind in a pool process: its traced graphs must go with its models."""

from __future__ import annotations

import gc

import keras
import numpy as np
import pytest
from tensorflow.python.framework import func_graph

from worker import memory


def fit_once() -> None:
    """A one-epoch fit like a small job's: the TF optimizer's all-reduce traces a
    ``tf.custom_gradient``, which registers a gradient function globally."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 8)).astype("float32")
    y = rng.integers(0, 3, 64)
    model = keras.Sequential(
        [keras.Input((8,)), keras.layers.Dense(8), keras.layers.Dense(3, activation="softmax")]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, epochs=1, batch_size=16, verbose=0)


def func_graphs() -> int:
    gc.collect()
    return sum(isinstance(o, func_graph.FuncGraph) for o in gc.get_objects())


def test_the_gradient_registry_is_where_release_looks() -> None:
    # A private TensorFlow API: if a TensorFlow upgrade moves it, release() quietly stops
    # unpinning graphs, and this says so.
    registry = memory.gradient_registry()
    assert registry is not None
    before = memory.registered_gradients()
    fit_once()
    added = memory.registered_gradients() - before
    # TensorFlow 2.21 + Keras 3: one per traced train step (the optimizer's all-reduce);
    # none once upstream stops leaking them, which release() would not mind.
    assert all(name.startswith(memory.CUSTOM_GRADIENT_PREFIX) for name in added)
    memory.release(before)
    assert memory.registered_gradients() == before


def test_release_drops_the_jobs_custom_gradients_and_frees_its_graphs() -> None:
    before = memory.registered_gradients()
    fit_once()
    memory.release(before)
    assert memory.registered_gradients() == before
    baseline = func_graphs()
    for _ in range(3):
        before = memory.registered_gradients()
        fit_once()
        memory.release(before)
    # Without release() every fit leaves its train step's graph behind.
    assert func_graphs() <= baseline


def test_release_keeps_what_was_registered_before_the_job() -> None:
    registry = memory.gradient_registry()
    assert registry is not None
    name = f"{memory.CUSTOM_GRADIENT_PREFIX}netkiln-test"
    registry[name] = {"type": None, "location": None}
    try:
        before = memory.registered_gradients()
        fit_once()
        memory.release(before)
        assert name in registry
    finally:
        registry.pop(name, None)


def test_release_without_a_registry_still_clears_the_session(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(memory, "gradient_registry", lambda: None)
    assert memory.registered_gradients() == frozenset()
    assert memory.drop_custom_gradients(frozenset()) == 0
    memory.release(frozenset())


def test_trim_heap_on_glibc() -> None:
    assert memory.trim_heap() is True
