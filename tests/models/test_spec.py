"""The job spec as pydantic models alone: examples, round trips, Keras 2 spellings, strictness."""

from __future__ import annotations

import json
import math
from pathlib import Path
from types import UnionType
from typing import Annotated, Any, Union, get_args, get_origin

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from models.spec import CompileSpec, DatasetSpec, LayerSpec, OptimizerSpec, job_spec_adapter
from models.spec.base import ActivationName, InitializerName, LossName, MetricName
from models.spec.examples import BN_AFTER_ACTIVATION
from models.spec.optimizers import OPTIMIZER_SHORTHANDS, SGD, Adam
from models.spec.resources import ResourcesSpec
from models.spec.schedules import ScheduleSpec

EXAMPLES = sorted((Path(__file__).parents[2] / "examples").glob("*.json"))


def union_types(annotation: Any) -> dict[str, type]:
    """``type`` tag → class, for a discriminated union such as ``LayerSpec`` (nested
    unions, such as the primitive layers inside it, flattened)."""
    if get_origin(annotation) is Annotated:
        return union_types(get_args(annotation)[0])
    if get_origin(annotation) in {Union, UnionType}:
        return {
            tag: cls for member in get_args(annotation) for tag, cls in union_types(member).items()
        }
    return {tag: annotation for tag in get_args(annotation.model_fields["type"].annotation)}


LAYER_TYPES = union_types(LayerSpec)
OPTIMIZER_TYPES = union_types(OptimizerSpec)


class TestExamples:
    def test_examples_folder_is_not_empty(self) -> None:
        assert EXAMPLES

    @pytest.mark.parametrize("path", EXAMPLES, ids=lambda path: path.name)
    def test_example_is_a_valid_job_spec_and_round_trips(self, path: Path) -> None:
        spec = job_spec_adapter.validate_json(path.read_text())
        assert job_spec_adapter.validate_json(spec.model_dump_json()) == spec

    def test_openapi_example_is_the_file(self) -> None:
        document = json.loads((EXAMPLES[0].parent / "bn_after_activation.json").read_text())
        assert document == BN_AFTER_ACTIVATION


# --- a family of valid specs ---------------------------------------------------------


def floats(low: float, high: float, *, exclude_low: bool = False) -> st.SearchStrategy[float]:
    return st.floats(low, high, exclude_min=exclude_low, allow_nan=False, allow_infinity=False)


def fields(
    required: dict[str, st.SearchStrategy[Any]], optional: dict[str, st.SearchStrategy[Any]]
) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(required, optional=optional)


