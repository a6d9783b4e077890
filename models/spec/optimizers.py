"""Optimizer specs: Keras's optimizer classes with their own argument names.

Two Keras 2 spellings from the seed notebook are accepted so its cells paste as they are:
``lr`` (an alias of ``learning_rate``) and ``decay`` (the time-based rule
``lr / (1 + decay * iterations)``, which Keras 3 expresses as ``InverseTimeDecay``).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AliasChoices, BeforeValidator, Field, model_validator

from models.spec.base import StrictModel, keras_config, tagged_members
from models.spec.schedules import ScheduleSpec

LearningRate = Annotated[float, Field(gt=0, le=10)] | ScheduleSpec
Beta = Annotated[float, Field(ge=0, lt=1)]


class OptimizerBase(StrictModel):
    learning_rate: LearningRate = Field(
        default=0.001, validation_alias=AliasChoices("learning_rate", "lr")
    )
    decay: float = Field(
        default=0.0, ge=0, description="Keras 2 time-based decay: lr / (1 + decay * iteration)."
    )
    clipvalue: float | None = Field(default=None, gt=0)
    clipnorm: float | None = Field(default=None, gt=0)
    global_clipnorm: float | None = Field(default=None, gt=0)
    weight_decay: float | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _consistent(self) -> OptimizerBase:
        # Keras refuses clipnorm together with global_clipnorm; say so at submit time.
        if self.clipnorm is not None and self.global_clipnorm is not None:
            raise ValueError("set at most one of clipnorm and global_clipnorm")
        if self.decay and self.schedule is not None:
            raise ValueError("decay is a schedule of its own; use it or a learning_rate schedule")
        return self

    @property
    def schedule(self) -> ScheduleSpec | None:
        return None if isinstance(self.learning_rate, float) else self.learning_rate

    @property
    def initial_learning_rate(self) -> float:
        if isinstance(self.learning_rate, float):
            return self.learning_rate
        return self.learning_rate.initial_learning_rate

    def to_keras(self) -> dict[str, Any]:
        """The optimizer's Keras config. A schedule contributes only its starting rate: the
        worker's schedule callback moves the rate, so the saved optimizer stays plain."""
        config = self.model_dump(exclude={"type", "decay"}, exclude_none=True)
        config["learning_rate"] = self.initial_learning_rate
        if self.decay:
            config["learning_rate"] = keras_config(
                "InverseTimeDecay",
                {
                    "initial_learning_rate": self.initial_learning_rate,
                    "decay_steps": 1,
                    "decay_rate": self.decay,
                },
                module="keras.optimizers.schedules",
            )
        return keras_config(self.type_name(), config)

    def type_name(self) -> str:
        return str(getattr(self, "type"))  # noqa: B009 - every subclass declares it


class SGD(OptimizerBase):
    type: Literal["SGD"]
    learning_rate: LearningRate = Field(
        default=0.01, validation_alias=AliasChoices("learning_rate", "lr")
    )
    momentum: float = Field(default=0.0, ge=0, lt=1)
    nesterov: bool = False


class Adagrad(OptimizerBase):
    type: Literal["Adagrad"]
    initial_accumulator_value: float = Field(default=0.1, ge=0)
    epsilon: float = Field(default=1e-7, gt=0)


class RMSprop(OptimizerBase):
    type: Literal["RMSprop"]
    rho: Beta = 0.9
    momentum: float = Field(default=0.0, ge=0, lt=1)
    epsilon: float = Field(default=1e-7, gt=0)
    centered: bool = False


class Adam(OptimizerBase):
    type: Literal["Adam"]
    beta_1: Beta = 0.9
    beta_2: Beta = 0.999
    epsilon: float = Field(default=1e-7, gt=0)
    amsgrad: bool = False


class AdamW(OptimizerBase):
    type: Literal["AdamW"]
    weight_decay: float | None = Field(default=0.004, ge=0)
    beta_1: Beta = 0.9
    beta_2: Beta = 0.999
    epsilon: float = Field(default=1e-7, gt=0)
    amsgrad: bool = False


class Adamax(OptimizerBase):
    type: Literal["Adamax"]
    beta_1: Beta = 0.9
    beta_2: Beta = 0.999
    epsilon: float = Field(default=1e-7, gt=0)


class Nadam(OptimizerBase):
    type: Literal["Nadam"]
    beta_1: Beta = 0.9
    beta_2: Beta = 0.999
    epsilon: float = Field(default=1e-7, gt=0)


OptimizerSpec = Annotated[
    SGD | Adagrad | RMSprop | Adam | AdamW | Adamax | Nadam, Field(discriminator="type")
]

#: Lower-case names (``"adam"``) accepted where an optimizer object is expected.
OPTIMIZER_SHORTHANDS = {name.lower(): name for name in tagged_members(OptimizerSpec, OptimizerBase)}


def _expand_shorthand(value: Any) -> Any:
    # "adam" is Keras's own shorthand for Adam() with defaults.
    if isinstance(value, str):
        type_name = OPTIMIZER_SHORTHANDS.get(value.lower())
        if type_name is None:
            known = ", ".join(sorted(OPTIMIZER_SHORTHANDS))
            raise ValueError(f"unknown optimizer {value!r}; expected one of {known}")
        return {"type": type_name}
    return value


#: An optimizer object, or Keras's lower-case shorthand for one with defaults.
Optimizer = Annotated[OptimizerSpec, BeforeValidator(_expand_shorthand)]
