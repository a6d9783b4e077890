"""Output shapes of uploaded Sequential models, by the layer specs' shape rules, against
what Keras reports for the saved model: also where a dimension is unknown, and for netkiln's
own layers."""

from __future__ import annotations

import json
import zipfile
from collections.abc import Callable
from pathlib import Path

import h5py
import keras
import numpy as np
import pytest

from uploads.archives import InvalidUpload
from uploads.keras_names import NETKILN_OBJECTS
from uploads.model_files import (
    MAX_CONFIG_BYTES,
    NETKILN_PREFIX,
    ModelFormat,
    check_objects,
    inspect_model_file,
)
from worker.build.custom_layers import MCDropout, RReLU

MAX_EXPANDED = 64 * 1024 * 1024


def variable_length() -> keras.Model:
    """Sequences of any length: every shape has an unknown axis after the batch axis."""
    return keras.Sequential(
        [
            keras.Input((None, 6)),
            keras.layers.Dense(4),
            keras.layers.Reshape((-1, 2)),
            keras.layers.LayerNormalization(),
            keras.layers.SpatialDropout1D(0.1),
            keras.layers.Flatten(),
        ]
    )


def netkiln_layers() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((3, 4)),
            RReLU(),
            keras.layers.Reshape((-1,)),
            MCDropout(0.1),
            keras.layers.Dense(2),
            keras.layers.Softmax(),
        ]
    )


@pytest.mark.parametrize("format", ["keras", "h5"])
@pytest.mark.parametrize("build", [variable_length, netkiln_layers])
def test_output_shapes_are_keras_own(
    tmp_path: Path, build: Callable[[], keras.Model], format: ModelFormat
) -> None:
    model = build()
    path = tmp_path / f"model.{format}"
    model.save(path)

    summary = inspect_model_file(path, format, tmp_path, MAX_EXPANDED)

    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    rows = [row for row in summary.layers if row.type != "InputLayer"]
    assert [row.output_shape for row in rows] == [list(layer.output.shape) for layer in layers]


def _dense(**claims: object) -> dict[str, object]:
    """A Dense layer's config entry, with ``claims`` (module, class_name, registered_name)."""
    entry: dict[str, object] = {
        "module": "keras.layers",
        "class_name": "Dense",
        "config": {"name": "d", "units": 2},
        "registered_name": None,
    }
    return {**entry, **claims}


def _model(*layers: dict[str, object]) -> dict[str, object]:
    return {
        "module": "keras",
        "class_name": "Sequential",
        "config": {"name": "m", "layers": list(layers)},
        "registered_name": None,
    }


class TestObjectsAreHeldToTheAllowList:
    """Names prove nothing: a config says which module Keras imports and what it calls."""

    @pytest.mark.parametrize(
        ("claims", "says"),
        [
            # registered_name used to skip every check: on a worker where it is not
            # registered, Keras imports the module instead.
            (
                {"module": "os", "class_name": "system", "registered_name": "netkiln>system"},
                "not one of netkiln's layers",
            ),
            (
                {
                    "module": "evil.layers",
                    "class_name": "RReLU",
                    "registered_name": "netkiln>RReLU",
                },
                "not one of netkiln's layers",
            ),
            (
                {
                    "module": "worker.build.custom_layers",
                    "class_name": "RReLU",
                    "registered_name": "netkiln>MCDropout",
                },
                "not one of netkiln's layers",
            ),
            (
                {"module": None, "class_name": "netkiln>Popen", "registered_name": None},
                "not one of netkiln's layers",
            ),
            ({"module": "keras.src.utils.file_utils", "class_name": "get_file"}, "custom object"),
            (
                {"module": "keras.layers", "class_name": "Dense", "registered_name": "Popen"},
                "custom object",
            ),
            (
                {
                    "module": "keras.src.utils.io_utils",
                    "class_name": "function",
                    "config": "print_msg",
                },
                "custom object",
            ),
            ({"module": "kerasx", "class_name": "Dense"}, "custom object"),
        ],
    )
    def test_refused(self, claims: dict[str, object], says: str) -> None:
        with pytest.raises(InvalidUpload, match=says):
            check_objects(_model(_dense(**claims)))

    @pytest.mark.parametrize(
        "claims",
        [
            {},
            {
                "module": "worker.build.custom_layers",
                "class_name": "RReLU",
                "registered_name": "netkiln>RReLU",
            },
            {"module": None, "class_name": "netkiln>MCDropout", "registered_name": None},
            {
                "module": "keras.activations",
                "class_name": "function",
                "config": "relu",
                "registered_name": "relu",
            },
        ],
    )
    def test_accepted(self, claims: dict[str, object]) -> None:
        check_objects(_model(_dense(**claims)))