def tagged(type_name: str, **optional: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
    return fields({"type": st.just(type_name)}, optional)


seeds = st.integers(0, 2**31 - 1)
rates = st.floats(0, 1, exclude_max=True)
positive = floats(0, 100, exclude_low=True)
activations = st.sampled_from(get_args(ActivationName))
initializers = st.one_of(
    st.sampled_from(get_args(InitializerName)),
    tagged(
        "VarianceScaling",
        scale=positive,
        mode=st.sampled_from(["fan_in", "fan_out", "fan_avg"]),
        distribution=st.sampled_from(["truncated_normal", "untruncated_normal", "uniform"]),
        seed=seeds,
    ),
    tagged("RandomNormal", mean=floats(-1, 1), stddev=positive, seed=seeds),
    tagged("TruncatedNormal", mean=floats(-1, 1), stddev=positive),
    tagged("RandomUniform", minval=floats(-1, 0), maxval=floats(0, 1), seed=seeds),
    tagged("Constant", value=floats(-10, 10)),
)
regularizers = st.sampled_from(["l1", "l2", "l1_l2"]).flatmap(
    lambda kind: tagged(kind, l1=floats(0, 1), l2=floats(0, 1))
)
constraints = st.one_of(
    tagged("MaxNorm", max_value=positive, axis=st.integers(-1, 1)), tagged("NonNeg")
)
common = {
    "name": st.from_regex(r"[A-Za-z][A-Za-z0-9_.-]{0,20}", fullmatch=True),
    "trainable": st.booleans(),
}
dropout = {"rate": rates, "seed": seeds}


def uniquely_named(layers: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Explicit names prefixed with the layer's position: Keras (and the spec) refuse
    repeated names, and a block's name also prefixes the layers it expands to."""
    return [
        {**layer, "name": f"l{index}_{layer['name']}"} if "name" in layer else layer
        for index, layer in enumerate(layers)
    ]


LAYER_STRATEGIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "Dense": fields(
        {"type": st.just("Dense"), "units": st.integers(1, 512)},
        common
        | {
            "activation": st.none() | activations,
            "use_bias": st.booleans(),
            "kernel_initializer": initializers,
            "bias_initializer": initializers,
            "kernel_regularizer": st.none() | regularizers,
            "activity_regularizer": regularizers,
            "kernel_constraint": st.none() | constraints,
            "bias_constraint": constraints,
        },
    ),
    "Flatten": tagged("Flatten", **common),
    "Reshape": fields(
        {
            "type": st.just("Reshape"),
            "target_shape": st.lists(st.integers(1, 64), min_size=1, max_size=3),
        },
        common,
    ),
    "BatchNormalization": tagged(
        "BatchNormalization",
        axis=st.integers(-3, 3),
        momentum=floats(0, 1),
        epsilon=positive,
        center=st.booleans(),
        scale=st.booleans(),
        **common,
    ),
    "LayerNormalization": tagged(
        "LayerNormalization", axis=st.integers(-3, 3), epsilon=positive, **common
    ),
    "Activation": fields({"type": st.just("Activation"), "activation": activations}, common),
    "LeakyReLU": tagged("LeakyReLU", negative_slope=floats(0, 1), **common),
    "PReLU": tagged(
        "PReLU",
        alpha_initializer=initializers,
        alpha_regularizer=regularizers,
        alpha_constraint=constraints,
        shared_axes=st.lists(st.integers(1, 3), max_size=2),
    ),
    "ELU": tagged("ELU", alpha=positive, **common),
    "ReLU": tagged(
        "ReLU", max_value=st.none() | positive, negative_slope=floats(0, 1), threshold=floats(-1, 1)
    ),
    "Softmax": tagged("Softmax", axis=st.integers(-2, -1)),
    "Dropout": fields({"type": st.just("Dropout"), "rate": rates}, common | {"seed": seeds}),
    "AlphaDropout": fields({"type": st.just("AlphaDropout"), "rate": rates}, {"seed": seeds}),
    "GaussianDropout": fields({"type": st.just("GaussianDropout"), "rate": rates}, {"seed": seeds}),
    "GaussianNoise": fields(
        {"type": st.just("GaussianNoise"), "stddev": positive}, {"seed": seeds}
    ),
    "RReLU": tagged("RReLU", lower=floats(0, 0.25), upper=floats(0.25, 0.99), seed=seeds),
    "MCDropout": fields({"type": st.just("MCDropout"), "rate": rates}, common | {"seed": seeds}),
    "DenseBlock": fields(
        {"type": st.just("DenseBlock"), "units": st.integers(1, 512)},
        common
        | {
            "activation": st.none() | activations | st.sampled_from(["rrelu", "prelu"]),
            "batch_norm": st.sampled_from([None, "before", "after"]),
            "dropout": st.none() | rates,
            "dropout_type": st.sampled_from(["Dropout", "AlphaDropout", "MCDropout"]),
            "kernel_initializer": initializers,
            "kernel_regularizer": st.none() | regularizers,
            "kernel_constraint": st.none() | constraints,
        },
    ),
}

learning_rates = floats(0, 10, exclude_low=True)
steps_or_epochs = st.sampled_from(["step", "epoch"])
boundaries = st.lists(st.integers(0, 10_000), min_size=1, max_size=5, unique=True).map(sorted)
SCHEDULE_STRATEGIES: dict[str, st.SearchStrategy[dict[str, Any]]] = {
    "power": fields(
        {"type": st.just("power"), "initial_learning_rate": learning_rates, "steps": positive},
        {"power": positive, "per": steps_or_epochs},
    ),
    "exponential": fields(
        {
            "type": st.just("exponential"),
            "initial_learning_rate": learning_rates,
            "steps": positive,
        },
        {"per": steps_or_epochs},
    ),
    "piecewise_constant": boundaries.flatmap(
        lambda bounds: fields(
            {
                "type": st.just("piecewise_constant"),
                "boundaries": st.just(bounds),
                "values": st.lists(
                    learning_rates, min_size=len(bounds) + 1, max_size=len(bounds) + 1
                ),
            },
            {"per": steps_or_epochs},
        )
    ),
    "one_cycle": fields(
        {"type": st.just("one_cycle"), "max_learning_rate": learning_rates},
        {
            "pct_start": floats(0, 0.49, exclude_low=True),
            "div_factor": floats(1, 100),
            "final_div_factor": floats(1, 1e4),
        },
    ),
    "reduce_on_plateau": fields(
        {"type": st.just("reduce_on_plateau"), "initial_learning_rate": learning_rates},
        {
            "monitor": st.sampled_from(["val_loss", "loss", "val_accuracy"]),
            "factor": floats(0.01, 0.99),
            "patience": st.integers(0, 50),
            "min_delta": floats(0, 1),
            "min_lr": floats(0, 1e-3),
        },
    ),
}

OPTIMIZER_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "clipvalue": positive,
    "weight_decay": floats(0, 0.1),
}


