"""Inspect an uploaded Keras model without Keras: nothing in it is unpickled or executed.

Two formats:

- ``.keras`` (Keras 3): a zip of ``config.json`` (the architecture), ``metadata.json`` and
  ``model.weights.h5``, where layer ``i``'s variables are the datasets
  ``layers/<snake_case class>[_n]/vars/<k>`` (the ``vars`` group names the layer);
- ``.h5`` (legacy Keras HDF5): the architecture in the root attribute ``model_config``,
  and layer ``name``'s variables under ``model_weights/<name>``, listed in order by its
  ``weight_names`` attribute.

Every object in the architecture (layers, initializers, regularizers, the compile config) must
be a Keras built-in or a netkiln layer (``registered_name`` ``netkiln>…``); a layer that
carries code (``Lambda``, ``TFSMLayer``, …), a Python lambda or any custom object is refused,
naming the layer. Parameter counts are the sizes of the weight datasets, as
``model.count_params()`` counts them; the trainable split follows each layer's
``trainable`` flag, with batch normalization's moving statistics non-trainable as in Keras.
Output shapes are computed by the shape rules of netkiln's layer specs
(``models.spec.layers.keras_output_shape``) where one applies, and left null elsewhere.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import h5py
from pydantic import BaseModel, Field

from models.spec.base import MAX_RANK
from models.spec.layers import keras_output_shape, keras_snake_case
from uploads.archives import InvalidUpload, extract_member, open_archive, read_member
from uploads.keras_names import (
    CODE_CARRYING_LAYERS,
    KERAS_FUNCTION_MODULES,
    KERAS_LAYER_ARGUMENTS,
    KERAS_LAYERS,
    KERAS_MODELS,
    KERAS_TRAINING_OBJECTS,
    NETKILN_OBJECTS,
)

ModelFormat = Literal["keras", "h5"]

#: A model's architecture (config.json, or an .h5's model_config attribute). Parsed, JSON
#: takes many times its size in memory; real configs of hundreds of layers are well below.
MAX_CONFIG_BYTES = 4 * 1024 * 1024
#: Any size a layer's config asks for (units, filters, a vocabulary, a dimension): Keras
#: allocates from the config, not from the weights file, so a few bytes could ask for GBs.
MAX_CONFIG_SIZE = 1 << 20
#: Config keys that size a layer.
SIZE_KEYS = frozenset(
    {
        "units",
        "filters",
        "output_dim",
        "input_dim",
        "num_heads",
        "key_dim",
        "value_dim",
        "max_tokens",
        "num_tokens",
        "num_bins",
        "vocabulary_size",
        "output_sequence_length",
        "embeddings_dim",
        "depth",
        "target_shape",
        "batch_shape",
        "batch_input_shape",
        "dims",
    }
)
#: Objects (groups and datasets) and nesting depth a weights file may have.
MAX_H5_OBJECTS = 1_000_000
MAX_H5_DEPTH = 32
NETKILN_PREFIX = "netkiln>"
#: Serialization markers Keras resolves without importing anything (a tuple, a tensor
#: literal, …); ``__lambda__`` (marshalled bytecode) and ``__typespec__`` are not among them.
SAFE_MARKERS = frozenset(
    {
        "__tuple__",
        "__keras_tensor__",
        "__tensor__",
        "__numpy__",
        "__bytes__",
        "__ellipsis__",
        "__slice__",
    }
)
BUILTIN_CLASSES = KERAS_LAYERS | KERAS_MODELS | KERAS_LAYER_ARGUMENTS | KERAS_TRAINING_OBJECTS
NETKILN_CLASSES = frozenset(class_name for _, class_name in NETKILN_OBJECTS)
#: Batch normalization's moving statistics: weights Keras keeps non-trainable.
MOVING_STATISTICS = ("moving_mean", "moving_variance")
#: Config keys whose values are layers: a model's layers, a wrapper's layer, an RNN's cells.
LAYER_KEYS = frozenset({"layers", "layer", "forward_layer", "backward_layer", "cell", "cells"})
#: A tensor shape with the batch axis; None where unknown.
Shape = list[int | None]


class LayerFileSummary(BaseModel):
    index: int = Field(description="Position in model.layers of the loaded model.")
    name: str
    type: str = Field(description="Keras class name.")
    output_shape: Shape | None = Field(description="null where not computed.")
    params: int
    trainable: bool


class ModelFileSummary(BaseModel):
    input_shape: Shape | None = Field(description="None is the batch axis.")
    layers: list[LayerFileSummary]
    total: int
    trainable: int
    non_trainable: int


@dataclass(frozen=True)
class Counts:
    total: int
    non_trainable: int


def inspect_model_file(
    path: Path, format: ModelFormat, workdir: Path, max_expanded: int
) -> ModelFileSummary:
    """``InvalidUpload`` (saying why) unless ``path`` is a model netkiln accepts."""
    if format == "keras":
        return _inspect_keras(path, workdir, max_expanded)
    return _inspect_h5(path)


# --- .keras ------------------------------------------------------------------------------


def _inspect_keras(path: Path, workdir: Path, max_expanded: int) -> ModelFileSummary:
    what = ".keras file"
    with open_archive(path, what, max_expanded) as archive:
        names = set(archive.namelist())
        for required in ("config.json", "model.weights.h5"):
            if required not in names:
                raise InvalidUpload(f"the {what} has no {required}")
        config = _parse_json(read_member(archive, "config.json", what, MAX_CONFIG_BYTES))
        check_objects(config)
        entries = _model_layers(config)
        weights_path = extract_member(
            archive, "model.weights.h5", what, workdir / "model.weights.h5"
        )
    with _open_h5(weights_path, "model.weights.h5") as weights:
        layers_group = _child_group(weights, "layers")
        counts = _keras_counts(entries, layers_group, _is_sequential(config))
    return _summary(config, entries, counts)


def _keras_counts(
    entries: list[dict[str, Any]], layers_group: h5py.Group | None, sequential: bool
) -> list[Counts]:
    groups = _keras_layer_groups(entries, layers_group, sequential)
    counts = []
    for entry, group in zip(entries, groups, strict=True):
        config = entry["config"]
        if entry["class_name"] in KERAS_MODELS:
            inner = _keras_counts(
                _layer_list(config, entry["config"]["name"]),
                _child_group(group, "layers"),
                entry["class_name"] == "Sequential",
            )
            total = sum(item.total for item in inner)
            count = Counts(total, sum(item.non_trainable for item in inner))
        else:
            count = _keras_leaf_counts(entry, group) if group is not None else Counts(0, 0)
        counts.append(count if config.get("trainable", True) else Counts(count.total, count.total))
    return counts


def _keras_layer_groups(
    entries: list[dict[str, Any]], layers_group: h5py.Group | None, sequential: bool
) -> list[h5py.Group | None]:
    """Each layer's weights group: found by the layer name its ``vars`` group records, or
    else by Keras's naming of ``model.layers`` (snake-case class name, ``_n`` for the
    n-th repeat; a Sequential's layers exclude its InputLayer)."""
    if layers_group is None:
        return [None] * len(entries)
    by_name: dict[str, h5py.Group] = {}
    for key in _keys(layers_group):
        group = _child_group(layers_group, key)
        variables = _child_group(group, "vars")
        if variables is not None and isinstance(name := variables.attrs.get("name"), str):
            by_name[name] = group
    used: dict[str, int] = {}
    groups: list[h5py.Group | None] = []
    for entry in entries:
        if sequential and entry["class_name"] == "InputLayer":
            groups.append(None)
            continue
        key = keras_snake_case(entry["class_name"])
        if key in used:
            used[key] += 1
            key = f"{key}_{used[key]}"
        else:
            used[key] = 0
        group = by_name.get(entry["config"]["name"])
        groups.append(group if group is not None else _child_group(layers_group, key))
    return groups


