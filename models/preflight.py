"""Preflight: a spec checked against the data it will meet, at submit and in the dry run.

Shapes, dtypes and class ids of every dataset are known without loading it: built-ins
from ``models.spec.data``'s tables, uploads from the inspection stored with them. Each
rule below looks at one thing that would make the job fail at run time, or train
nonsense and end ``succeeded`` anyway, and says what to change at the field to change.
A rule raises :class:`SpecError` (422) for a spec sure to fail, and yields a
:class:`SpecWarning` (a stable code) for one that merely looks wrong.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Literal

from sqlalchemy.orm import Session

from models.kinds.base import FitPlan, Loc, SpecError
from models.spec import AnyJobSpec
from models.spec.data import BUILTIN_DATASETS, BUILTIN_SPLITS, DatasetSpec
from models.spec.lint import SpecWarning
from models.summary import DataSizes, ModelSummary
from models.tables import Dataset

#: Losses that read labels as class ids, or as one-hot rows of class ids.
SPARSE_LOSSES = frozenset({"sparse_categorical_crossentropy"})
ONE_HOT_LOSSES = frozenset({"categorical_crossentropy", "kl_divergence"})
BINARY_LOSSES = frozenset({"binary_crossentropy"})
CLASSIFICATION_LOSSES = SPARSE_LOSSES | ONE_HOT_LOSSES | BINARY_LOSSES


@dataclass(frozen=True)
class DataFacts:
    """What a job's dataset holds, after ``classes`` and ``limit``."""

    what: str  # for messages: "digits", "uploaded dataset 3f1c…"
    example_shape: tuple[int, ...]
    n_train: int
    n_test: int
    #: The original class ids present; None where the targets are not class ids.
    classes: tuple[int, ...] | None
    #: Targets given as rows (one-hot or several values per example): their width.
    target_width: int | None = None

    @property
    def are_class_ids(self) -> bool:
        return self.classes is not None


def data_facts(session: Session, dataset: DatasetSpec) -> DataFacts:
    """The facts of ``dataset`` (an upload the caller may use: ``kinds.inspect`` checked)."""
    if dataset.id is not None:
        row = session.get(Dataset, dataset.id)
        if row is None:
            raise SpecError(f"no uploaded dataset {dataset.id}", ["dataset", "id"])
        # The upload inspection's SplitInfo per split, as stored (uploads/dataset_files.py).
        splits = row.info["splits"]
        train = splits["train"]
        what = f"uploaded dataset {dataset.id}"
        shape = tuple(train["x_shape"][1:])
        sizes = {name: (split["n"], split.get("class_counts")) for name, split in splits.items()}
        y_shape = train.get("y_shape") or []
        width = y_shape[1] if len(y_shape) == 2 else None
        counts = train.get("class_counts")
        classes = tuple(sorted(int(label) for label in counts)) if counts else None
    else:
        assert dataset.name is not None
        what = dataset.name
        shape, n_classes = BUILTIN_DATASETS[dataset.name]
        n_train, n_test = BUILTIN_SPLITS[dataset.name][:2]
        sizes = {"train": (n_train, None), "test": (n_test, None)}
        width, classes = None, tuple(range(n_classes))
    n = {
        split: _selected(dataset, split, *sizes[split], classes) if split in sizes else 0
        for split in ("train", "test")
    }
    return DataFacts(what, shape, n["train"], n["test"], classes, width)


def _selected(
    dataset: DatasetSpec,
    split: Literal["train", "test"],
    total: int,
    counts: dict[str, int] | None,
    classes: tuple[int, ...] | None,
) -> int:
    """Examples of a split after ``classes`` and ``limit``."""
    if dataset.classes is not None and classes:
        if counts is not None:
            total = sum(counts.get(str(label), 0) for label in dataset.classes)
        else:  # built-ins carry no per-class counts; their classes are balanced
            kept = len(set(dataset.classes) & set(classes))
            total = math.ceil(total * kept / len(classes))
    cap = dataset.split_limit(split)
    return min(total, cap) if cap is not None else total


