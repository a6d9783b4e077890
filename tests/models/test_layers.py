"""The layer registry in ``models.spec.layers`` apart from Keras building: default names,
Keras's snake case, and the shape rules as upload inspection reads them from saved configs
(with unknown dimensions, and with values netkiln's spec would refuse)."""

from __future__ import annotations

from typing import Any

import pytest
from keras.src.utils.naming import to_snake_case

from models.spec.base import InitializerObject, RandomNormal, StrictModel, tagged_members
from models.spec.layers import (
    LAYER_CLASSES,
    SHAPE_PRESERVING_KERAS_LAYERS,
    PartialShape,
    expand_layers,
    keras_output_shape,
    keras_snake_case,
)
from uploads.keras_names import KERAS_LAYERS

#: Default-name stems as netkiln has always written them: a transfer job's ``cut`` names
#: layers by them, so they may not change.
NAME_STEMS = {
    "Dense": "dense",
    "Flatten": "flatten",
    "Reshape": "reshape",
    "BatchNormalization": "batch_normalization",
    "LayerNormalization": "layer_normalization",
    "Activation": "activation",
    "LeakyReLU": "leaky_relu",
    "PReLU": "prelu",
    "ELU": "elu",
    "ReLU": "relu",
    "Softmax": "softmax",
    "Dropout": "dropout",
    "AlphaDropout": "alpha_dropout",
    "GaussianDropout": "gaussian_dropout",
    "GaussianNoise": "gaussian_noise",
    "RReLU": "rrelu",
    "MCDropout": "mc_dropout",
}


class TestNames:
    def test_every_layer_type_has_its_stem(self) -> None:
        assert set(NAME_STEMS) == set(LAYER_CLASSES)

    def test_default_names_are_stem_and_position(self) -> None:
        # Unvalidated specs: only their type matters to a name.
        layers = [LAYER_CLASSES[name].model_construct(type=name) for name in NAME_STEMS]
        assert [layer.name for layer in expand_layers(layers)] == [
            f"{stem}_{position}" for position, stem in enumerate(NAME_STEMS.values())
        ]

    @pytest.mark.parametrize("type_name", sorted(LAYER_CLASSES))
    def test_a_stem_is_set_only_where_keras_would_split_an_acronym(self, type_name: str) -> None:
        spec_class = LAYER_CLASSES[type_name]
        if spec_class.name_stem is None:
            assert keras_snake_case(type_name) == NAME_STEMS[type_name]
        else:
            assert keras_snake_case(type_name) != spec_class.name_stem

    def test_name_stem_is_not_a_spec_field(self) -> None:
        assert "name_stem" not in LAYER_CLASSES["PReLU"].model_fields

    def test_snake_case_is_keras_own(self) -> None:
        names = sorted(KERAS_LAYERS | set(LAYER_CLASSES) | {"netkiln>RReLU"})
        assert [keras_snake_case(name) for name in names] == [to_snake_case(n) for n in names]


class TestRegistry:
    def test_spec_less_layers_are_not_spec_types(self) -> None:
        assert not SHAPE_PRESERVING_KERAS_LAYERS & set(LAYER_CLASSES)

    def test_tags_index_their_classes(self) -> None:
        members = tagged_members(InitializerObject, StrictModel)
        assert members["RandomNormal"] is members["TruncatedNormal"] is RandomNormal

    def test_a_union_of_other_classes_is_refused(self) -> None:
        with pytest.raises(TypeError, match="VarianceScaling is not a Dense"):
            tagged_members(InitializerObject, LAYER_CLASSES["Dense"])


#: (class name, Keras config, input shape, output shape), no batch axes.
SAVED_LAYERS: dict[str, tuple[str, dict[str, Any], PartialShape, PartialShape | None]] = {
    "dense-unknown-steps": ("Dense", {"units": 3}, (None, 5), (None, 3)),
    "dense-beyond-spec-limits": ("Dense", {"units": 100_000}, (5,), (100_000,)),
    "flatten-known": ("Flatten", {}, (2, 3), (6,)),
    "flatten-unknown": ("Flatten", {}, (None, 3), (None,)),
    "reshape-inferred": ("Reshape", {"target_shape": [-1, 2]}, (3, 4), (6, 2)),
    "reshape-unknown": ("Reshape", {"target_shape": [-1, 2]}, (None, 4), (None, 2)),
    "reshape-rank-5": ("Reshape", {"target_shape": [1, 1, 1, 1, 6]}, (6,), (1, 1, 1, 1, 6)),
    "shape-preserving-spec": ("LayerNormalization", {"axis": [1, 2]}, (None, 4), (None, 4)),
    "shape-preserving-keras": ("UnitNormalization", {}, (None, 4), (None, 4)),
    "netkiln-layer": ("RReLU", {"lower": 0.1}, (None, 4), (None, 4)),
}
#: Configs no rule can read, and layers no rule knows: the shape is left unknown.
UNREADABLE: dict[str, tuple[str, dict[str, Any]]] = {
    "dense-no-units": ("Dense", {}),
    "dense-units-text": ("Dense", {"units": "3"}),
    "dense-units-bool": ("Dense", {"units": True}),
    "reshape-target-text": ("Reshape", {"target_shape": "2,2"}),
    "reshape-target-none": ("Reshape", {"target_shape": [None, 2]}),
    "reshape-size": ("Reshape", {"target_shape": [5]}),
    "reshape-two-unknowns": ("Reshape", {"target_shape": [-1, -1]}),
    "unknown-layer": ("Conv2D", {"filters": 3}),
}


@pytest.mark.parametrize(
    ("class_name", "config", "shape", "expected"), SAVED_LAYERS.values(), ids=SAVED_LAYERS.keys()
)
def test_saved_layer_shapes(
    class_name: str, config: dict[str, Any], shape: PartialShape, expected: PartialShape
) -> None:
    assert keras_output_shape(class_name, config, shape) == expected


@pytest.mark.parametrize(("class_name", "config"), UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_saved_layers_have_no_shape(class_name: str, config: dict[str, Any]) -> None:
    assert keras_output_shape(class_name, config, (3, 4)) is None