@st.composite
def optimizers(draw: st.DrawFn) -> Any:
    type_name = draw(st.sampled_from(sorted(OPTIMIZER_TYPES)))
    if draw(st.booleans()):
        return draw(st.sampled_from([type_name, type_name.lower()]))  # Keras's shorthand
    optimizer = draw(tagged(type_name, **OPTIMIZER_FIELDS))
    learning_rate_key = draw(st.sampled_from(["learning_rate", "lr"]))
    form = draw(st.sampled_from(["default", "constant", "decay", "schedule"]))
    if form == "schedule":
        optimizer[learning_rate_key] = draw(st.one_of(*SCHEDULE_STRATEGIES.values()))
    elif form != "default":
        optimizer[learning_rate_key] = draw(learning_rates)
    if form == "decay":
        optimizer["decay"] = draw(floats(0, 1))
    clipping = draw(st.sampled_from([None, "clipnorm", "global_clipnorm"]))
    if clipping is not None:
        optimizer[clipping] = draw(positive)
    if type_name in {"SGD", "RMSprop"}:
        optimizer["momentum"] = draw(rates)
    if type_name in {"Adam", "AdamW", "Adamax", "Nadam"}:
        optimizer["beta_1"] = draw(rates)
    return optimizer


job_specs = fields(
    {
        "dataset": fields(
            {"name": st.sampled_from(["digits", "mnist", "fashion_mnist"])},
            {
                "preprocessing": st.sampled_from(["none", "scale", "standardize"]),
                "one_hot": st.booleans(),
                "limit": st.integers(1, 10_000),
            },
        ),
        "model": fields(
            {
                "input_shape": st.lists(st.integers(1, 64), min_size=1, max_size=4),
                "layers": st.lists(
                    st.one_of(*LAYER_STRATEGIES.values()), min_size=1, max_size=8
                ).map(uniquely_named),
            },
            {},
        ),
        "compile": fields(
            {"loss": st.sampled_from(get_args(LossName))},
            {
                "optimizer": optimizers(),
                "metrics": st.lists(st.sampled_from(get_args(MetricName)), max_size=4),
            },
        ),
        "fit": fields(
            {"epochs": st.integers(1, 10_000)},
            {
                "batch_size": st.integers(1, 65_536),
                "validation_split": rates,
                "shuffle": st.booleans(),
                "early_stopping": st.none()
                | fields(
                    {},
                    {
                        "monitor": st.sampled_from(["val_loss", "loss", "val_accuracy"]),
                        "patience": st.integers(0, 100),
                        "min_delta": floats(0, 1),
                        "restore_best_weights": st.booleans(),
                    },
                ),
            },
        ),
    },
    {
        # Any text but control characters (PostgreSQL cannot store NUL).
        "name": st.text(st.characters(blacklist_categories=["Cc"]), min_size=1, max_size=200),
        "kind": st.just("train"),
        "seed": st.none() | seeds,
    },
)


