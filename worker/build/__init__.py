"""Spec → Keras objects. Keras's own ``get``/deserialize machinery does the mapping; the
tables here hold only what Keras lacks (custom layers, block shorthands)."""

from worker.build.model import build_model, build_optimizer, compile_model

__all__ = ["build_model", "build_optimizer", "compile_model"]