def test_netkiln_objects_are_what_the_worker_registers() -> None:
    import worker.build.autoencoder  # noqa: F401  (registers TiedAutoencoder)

    registered = {
        (type_.__module__, type_.__name__)
        for name, type_ in keras.saving.get_custom_objects().items()
        if name.startswith(NETKILN_PREFIX)
    }
    assert registered == NETKILN_OBJECTS


def _tiny(path: Path) -> Path:
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, name="d")])
    model.save(path)
    return path


class TestSizesComeFromTheConfigToo:
    def test_a_config_asking_for_more_than_its_weights_is_refused(self, tmp_path: Path) -> None:
        """6 KB on disk, 16M units once Keras builds it from the config."""
        source = _tiny(tmp_path / "tiny.keras")
        with zipfile.ZipFile(source) as original:
            config = json.loads(original.read("config.json"))
            members = {info.filename: original.read(info) for info in original.infolist()}
        config["config"]["layers"][-1]["config"]["units"] = 16_000_000
        members["config.json"] = json.dumps(config).encode()
        crafted = tmp_path / "crafted.keras"
        with zipfile.ZipFile(crafted, "w") as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        with pytest.raises(InvalidUpload, match="units 16000000 is past"):
            inspect_model_file(crafted, "keras", tmp_path, 1 << 30)

    def test_an_h5_config_past_the_cap_is_refused_before_it_is_read(self, tmp_path: Path) -> None:
        path = _tiny(tmp_path / "tiny.h5")
        with h5py.File(path, "a") as h5:
            h5.attrs["model_config"] = json.dumps({"padding": "x" * (MAX_CONFIG_BYTES + 1)})
        with pytest.raises(InvalidUpload, match="model_config is larger than"):
            inspect_model_file(path, "h5", tmp_path, 1 << 30)


class TestWeightsThatReadOtherFiles:
    @pytest.mark.parametrize("how", ["external", "virtual"])
    def test_refused(self, tmp_path: Path, how: str) -> None:
        secret = tmp_path / "secret.bin"
        secret.write_bytes(np.arange(8, dtype=np.float32).tobytes())
        path = _tiny(tmp_path / "tiny.h5")
        with h5py.File(path, "a") as h5:
            group = h5["model_weights"]["d"]
            if how == "external":
                group.create_dataset(
                    "stolen", shape=(8,), dtype="f4", external=[(str(secret), 0, 32)]
                )
            else:
                with h5py.File(tmp_path / "source.h5", "w") as source:
                    source.create_dataset("data", data=np.zeros(8, dtype="f4"))
                layout = h5py.VirtualLayout(shape=(8,), dtype="f4")
                layout[:] = h5py.VirtualSource(str(tmp_path / "source.h5"), "data", shape=(8,))
                group.create_virtual_dataset("stolen", layout)
        with pytest.raises(InvalidUpload, match="reads other files"):
            inspect_model_file(path, "h5", tmp_path, 1 << 30)


def test_damaged_h5_files_are_refused_never_raised(tmp_path: Path) -> None:
    """Bytes overwritten all through a valid .h5 model: each file is inspected or refused
    with InvalidUpload (a 4xx), never another exception (a 500); h5py raises
    RuntimeError("Link iteration failed") for some of them."""
    source = _tiny(tmp_path / "tiny.h5").read_bytes()
    damaged = tmp_path / "damaged.h5"
    outcomes = {"accepted": 0, "refused": 0}
    for offset in range(0, len(source), max(len(source) // 400, 1)):
        for byte in (0x00, 0xFF):
            data = bytearray(source)
            data[offset : offset + 4] = bytes([byte]) * len(data[offset : offset + 4])
            damaged.write_bytes(data)
            try:
                inspect_model_file(damaged, "h5", tmp_path, 1 << 30)
                outcomes["accepted"] += 1
            except InvalidUpload:
                outcomes["refused"] += 1
    assert outcomes["refused"] > 0