def _keras_leaf_counts(entry: dict[str, Any], group: h5py.Group) -> Counts:
    """A layer's weights, its wrapped layers' (``TimeDistributed``, ``Bidirectional``, an
    RNN's cell) included: each ``vars`` group names the layer whose variables it holds."""
    types = _layer_types(entry)
    variables: dict[str, dict[str, int]] = {}
    total = 0
    for path, size in _datasets(group):
        total += size
        parent, _, key = path.rpartition("/")
        if parent.rpartition("/")[2] == "vars":
            variables.setdefault(parent, {})[key] = size
    non_trainable = 0
    for parent, sizes in variables.items():
        holder = _child_group(group, parent)
        name = holder.attrs.get("name") if holder is not None else None
        if isinstance(name, str):
            layer_type = types.get(name, "")
        else:
            layer_type = _layer_type(entry) if parent == "vars" else ""
        ordered = [sizes[key] for key in sorted(sizes, key=lambda key: (len(key), key))]
        non_trainable += _non_trainable(layer_type, ordered)
    return Counts(total, non_trainable)


def _layer_types(entry: dict[str, Any]) -> dict[str, str]:
    """Layer name → class name, for ``entry`` and every layer its config nests."""
    types: dict[str, str] = {}
    stack: list[Any] = [entry]
    while stack:
        node = stack.pop()
        if isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, dict):
            inner = node.get("config")
            if isinstance(node.get("class_name"), str) and isinstance(inner, dict):
                name = inner.get("name")
                if isinstance(name, str):
                    types.setdefault(name, _layer_type(node))
            stack.extend(node.values())
    return types