class TestRoundTrip:
    def test_strategies_cover_every_layer_and_schedule_type(self) -> None:
        assert set(LAYER_STRATEGIES) == set(LAYER_TYPES)
        assert set(SCHEDULE_STRATEGIES) == set(union_types(ScheduleSpec))

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
    @given(document=job_specs)
    def test_every_valid_spec_survives_json_and_the_stored_form(
        self, document: dict[str, Any]
    ) -> None:
        spec = job_spec_adapter.validate_python(document)
        assert job_spec_adapter.validate_json(spec.model_dump_json()) == spec
        # What the API stores on the row and the worker reads back.
        stored = json.loads(json.dumps(spec.model_dump(mode="json")))
        assert job_spec_adapter.validate_python(stored) == spec


class TestKeras2Spellings:
    @pytest.mark.parametrize("type_name", sorted(OPTIMIZER_TYPES))
    def test_lr_is_an_alias_of_learning_rate(self, type_name: str) -> None:
        compiled = CompileSpec.model_validate(
            {"loss": "mse", "optimizer": {"type": type_name, "lr": 0.25}}
        )
        assert compiled.optimizer.learning_rate == 0.25
        assert compiled.optimizer.to_keras()["config"]["learning_rate"] == 0.25

    @pytest.mark.parametrize("shorthand", ["adam", "Adam", "ADAM"])
    def test_optimizer_shorthand_is_the_default_optimizer(self, shorthand: str) -> None:
        compiled = CompileSpec.model_validate({"loss": "mse", "optimizer": shorthand})
        assert compiled.optimizer == Adam(type="Adam")
        assert compiled.optimizer == CompileSpec.model_validate({"loss": "mse"}).optimizer

    def test_every_optimizer_has_a_shorthand(self) -> None:
        assert set(OPTIMIZER_SHORTHANDS.values()) == set(OPTIMIZER_TYPES)
        for shorthand, type_name in OPTIMIZER_SHORTHANDS.items():
            compiled = CompileSpec.model_validate({"loss": "mse", "optimizer": shorthand})
            assert compiled.optimizer.type == type_name

    def test_unknown_shorthand_lists_the_known_ones(self) -> None:
        with pytest.raises(ValidationError) as raised:
            CompileSpec.model_validate({"loss": "mse", "optimizer": "lion"})
        (error,) = raised.value.errors()
        assert error["loc"] == ("optimizer",)
        assert "adam" in error["msg"]
        assert "sgd" in error["msg"]

    def test_decay_becomes_inverse_time_decay(self) -> None:
        spec = SGD.model_validate({"type": "SGD", "lr": 0.1, "decay": 1e-4, "momentum": 0.9})
        assert spec.to_keras() == {
            "class_name": "SGD",
            "config": {
                "learning_rate": {
                    "class_name": "InverseTimeDecay",
                    "config": {
                        "initial_learning_rate": 0.1,
                        "decay_steps": 1,
                        "decay_rate": 1e-4,
                    },
                    "module": "keras.optimizers.schedules",
                },
                "momentum": 0.9,
                "nesterov": False,
            },
        }

    def test_no_decay_keeps_a_constant_learning_rate(self) -> None:
        config = SGD.model_validate({"type": "SGD", "lr": 0.1})
        assert config.to_keras()["config"]["learning_rate"] == 0.1
        assert "decay" not in config.to_keras()["config"]