@dataclass(frozen=True)
class Flight:
    """What every rule reads."""

    spec: AnyJobSpec
    summary: ModelSummary
    plan: FitPlan
    facts: DataFacts
    #: Where the job's model (its input shape and layers) is described.
    model_loc: Loc

    @property
    def output_layer_loc(self) -> Loc:
        """The spec layer that makes the output (a transfer's head is a bare list)."""
        inner = [] if isinstance(getattr(self.spec, str(self.model_loc[0])), list) else ["layers"]
        return [*self.model_loc, *inner, self.summary.layers[-1].spec_index]

    @property
    def output_units(self) -> int | None:
        shape = self.summary.layers[-1].output_shape if self.summary.layers else []
        return shape[-1] if len(shape) == 2 else None

    @property
    def label_classes(self) -> int:
        """How many classes the labels name after ``classes``/``relabel``: one more than
        the largest label, as the worker counts them for one-hot rows."""
        dataset = self.spec.dataset
        kept = dataset.kept_classes
        if kept is not None:
            return max(dataset.new_label(label) for label in kept) + 1
        assert self.facts.classes is not None
        return max(self.facts.classes, default=0) + 1


Rule = Callable[[Flight], Iterator[SpecWarning]]


def _input_shape(flight: Flight) -> Iterator[SpecWarning]:
    expected = tuple(flight.summary.input_shape[1:])
    given = flight.facts.example_shape
    if len(expected) == len(given) and all(
        want is None or want == have for want, have in zip(expected, given, strict=True)
    ):
        return  # None: a base that takes any size on that axis
    shown = list(given)
    if flight.model_loc == ["head"]:  # the input is the base's
        raise SpecError(
            f"the base model takes inputs of shape {list(expected)} but {flight.facts.what}'s "
            f"examples have shape {shown}; transfer from a base trained on such data",
            ["dataset"],
        )
    if math.prod(dim or 0 for dim in expected) == math.prod(given) and len(given) > 1:
        hint = f'set input_shape to {shown} and put {{"type": "Flatten"}} first'
    else:
        hint = f"set input_shape to {shown}"
    raise SpecError(
        f"{flight.facts.what}'s examples have shape {shown}, not {list(expected)}; {hint}",
        [*flight.model_loc, "input_shape"],
    )
    yield  # a generator, like every rule


def _classes_exist(flight: Flight) -> Iterator[SpecWarning]:
    dataset = flight.spec.dataset
    kept = dataset.kept_classes
    if kept is None:
        return
    field = "classes" if dataset.classes is not None else "relabel"
    if flight.facts.classes is None:
        raise SpecError(
            f"{flight.facts.what}'s targets are not class ids; leave {field} out",
            ["dataset", field],
        )
    missing = sorted(set(kept) - set(flight.facts.classes))
    if missing:
        raise SpecError(
            f"{flight.facts.what} has no class {', '.join(map(str, missing))}; its classes "
            f"are {_span(flight.facts.classes)}",
            ["dataset", field],
        )
    yield from ()


def _examples_left(flight: Flight) -> Iterator[SpecWarning]:
    n = flight.facts.n_train
    if n == 0:
        raise SpecError(
            f"the selection leaves no training examples of {flight.facts.what}",
            ["dataset", "limit" if flight.spec.dataset.limit is not None else "classes"],
        )
    fit = flight.spec.fit
    kept, held = fit.split_counts(n)
    if fit.validates and (kept == 0 or held == 0):
        field = "validation" if fit.validation is not None else "validation_split"
        raise SpecError(
            f"{field} of {n} training examples leaves {kept} to train on and {held} to "
            "validate on; each needs at least one",
            ["fit", field],
        )
    yield from ()


def _targets_match_loss(flight: Flight) -> Iterator[SpecWarning]:
    if flight.plan.reconstruct or flight.spec.dataset.unlabeled:
        return
    loss = flight.plan.loss
    units = flight.output_units
    if units is None:
        return
    if not flight.facts.are_class_ids:
        yield from _value_targets(flight, loss, units)
        return
    one_hot = flight.spec.dataset.one_hot
    classes = flight.label_classes
    loss_loc: Loc = ["compile", "loss"]
    if loss in SPARSE_LOSSES and one_hot:
        raise SpecError(
            "sparse_categorical_crossentropy takes class ids, and dataset.one_hot makes "
            "one-hot rows; set one_hot to false, or use categorical_crossentropy",
            ["dataset", "one_hot"],
        )
    if loss in ONE_HOT_LOSSES and not one_hot:
        raise SpecError(
            f"{loss} takes one-hot rows and the labels are class ids; set dataset.one_hot "
            "to true, or use sparse_categorical_crossentropy",
            loss_loc,
        )
    if loss in BINARY_LOSSES:
        if classes > 2 and not one_hot:
            raise SpecError(
                f"binary_crossentropy needs labels 0 and 1, and these are {classes} classes; "
                f"use sparse_categorical_crossentropy with a {classes}-unit softmax, or keep "
                "two classes (dataset.classes)",
                loss_loc,
            )
        wanted = classes if one_hot else 1
    elif loss in CLASSIFICATION_LOSSES or one_hot:
        wanted = classes
    else:
        wanted = 1
        yield SpecWarning(
            code="regression_on_class_ids",
            message=f"{loss} treats the class ids as numbers to predict; for classes use "
            "sparse_categorical_crossentropy with a softmax output",
            loc=loss_loc,
        )
    if units == wanted:
        return
    if loss in SPARSE_LOSSES and units > wanted:
        yield SpecWarning(
            code="unused_outputs",
            message=f"the output layer has {units} units for {wanted} classes; the extra "
            "units never see a label",
            loc=flight.output_layer_loc,
        )
        return
    raise SpecError(
        f"the output layer has {units} units; {loss} on these labels ({classes} classes"
        f"{', one-hot' if one_hot else ''}) needs {wanted}: set its units to {wanted}",
        flight.output_layer_loc,
    )