# --- legacy .h5 --------------------------------------------------------------------------


def _inspect_h5(path: Path) -> ModelFileSummary:
    with _open_h5(path, ".h5 file") as h5:
        raw = h5.attrs.get("model_config")
        if raw is None:
            raise InvalidUpload(
                "the .h5 file has no model_config: it holds weights only; save the whole "
                "model (model.save('model.h5'))"
            )
        # Read, a string is its size; parsed, JSON takes many times that.
        if len(raw) > MAX_CONFIG_BYTES:
            raise InvalidUpload(
                f"the .h5 file's model_config is larger than {MAX_CONFIG_BYTES} bytes"
            )
        config = _parse_json(raw)
        check_objects(config)
        training = h5.attrs.get("training_config")
        if training is not None and len(training) > MAX_CONFIG_BYTES:
            raise InvalidUpload(
                f"the .h5 file's training_config is larger than {MAX_CONFIG_BYTES} bytes"
            )
        if training is not None:
            check_objects(_parse_json(training))
        entries = _model_layers(config)
        weights = _child_group(h5, "model_weights")
        counts = [_h5_counts(entry, weights) for entry in entries]
    return _summary(config, entries, counts)


def _h5_counts(entry: dict[str, Any], weights: h5py.Group | None) -> Counts:
    layer_name = entry["config"]["name"]
    if "/" in layer_name or layer_name in {"", ".", ".."}:
        raise InvalidUpload(f"the .h5 file names a layer {layer_name!r}")
    group = _child_group(weights, layer_name)
    if group is None:
        return Counts(0, 0)
    sizes = dict(_datasets(group))
    names = [
        name.decode() if isinstance(name, bytes) else str(name)
        for name in group.attrs.get("weight_names", [])
    ]
    missing = [name for name in names if name not in sizes]
    if missing:
        raise InvalidUpload(
            f"the .h5 file lacks weights {missing[:3]} of layer {entry['config']['name']!r}"
        )
    total = sum(sizes[name] for name in names)
    if not entry["config"].get("trainable", True) or _layer_type(entry) == "Normalization":
        return Counts(total, total)
    # Weight names say whose they are, also inside wrappers and nested models.
    return Counts(total, sum(sizes[name] for name in names if name.endswith(MOVING_STATISTICS)))


# --- both formats ------------------------------------------------------------------------


