"""Warnings for transfer jobs, which need the base's layers to judge."""

from __future__ import annotations

from collections.abc import Iterator

from models.spec.lint import SpecWarning, head_loss_mismatch
from models.spec.transfer import NamedLayers, Phase, TopLayers, TransferJobSpec


def trainable_base_layers(phase: Phase, base_names: list[str]) -> set[str]:
    """The kept base layers that ``phase`` trains."""
    rule = phase.trainable
    if rule == "all":
        return set(base_names)
    if rule == "head":
        return set()
    if isinstance(rule, TopLayers):
        return set(base_names[len(base_names) - rule.top :]) if rule.top else set()
    assert isinstance(rule, NamedLayers)
    return set(rule.layers) & set(base_names)


def lint_transfer(
    spec: TransferJobSpec, base_names: list[str], base_types: list[str]
) -> list[SpecWarning]:
    warnings = list(head_loss_mismatch(spec.head_layers, spec.compile.loss, ["head"]))
    warnings.extend(_unknown_layers(spec, base_names))
    warnings.extend(_bn_in_partly_frozen_base(spec, base_names, base_types))
    warnings.extend(_unfreeze_with_higher_rate(spec, base_names))
    return warnings


def _unknown_layers(spec: TransferJobSpec, base_names: list[str]) -> Iterator[SpecWarning]:
    for index, phase in enumerate(spec.phases):
        if isinstance(phase.trainable, NamedLayers):
            unknown = sorted(set(phase.trainable.layers) - set(base_names))
            if unknown:
                yield SpecWarning(
                    code="unknown_base_layer",
                    message=f"the kept base layers do not include {', '.join(unknown)}",
                    loc=["phases", index, "trainable", "layers"],
                )


def _bn_in_partly_frozen_base(
    spec: TransferJobSpec, base_names: list[str], base_types: list[str]
) -> Iterator[SpecWarning]:
    """Fine-tuning some base layers while BN layers train too: BN's moving statistics
    drift on the small new dataset. Frozen BN runs in inference mode, which is wanted."""
    batch_norms = {
        name
        for name, kind in zip(base_names, base_types, strict=True)
        if kind == "BatchNormalization"
    }
    for index, phase in enumerate(spec.phases):
        trained = trainable_base_layers(phase, base_names)
        if trained and trained != set(base_names) and trained & batch_norms:
            yield SpecWarning(
                code="bn_trainable_in_frozen_base",
                message="this phase trains BatchNormalization layers "
                f"({', '.join(sorted(trained & batch_norms))}) while other base layers stay "
                "frozen; keep them frozen so they stay in inference mode",
                loc=["phases", index, "trainable"],
            )


def _unfreeze_with_higher_rate(
    spec: TransferJobSpec, base_names: list[str]
) -> Iterator[SpecWarning]:
    """Unfreezing with a larger step than the frozen phase used can wreck the reused
    features; Géron keeps the rate (or lowers it)."""
    for index in range(1, len(spec.phases)):
        before, after = spec.phases[index - 1], spec.phases[index]
        more = len(trainable_base_layers(after, base_names)) > len(
            trainable_base_layers(before, base_names)
        )
        rate_before = before.optimizer.initial_learning_rate
        rate_after = after.optimizer.initial_learning_rate
        if more and rate_after > rate_before:
            yield SpecWarning(
                code="unfreeze_lr_higher",
                message=f"phase {index + 1} unfreezes base layers with a higher learning rate "
                f"({rate_after:g}) than phase {index} ({rate_before:g}); use the same or lower",
                loc=["phases", index, "optimizer", "learning_rate"],
            )