def _value_targets(flight: Flight, loss: str, units: int) -> Iterator[SpecWarning]:
    """Targets that are values (floats, or rows of them), not class ids."""
    if loss in CLASSIFICATION_LOSSES and flight.facts.target_width is None:
        raise SpecError(
            f"{flight.facts.what}'s targets are values, not class ids; {loss} needs classes: "
            "use a regression loss such as mse",
            ["compile", "loss"],
        )
    wanted = flight.facts.target_width or 1
    if units != wanted:
        raise SpecError(
            f"the output layer has {units} units and each target has {wanted} value(s); "
            f"set its units to {wanted}",
            flight.output_layer_loc,
        )
    yield from ()


def _monitor_is_logged(flight: Flight) -> Iterator[SpecWarning]:
    early = flight.plan.early_stopping
    if early is None:
        return
    loc: Loc = ["fit", "early_stopping", "monitor"]
    logged = {
        "loss",
        *flight.plan.metrics,
        *(METRIC_ALIASES.get(m, m) for m in flight.plan.metrics),
    }
    name = early.monitor.removeprefix("val_")
    if name not in logged:
        raise SpecError(
            f"{early.monitor!r} is not logged: the job logs {sorted(logged)} (with val_ "
            "when it validates); monitor one of them or add the metric to compile.metrics",
            loc,
        )
    if early.monitor.startswith("val_") and not flight.spec.fit.validates:
        raise SpecError(
            f"{early.monitor} needs validation data: set fit.validation_split (e.g. 0.1) or "
            f"fit.validation, or monitor {name}",
            loc,
        )
    yield from ()


#: Metric names as Keras logs them, where it logs them under another name.
METRIC_ALIASES = {"mse": "mean_squared_error", "mae": "mean_absolute_error"}


#: Every rule, in the order they run; the first error wins.
def _batch_splits_over_devices(flight: Flight) -> Iterator[SpecWarning]:
    """Data parallelism gives each device an equal share of a batch: TensorFlow's
    MirroredStrategy under Keras fails on a batch that does not split evenly."""
    devices = flight.spec.resources.device_count
    batch_size = flight.spec.fit.batch_size
    if batch_size % devices:
        lower = max(devices, batch_size - batch_size % devices)
        raise SpecError(
            f"batch_size {batch_size} does not split over {devices} GPUs "
            f"(resources.gpus); use a multiple of {devices}, such as {lower} or "
            f"{lower + devices}",
            ["fit", "batch_size"],
        )
    yield from ()


RULES: tuple[Rule, ...] = (
    _input_shape,
    _classes_exist,
    _examples_left,
    _targets_match_loss,
    _monitor_is_logged,
    _batch_splits_over_devices,
)


@dataclass(frozen=True)
class Preflight:
    """What a spec the data accepts will train on, and what looks wrong about it."""

    sizes: DataSizes
    warnings: list[SpecWarning]


def preflight(
    session: Session, spec: AnyJobSpec, summary: ModelSummary, plan: FitPlan, model_loc: Loc
) -> Preflight:
    """:class:`SpecError` for a spec the data will not accept."""
    flight = Flight(spec, summary, plan, data_facts(session, spec.dataset), model_loc)
    warnings = [warning for rule in RULES for warning in rule(flight)]
    train, validation = spec.fit.split_counts(flight.facts.n_train)
    return Preflight(
        DataSizes(train=train, validation=validation, test=flight.facts.n_test), warnings
    )


def _span(classes: tuple[int, ...]) -> str:
    if classes and list(classes) == list(range(classes[0], classes[-1] + 1)):
        return f"{classes[0]}–{classes[-1]}"
    return ", ".join(map(str, classes[:20])) + (" …" if len(classes) > 20 else "")