def check_objects(config: Any) -> None:
    """Refuse any object Keras would resolve to something other than a built-in class or a
    netkiln layer, naming the layer it belongs to."""
    stack: list[tuple[Any, str | None, bool]] = [(config, None, False)]
    while stack:
        node, owner, is_layer = stack.pop()
        if isinstance(node, list):
            stack.extend((item, owner, is_layer) for item in node)
        elif isinstance(node, dict):
            if "class_name" in node:
                owner = _check_object(node, owner, is_layer)
                _check_sizes(node.get("config"), owner)
            elif _is_dumped_function(node):
                raise InvalidUpload(
                    f"{_where(owner)}: holds a Python function as bytecode (a lambda "
                    "activation?); it is not accepted"
                )
            stack.extend((value, owner, key in LAYER_KEYS) for key, value in node.items())


def _is_dumped_function(node: Mapping[str, Any]) -> bool:
    """Keras saves a lambda activation as ``{"value": [<base64 bytecode>, defaults,
    closure]}``, without a class name."""
    value = node.get("value")
    return isinstance(value, list) and len(value) == 3 and isinstance(value[0], str)


def _check_object(node: Mapping[str, Any], owner: str | None, is_layer: bool) -> str | None:
    """Allowed: a Keras built-in class from a Keras module, a plain function from one of
    Keras's function modules, one of netkiln's classes exactly as it registers them, and
    Keras's safe serialization markers. Names alone prove nothing: a ``registered_name`` is
    only honoured where it matches the module and class it claims."""
    class_name = node["class_name"]
    if not isinstance(class_name, str):
        raise InvalidUpload(f"{_where(owner)}: malformed object (class_name {class_name!r})")
    inner = node.get("config")
    name = inner.get("name") if isinstance(inner, dict) else None
    if is_layer and isinstance(name, str):
        owner = f'layer "{name}" ({class_name.removeprefix(NETKILN_PREFIX)})'
    if class_name in CODE_CARRYING_LAYERS or class_name == "__lambda__":
        raise InvalidUpload(
            f"{_where(owner)}: {class_name} carries executable code; it is not accepted"
        )
    module, registered = node.get("module"), node.get("registered_name")
    if _claims_netkiln(class_name, registered):
        if not _is_netkiln_object(class_name, module, registered):
            raise InvalidUpload(
                f"{_where(owner)}: {class_name} (module {module!r}, registered as "
                f"{registered!r}) is not one of netkiln's layers; it is not accepted"
            )
        return owner
    if class_name.startswith("__"):
        if class_name not in SAFE_MARKERS:
            raise InvalidUpload(f"{_where(owner)}: {class_name} objects are not accepted")
        return owner
    if not _is_builtin(class_name, module, inner, registered):
        origin = f" from module {module!r}" if module is not None else ""
        shown = f"function {inner!r}" if class_name == "function" else class_name
        raise InvalidUpload(
            f"{_where(owner)}: {shown}{origin} is a custom object; only Keras built-ins "
            "and netkiln layers are accepted"
        )
    return owner


def _check_sizes(config: object, owner: str | None) -> None:
    if not isinstance(config, dict):
        return
    for key in SIZE_KEYS & config.keys():
        value = config[key]
        sizes = value if isinstance(value, list) else [value]
        if len(sizes) > 2 * MAX_RANK or any(
            isinstance(size, int) and not isinstance(size, bool) and size > MAX_CONFIG_SIZE
            for size in sizes
        ):
            raise InvalidUpload(
                f"{_where(owner)}: {key} {value!r} is past what netkiln accepts "
                f"(at most {2 * MAX_RANK} dimensions of at most {MAX_CONFIG_SIZE:,})"
            )


def _claims_netkiln(class_name: str, registered: object) -> bool:
    return class_name.startswith(NETKILN_PREFIX) or (
        isinstance(registered, str) and registered.startswith(NETKILN_PREFIX)
    )


def _is_netkiln_object(class_name: str, module: object, registered: object) -> bool:
    if class_name.startswith(NETKILN_PREFIX):
        # Legacy .h5: the registered name stands in for the class, with no module.
        bare = class_name.removeprefix(NETKILN_PREFIX)
        return module is None and registered in (None, class_name) and bare in NETKILN_CLASSES
    return registered == NETKILN_PREFIX + class_name and (module, class_name) in NETKILN_OBJECTS


