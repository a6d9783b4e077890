"""Warnings about specs that are valid but probably not what the author meant.

Each warning has a stable ``code`` (clients may filter on it), a sentence for people, and
``loc``, the path of the field it is about, in the same form as validation errors.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from itertools import pairwise

from pydantic import BaseModel

from models.spec.job import ExecutionChoice, TrainJobSpec
from models.spec.layers import (
    Activation,
    AlphaDropout,
    Dense,
    DenseBlock,
    Dropout,
    Flatten,
    MCDropout,
    PrimitiveLayerSpec,
    Reshape,
)


class SpecWarning(BaseModel):
    code: str
    message: str
    loc: list[str | int]


Rule = Callable[[TrainJobSpec], Iterator[SpecWarning]]

#: Layers a self-normalizing net may contain without breaking the SELU conditions.
_SELU_FRIENDLY = (Dense, DenseBlock, Activation, AlphaDropout, Flatten, Reshape)


def _uses_selu(spec: TrainJobSpec) -> bool:
    return any(getattr(layer, "activation", None) == "selu" for layer in spec.model.layers)


def selu_conditions(spec: TrainJobSpec) -> Iterator[SpecWarning]:
    """Klambauer et al.'s conditions for self-normalization, as the seed notebook lists them:
    standardized inputs, LeCun-normal hidden weights, a plain stack of dense layers, and
    AlphaDropout rather than Dropout."""
    if not _uses_selu(spec):
        return
    if spec.dataset.preprocessing != "standardize":
        yield SpecWarning(
            code="selu_inputs_not_standardized",
            message="SELU self-normalizes only with standardized inputs (mean 0, std 1); "
            'set dataset.preprocessing to "standardize"',
            loc=["dataset", "preprocessing"],
        )
    for index, layer in enumerate(spec.model.layers):
        loc: list[str | int] = ["model", "layers", index]
        if (
            isinstance(layer, Dense | DenseBlock)
            and layer.activation == "selu"
            and layer.kernel_initializer != "lecun_normal"
        ):
            yield SpecWarning(
                code="selu_init_not_lecun_normal",
                message="SELU layers self-normalize with kernel_initializer lecun_normal",
                loc=[*loc, "kernel_initializer"],
            )
        if isinstance(layer, Dropout | MCDropout) or (
            isinstance(layer, DenseBlock)
            and layer.dropout is not None
            and layer.dropout_type != "AlphaDropout"
        ):
            yield SpecWarning(
                code="selu_dropout",
                message="Dropout breaks self-normalization; use AlphaDropout in a SELU net",
                loc=loc,
            )
        elif not isinstance(layer, _SELU_FRIENDLY) or (
            isinstance(layer, DenseBlock) and layer.batch_norm is not None
        ):
            yield SpecWarning(
                code="selu_non_sequential",
                message=f"{layer.type} breaks the plain dense stack SELU self-normalizes in; "
                "expect ELU to do as well here",
                loc=loc,
            )


def bias_before_batch_norm(spec: TrainJobSpec) -> Iterator[SpecWarning]:
    """A bias right before BN is wasted: BN subtracts the mean, and its beta is the bias."""
    layers = spec.model.layers
    for index, (layer, following) in enumerate(pairwise(layers)):
        if (
            isinstance(layer, Dense)
            and layer.use_bias
            and layer.activation in (None, "linear")
            and following.type == "BatchNormalization"
        ):
            yield SpecWarning(
                code="bias_before_batch_norm",
                message="a Dense bias right before BatchNormalization is redundant "
                "(BN's beta plays its part); set use_bias to false",
                loc=["model", "layers", index, "use_bias"],
            )


def head_loss_mismatch(
    layers: list[PrimitiveLayerSpec], loss: str, loc: list[str | int]
) -> Iterator[SpecWarning]:
    """The output layer's width against the loss: one unit cannot hold a categorical
    distribution, and binary cross-entropy over many units is multi-label."""
    last = next((layer for layer in reversed(layers) if isinstance(layer, Dense)), None)
    if last is None:
        return
    if last.units == 1 and loss in {"sparse_categorical_crossentropy", "categorical_crossentropy"}:
        yield SpecWarning(
            code="head_units_loss_mismatch",
            message=f"{loss} needs one output unit per class, the last Dense has 1; for two "
            "classes use units 1 with sigmoid and binary_crossentropy",
            loc=loc,
        )
    elif last.units > 1 and loss == "binary_crossentropy":
        yield SpecWarning(
            code="head_units_loss_mismatch",
            message=f"binary_crossentropy over {last.units} units treats them as independent "
            "labels; for one of several classes use softmax and sparse_categorical_crossentropy",
            loc=loc,
        )


def output_layer(spec: TrainJobSpec) -> Iterator[SpecWarning]:
    yield from head_loss_mismatch(spec.model.expanded_layers, spec.compile.loss, ["model"])


RULES: list[Rule] = [selu_conditions, bias_before_batch_norm, output_layer]


def changed_numerics(fit: ExecutionChoice) -> Iterator[SpecWarning]:
    """Execution choices that make the numbers differ from a float32 run of the same spec
    and seed: opt-in, and said so (every job kind's fit)."""
    if fit.precision != "float32":
        device = "a GPU" if fit.precision == "mixed_float16" else "a device with bf16 units"
        yield SpecWarning(
            code="changes_numerics",
            message=f"{fit.precision} computes in 16 bits (weights stay float32): faster on "
            f"{device}, but the metrics differ from a float32 run with the same seed",
            loc=["fit", "precision"],
        )
    if fit.jit_compile is True:
        yield SpecWarning(
            code="changes_numerics",
            message="XLA fuses operations and may reorder floating-point sums: the metrics "
            'can differ in the last digits from the default ("auto")',
            loc=["fit", "jit_compile"],
        )


def lint(spec: TrainJobSpec) -> list[SpecWarning]:
    return [warning for rule in RULES for warning in rule(spec)]