def _job(**changes: Any) -> dict[str, Any]:
    return {**json.loads(json.dumps(BN_AFTER_ACTIVATION)), **changes}


class TestStrictness:
    @pytest.mark.parametrize(
        ("document", "loc"),
        [
            (_job(epochs=3), ("epochs",)),
            (_job(dataset={"name": "digits", "shuffle": True}), ("dataset", "shuffle")),
            (
                _job(model={"input_shape": [4], "layers": [{"type": "Flatten", "units": 3}]}),
                ("model", "layers", 0, "Flatten", "units"),
            ),
            (
                _job(compile={"loss": "mse", "optimizer": {"type": "SGD", "lrate": 0.1}}),
                ("compile", "optimizer", "SGD", "lrate"),
            ),
            (_job(fit={"epochs": 1, "verbose": 2}), ("fit", "verbose")),
        ],
        ids=["job", "dataset", "layer", "optimizer", "fit"],
    )
    def test_unknown_field_is_rejected_by_name(
        self, document: dict[str, Any], loc: tuple[str | int, ...]
    ) -> None:
        with pytest.raises(ValidationError) as raised:
            job_spec_adapter.validate_python(document)
        # The job kind leads the path (the union's tag); the API drops it from its 422s.
        assert [(error["loc"], error["type"]) for error in raised.value.errors()] == [
            (("train", *loc), "extra_forbidden")
        ]

    def test_validated_spec_is_frozen(self) -> None:
        spec = DatasetSpec(name="digits")
        with pytest.raises(ValidationError):
            spec.limit = 10  # type: ignore[misc]

    @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
    @pytest.mark.parametrize(
        "layer",
        [
            {
                "type": "Dense",
                "units": 2,
                "kernel_initializer": {"type": "Constant", "value": None},
            },
            {"type": "ReLU", "threshold": None},
            {
                "type": "Dense",
                "units": 2,
                "bias_initializer": {"type": "RandomNormal", "mean": None},
            },
        ],
        ids=["constant", "relu-threshold", "normal-mean"],
    )
    def test_non_finite_numbers_are_rejected(self, layer: dict[str, Any], value: float) -> None:
        # JSON cannot carry them: a stored spec would come back with null in their place.
        document = json.loads(json.dumps(layer).replace("null", json.dumps(value)))
        with pytest.raises(ValidationError) as raised:
            job_spec_adapter.validate_python(_job(model={"input_shape": [2], "layers": [document]}))
        assert "finite_number" in {error["type"] for error in raised.value.errors()}

    def test_clipnorm_and_global_clipnorm_are_exclusive(self) -> None:
        with pytest.raises(ValidationError, match="at most one of clipnorm and global_clipnorm"):
            SGD.model_validate({"type": "SGD", "clipnorm": 1.0, "global_clipnorm": 1.0})
        assert SGD.model_validate({"type": "SGD", "global_clipnorm": 1.0}).global_clipnorm == 1.0


def test_resources_default_to_one_cpu_and_refuse_gpu_fields_without_a_gpu() -> None:
    assert ResourcesSpec().device_count == 1
    assert ResourcesSpec(accelerator="gpu").device_count == 1
    assert ResourcesSpec(accelerator="gpu", gpus=4).device_count == 4
    with pytest.raises(ValidationError, match='gpus and gpu_type need accelerator "gpu"'):
        ResourcesSpec(gpus=2)
    with pytest.raises(ValidationError, match="gpu_type"):
        ResourcesSpec(accelerator="gpu", gpu_type="H200 SXM")
    with pytest.raises(ValidationError, match="less than or equal to 16"):
        ResourcesSpec(accelerator="gpu", gpus=17)