def _is_builtin(class_name: str, module: object, inner: object, registered: object) -> bool:
    if registered is not None and registered != class_name and class_name != "function":
        return False  # a built-in registers under its own name, if at all
    if module is None:
        # Legacy configs name built-ins by class alone.
        return class_name in BUILTIN_CLASSES
    if not isinstance(module, str) or not (module == "keras" or module.startswith("keras.")):
        return False
    if class_name == "function":
        return module in KERAS_FUNCTION_MODULES and isinstance(inner, str) and inner.isidentifier()
    return class_name in BUILTIN_CLASSES


def _where(owner: str | None) -> str:
    return owner or "the model config"


def _parse_json(raw: object) -> Any:
    if not isinstance(raw, bytes | str):
        raise InvalidUpload("the model config is not a JSON string")
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidUpload(f"the model config is not valid JSON: {exc}") from exc


def _is_sequential(config: dict[str, Any]) -> bool:
    return config["class_name"] == "Sequential"


def _model_layers(config: Any) -> list[dict[str, Any]]:
    if not isinstance(config, dict) or config.get("class_name") not in KERAS_MODELS:
        kind = config.get("class_name") if isinstance(config, dict) else type(config).__name__
        raise InvalidUpload(f"the file holds a {kind}, not a Sequential or Functional model")
    inner = config.get("config")
    if not isinstance(inner, dict):
        raise InvalidUpload("the model config has no layers")
    return _layer_list(inner, "the model")


def _layer_list(inner: dict[str, Any], owner: str) -> list[dict[str, Any]]:
    layers = inner.get("layers")
    if not isinstance(layers, list) or not layers:
        raise InvalidUpload(f"{owner} has no layers in its config")
    for index, entry in enumerate(layers):
        if not (
            isinstance(entry, dict)
            and isinstance(entry.get("class_name"), str)
            and isinstance(entry.get("config"), dict)
            and isinstance(entry["config"].get("name"), str)
        ):
            raise InvalidUpload(f"layer {index} of {owner} is malformed in the config")
    return layers


def _layer_type(entry: dict[str, Any]) -> str:
    class_name: str = entry["class_name"]
    return class_name.removeprefix(NETKILN_PREFIX)


def _non_trainable(layer_type: str, sizes: list[int]) -> int:
    """Weights Keras creates non-trainable in a trainable layer."""
    if layer_type == "BatchNormalization":
        return sum(sizes[-2:])  # moving mean and variance, after gamma and beta
    if layer_type == "Normalization":
        return sum(sizes)
    return 0


def _summary(
    config: dict[str, Any], entries: list[dict[str, Any]], counts: list[Counts]
) -> ModelFileSummary:
    sequential = _is_sequential(config)
    model_trainable = config["config"].get("trainable", True) is not False
    shapes = _output_shapes(entries, sequential)
    rows: list[LayerFileSummary] = []
    total = non_trainable = 0
    for entry, count, shape in zip(entries, counts, shapes, strict=True):
        layer_trainable = model_trainable and entry["config"].get("trainable", True) is not False
        total += count.total
        non_trainable += count.total if not model_trainable else count.non_trainable
        if sequential and entry["class_name"] == "InputLayer":
            continue  # not among a Sequential's model.layers
        rows.append(
            LayerFileSummary(
                index=len(rows),
                name=entry["config"]["name"],
                type=_layer_type(entry),
                output_shape=shape,
                params=count.total,
                trainable=layer_trainable,
            )
        )
    return ModelFileSummary(
        input_shape=_input_shape(config, entries),
        layers=rows,
        total=total,
        trainable=total - non_trainable,
        non_trainable=non_trainable,
    )


def _input_shape(config: dict[str, Any], entries: list[dict[str, Any]]) -> Shape | None:
    inputs = [entry for entry in entries if entry["class_name"] == "InputLayer"]
    if _is_sequential(config) and not inputs:
        return _declared_input(entries[0]["config"])  # a Keras 2 Sequential
    return _declared_input(inputs[0]["config"]) if len(inputs) == 1 else None


def _declared_input(config: dict[str, Any]) -> Shape | None:
    for key in ("batch_shape", "batch_input_shape"):
        if (shape := _shape(config.get(key))) is not None:
            return shape
    return None


def _output_shapes(entries: list[dict[str, Any]], sequential: bool) -> list[Shape | None]:
    shapes: list[Shape | None] = []
    previous: Shape | None = None
    for entry in entries:
        config = entry["config"]
        if entry["class_name"] == "InputLayer":
            shape = _declared_input(config)
        else:
            build = entry.get("build_config")
            built = _shape(build.get("input_shape")) if isinstance(build, dict) else None
            given = built or _declared_input(config) or (previous if sequential else None)
            shape = _infer(_layer_type(entry), config, given)
        shapes.append(shape)
        previous = shape
    return shapes


def _infer(layer_type: str, config: dict[str, Any], shape: Shape | None) -> Shape | None:
    if not shape:
        return None
    output = keras_output_shape(layer_type, config, tuple(shape[1:]))
    return None if output is None else [shape[0], *output]


def _shape(value: Any) -> Shape | None:
    if isinstance(value, list) and all(
        dim is None or (isinstance(dim, int) and not isinstance(dim, bool)) for dim in value
    ):
        return list(value)
    return None


# --- HDF5, read defensively --------------------------------------------------------------


@contextmanager
def _open_h5(path: Path, what: str) -> Iterator[h5py.File]:
    try:
        handle = h5py.File(path, "r")
    except (OSError, ValueError, RuntimeError) as exc:
        raise InvalidUpload(f"the {what} is not a readable HDF5 file: {exc}") from exc
    with handle:
        try:
            yield handle
        except InvalidUpload:
            raise
        # h5py raises RuntimeError too for some damage ("Link iteration failed").
        except (OSError, KeyError, TypeError, ValueError, RuntimeError) as exc:
            raise InvalidUpload(f"the {what} is damaged: {exc}") from exc


def _keys(group: h5py.Group) -> list[str]:
    try:
        return list(group.keys())
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InvalidUpload(f"the weights file is damaged: {exc}") from exc


def _child_group(group: h5py.Group | None, key: str) -> h5py.Group | None:
    """``group[key]`` if it is a group reached by a hard link; external and soft links
    (which would make HDF5 open other files) are refused."""
    if group is None:
        return None
    try:
        link = group.get(key, getlink=True)
        if link is None:
            return None
        if not isinstance(link, h5py.HardLink):
            raise InvalidUpload(f"the weights file links outside itself at {key!r}")
        child = group[key]
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise InvalidUpload(f"the weights file is damaged: {exc}") from exc
    return child if isinstance(child, h5py.Group) else None


def _datasets(group: h5py.Group) -> Iterator[tuple[str, int]]:
    """(path relative to ``group``, element count) of every dataset below it."""
    stack: list[tuple[h5py.Group, str, int]] = [(group, "", 0)]
    seen = 0
    while stack:
        current, prefix, depth = stack.pop()
        for key in _keys(current):
            seen += 1
            if seen > MAX_H5_OBJECTS or depth > MAX_H5_DEPTH:
                raise InvalidUpload("the weights file is too deeply nested or too large")
            try:
                link = current.get(key, getlink=True)
                if not isinstance(link, h5py.HardLink):
                    raise InvalidUpload(f"the weights file links outside itself at {key!r}")
                child = current[key]
                if isinstance(child, h5py.Group):
                    stack.append((child, f"{prefix}{key}/", depth + 1))
                elif isinstance(child, h5py.Dataset):
                    # Both make HDF5 read other files when the dataset is read.
                    if child.is_virtual or child.external:
                        raise InvalidUpload(
                            f"the weights file's {prefix}{key} reads other files (external "
                            "storage or a virtual dataset); it is not accepted"
                        )
                    shape = child.shape
                    yield f"{prefix}{key}", math.prod(shape) if shape is not None else 0
            except (OSError, ValueError, KeyError, RuntimeError) as exc:
                raise InvalidUpload(f"the weights file is damaged: {exc}") from exc
