"""/v1/models and /v1/datasets in process, on both backends: real tiny Keras files and
NumPy arrays are uploaded, inspected without TensorFlow in the API, and stored; every refused
upload leaves no file and no row behind."""

from __future__ import annotations

import io
import uuid
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import keras
import numpy as np
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, select

from core.storage import open_store, upload_key
from models.db import transaction
from models.tables import BaseModel, Dataset
from tests.conftest import Backend, api_client, npz
from worker.build.custom_layers import RReLU


@dataclass
class Api:
    client: TestClient
    backend: Backend

    @property
    def database_url(self) -> str:
        return str(self.backend.settings().resolved_database_url)

    def upload_model(
        self, content: bytes, filename: str = "model.keras", **form: str
    ) -> httpx.Response:
        return self.client.post("/v1/models", files={"file": (filename, content)}, data=form)

    def upload_dataset(
        self, content: bytes, filename: str = "data.npz", **form: str
    ) -> httpx.Response:
        return self.client.post("/v1/datasets", files={"file": (filename, content)}, data=form)

    def stored(self) -> tuple[set[Path], int, int]:
        """Files the store holds, and the upload rows."""
        root = self.backend.data_dir / "tenants"
        files = {path for path in root.rglob("*") if path.is_file()}
        with transaction(self.database_url) as session:
            models = session.scalar(select(func.count()).select_from(BaseModel)) or 0
            datasets = session.scalar(select(func.count()).select_from(Dataset)) or 0
        return files, int(models), int(datasets)


@pytest.fixture(scope="module")
def api(backend: Backend) -> Iterator[Api]:
    with api_client(backend.settings()) as client:
        yield Api(client, backend)
    # The PostgreSQL database outlives this module: remove the rows of its uploads.
    ours = f"{(backend.data_dir / 'tenants').resolve().as_uri()}/%"
    with transaction(str(backend.settings().resolved_database_url)) as session:
        session.execute(delete(BaseModel).where(BaseModel.uri.like(ours)))
        session.execute(delete(Dataset).where(Dataset.uri.like(ours)))


@pytest.fixture
def refused(api: Api) -> Callable[[httpx.Response, int, str], None]:
    """Check a refusal: its status and message, and that it stored nothing."""
    before = api.stored()

    def check(response: httpx.Response, status: int, message: str) -> None:
        assert response.status_code == status, response.text
        assert message in response.json()["detail"], response.json()
        assert api.stored() == before
        assert list(api.backend.settings().staging_dir.glob("*")) == []

    return check


# --- Keras files the tests make ----------------------------------------------------------


def save(model: keras.Model, folder: Path, filename: str) -> bytes:
    path = folder / filename
    model.save(path)
    return path.read_bytes()


def sequential() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((8, 8)),
            keras.layers.Flatten(),
            keras.layers.Dense(16, activation="relu", name="hidden"),
            keras.layers.BatchNormalization(),
            RReLU(name="rrelu"),
            keras.layers.Dropout(0.2),
            keras.layers.Dense(10, activation="softmax", name="out"),
        ]
    )
    model.get_layer("hidden").trainable = False
    return model


def functional() -> keras.Model:
    inputs = keras.Input((6,), name="features")
    wide = keras.layers.Dense(4, name="wide")(inputs)
    deep = keras.layers.Dense(5, activation="elu")(inputs)
    deep = keras.layers.BatchNormalization(center=False)(deep)
    deep = keras.layers.Dense(4)(deep)
    merged = keras.layers.Concatenate()([wide, deep])
    return keras.Model(inputs, keras.layers.Dense(1)(merged))


def wrapped() -> keras.Model:
    """Layers inside layers: a wrapped batch norm, a bidirectional RNN, a nested model."""
    inner = keras.Sequential(
        [keras.Input((6,)), keras.layers.Dense(3), keras.layers.BatchNormalization()],
        name="inner",
    )
    return keras.Sequential(
        [
            keras.Input((5, 3)),
            keras.layers.TimeDistributed(keras.layers.BatchNormalization()),
            keras.layers.Bidirectional(keras.layers.LSTM(3)),
            inner,
            keras.layers.Dense(1),
        ]
    )


def with_lambda() -> keras.Model:
    return keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(3),
            keras.layers.Lambda(lambda x: x * 2, name="doubler"),
            keras.layers.Dense(1),
        ]
    )


@keras.saving.register_keras_serializable(package="elsewhere")
class Custom(keras.layers.Layer):
    def call(self, inputs: Any) -> Any:
        return inputs


def with_custom_layer() -> keras.Model:
    return keras.Sequential([keras.Input((4,)), Custom(name="mystery"), keras.layers.Dense(1)])


@pytest.fixture(scope="module")
def keras_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keras_files")


def trainable_count(model: keras.Model) -> int:
    return sum(int(np.prod(weight.shape)) for weight in model.trainable_weights)


def rezip(source: bytes, extra: dict[str, bytes], compression: int = zipfile.ZIP_STORED) -> bytes:
    """A .keras archive with the members of ``source`` plus ``extra``."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as original, zipfile.ZipFile(out, "w") as archive:
        for member in original.infolist():
            if member.filename not in extra:
                archive.writestr(member, original.read(member))
        for name, data in extra.items():
            archive.writestr(name, data, compress_type=compression)
    return out.getvalue()


# --- base models -------------------------------------------------------------------------


class TestModelUpload:
    @pytest.mark.parametrize("suffix", ["keras", "h5"])
    def test_sequential_counts_match_keras(self, api: Api, keras_dir: Path, suffix: str) -> None:
        model = sequential()
        content = save(model, keras_dir, f"seq.{suffix}")

        response = api.upload_model(content, f"my/seq.{suffix}", name="seq")

        assert response.status_code == 201, response.text
        body = response.json()
        assert response.headers["location"] == f"/v1/models/{body['id']}"
        assert (body["name"], body["filename"], body["format"]) == ("seq", f"seq.{suffix}", suffix)
        assert body["size"] == len(content)
        summary = body["summary"]
        assert summary["input_shape"] == [None, 8, 8]
        assert summary["total"] == model.count_params()
        assert summary["trainable"] == trainable_count(model)
        assert summary["non_trainable"] == model.count_params() - trainable_count(model)
        assert [
            (row["index"], row["name"], row["type"], row["params"], row["trainable"])
            for row in summary["layers"]
        ] == [
            (index, layer.name, type(layer).__name__, layer.count_params(), layer.trainable)
            for index, layer in enumerate(model.layers)
        ]
        assert [row["output_shape"] for row in summary["layers"]] == [
            list(layer.output.shape) for layer in model.layers
        ]
        assert api.client.get(body["links"]["self"]).json() == body
        with transaction(api.database_url) as session:
            row = session.get(BaseModel, uuid.UUID(body["id"]))
            assert row is not None
            uri = row.uri
        store = open_store(api.backend.settings())
        model_id = uuid.UUID(body["id"])
        assert uri == store.uri_for(upload_key("default", "models", model_id, f"model.{suffix}"))
        path = store.local_path(uri)
        assert path.read_bytes() == content

    @pytest.mark.parametrize("suffix", ["keras", "h5"])
    @pytest.mark.parametrize("build", [functional, wrapped])
    def test_other_architectures_match_keras(
        self, api: Api, keras_dir: Path, build: Callable[[], keras.Model], suffix: str
    ) -> None:
        model = build()
        filename = f"{build.__name__}.{suffix}"

        response = api.upload_model(save(model, keras_dir, filename), filename)

        assert response.status_code == 201, response.text
        summary = response.json()["summary"]
        assert summary["input_shape"] == [None, *model.inputs[0].shape[1:]]
        assert summary["total"] == model.count_params()
        assert summary["trainable"] == trainable_count(model)
        assert [(row["name"], row["type"], row["params"]) for row in summary["layers"]] == [
            (layer.name, type(layer).__name__, layer.count_params()) for layer in model.layers
        ]

    def test_read_and_list_newest_first(self, api: Api, keras_dir: Path) -> None:
        content = save(sequential(), keras_dir, "listed.keras")
        first = api.upload_model(content, name="first").json()
        second = api.upload_model(content, name="second").json()

        assert api.client.get(f"/v1/models/{first['id']}").json() == first
        listed = api.client.get("/v1/models").json()
        ids = [item["id"] for item in listed["items"]]
        assert ids.index(second["id"]) < ids.index(first["id"])
        page = api.client.get("/v1/models", params={"limit": 1}).json()
        assert [item["id"] for item in page["items"]] == [second["id"]]
        rest = api.client.get("/v1/models", params={"cursor": page["next_cursor"]}).json()
        assert first["id"] in [item["id"] for item in rest["items"]]

    def test_unknown_model_is_404(self, api: Api) -> None:
        assert api.client.get(f"/v1/models/{uuid.uuid4()}").status_code == 404


class TestModelRefusals:
    @pytest.mark.parametrize("suffix", ["keras", "h5"])
    def test_lambda_layer(
        self, api: Api, keras_dir: Path, refused: Callable[..., None], suffix: str
    ) -> None:
        content = save(with_lambda(), keras_dir, f"lambda.{suffix}")

        refused(api.upload_model(content, f"lambda.{suffix}"), 422, 'layer "doubler" (Lambda)')

    @pytest.mark.parametrize("suffix", ["keras", "h5"])
    def test_lambda_activation(
        self, api: Api, keras_dir: Path, refused: Callable[..., None], suffix: str
    ) -> None:
        model = keras.Sequential(
            [keras.Input((4,)), keras.layers.Dense(2, activation=lambda x: x, name="act")]
        )
        with pytest.warns(UserWarning, match="lambda"):
            content = save(model, keras_dir, f"lambda_act.{suffix}")

        refused(api.upload_model(content, f"lambda_act.{suffix}"), 422, 'layer "act" (Dense)')

    @pytest.mark.parametrize("suffix", ["keras", "h5"])
    def test_custom_layer(
        self, api: Api, keras_dir: Path, refused: Callable[..., None], suffix: str
    ) -> None:
        content = save(with_custom_layer(), keras_dir, f"custom.{suffix}")

        refused(api.upload_model(content, f"custom.{suffix}"), 422, 'layer "mystery"')

    def test_zip_bomb(self, api: Api, keras_dir: Path, refused: Callable[..., None]) -> None:
        content = save(sequential(), keras_dir, "bomb.keras")
        bomb = rezip(content, {"assets/zeros": bytes(50 * 1024 * 1024)}, zipfile.ZIP_DEFLATED)
        assert len(bomb) < len(content) + 200_000

        refused(api.upload_model(bomb), 422, "likely zip bomb")

    def test_path_traversal(self, api: Api, keras_dir: Path, refused: Callable[..., None]) -> None:
        content = save(sequential(), keras_dir, "traversal.keras")

        refused(api.upload_model(rezip(content, {"../x": b"owned"})), 422, "unsafe path: '../x'")

    @pytest.mark.parametrize(("suffix", "message"), [("keras", "zip"), ("h5", "HDF5")])
    def test_truncated(
        self,
        api: Api,
        keras_dir: Path,
        refused: Callable[..., None],
        suffix: str,
        message: str,
    ) -> None:
        content = save(sequential(), keras_dir, f"cut.{suffix}")

        refused(api.upload_model(content[: len(content) // 2], f"cut.{suffix}"), 422, message)

    def test_weights_only_h5(self, api: Api, keras_dir: Path, refused: Callable[..., None]) -> None:
        model = sequential()
        model.save_weights(keras_dir / "only.weights.h5")
        content = (keras_dir / "only.weights.h5").read_bytes()

        refused(api.upload_model(content, "only.h5"), 422, "model_config")

    def test_not_a_model(self, api: Api, refused: Callable[..., None]) -> None:
        refused(api.upload_model(b"hello, world", "notes.keras"), 422, "not a Keras model")

    def test_oversize(
        self, backend: Backend, keras_dir: Path, api: Api, refused: Callable[..., None]
    ) -> None:
        settings = backend.settings().model_copy(update={"max_upload_bytes": 4096})
        content = save(sequential(), keras_dir, "big.keras")
        assert 4096 < len(content) < 4096 + 64 * 1024
        with api_client(settings) as small:
            # Over the limit, but within the room the form gets: found while copying.
            response = small.post("/v1/models", files={"file": ("big.keras", content)})
            refused(response, 413, "limit of 4096 bytes")
            # Far over the limit: refused from its Content-Length, unread.
            huge = bytes(200 * 1024)
            refused(small.post("/v1/models", files={"file": ("h.keras", huge)}), 413, "4096")
            refused(small.post("/v1/datasets", files={"file": ("d.npz", huge)}), 413, "4096")
            # Far over the limit and sent chunked, without a Content-Length: cut off.
            parts = [
                b'--b\r\nContent-Disposition: form-data; name="file"; filename="c.keras"\r\n\r\n',
                huge,
                b"\r\n--b--\r\n",
            ]
            chunked = small.post(
                "/v1/models",
                content=iter(parts),
                headers={"content-type": "multipart/form-data; boundary=b"},
            )
            refused(chunked, 413, "4096")


# --- datasets ----------------------------------------------------------------------------


class TestDatasetUpload:
    def test_npz(self, api: Api) -> None:
        rng = np.random.default_rng(1)
        x_train = rng.random((30, 4, 3)).astype(np.float32)
        y_train = np.array([0, 1, 2] * 10)
        x_test, y_test = x_train[:6], np.array([2, 2, 1, 1, 0, 2])

        response = api.upload_dataset(
            npz(x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test), name="cubes"
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["name"], body["format"], body["builtin"], body["classes"]) == (
            "cubes",
            "npz",
            False,
            3,
        )
        assert body["info"] == {
            "splits": {
                "train": {
                    "n": 30,
                    "x_shape": [30, 4, 3],
                    "x_dtype": "float32",
                    "y_shape": [30],
                    "y_dtype": "int64",
                    "class_counts": {"0": 10, "1": 10, "2": 10},
                },
                "test": {
                    "n": 6,
                    "x_shape": [6, 4, 3],
                    "x_dtype": "float32",
                    "y_shape": [6],
                    "y_dtype": "int64",
                    "class_counts": {"0": 1, "1": 2, "2": 3},
                },
            }
        }
        path = self.stored_path(api, body["id"])
        with np.load(path, allow_pickle=False) as stored:
            np.testing.assert_array_equal(stored["x_train"], x_train)
            np.testing.assert_array_equal(stored["y_test"], y_test)
        assert api.client.get(f"/v1/datasets/{body['id']}").json() == body

    def test_csv_with_test_split(self, api: Api) -> None:
        rows = [(i, i * 0.5, i % 3) for i in range(20)]
        text = "a,b,target\n" + "".join(f"{a},{b},{t}\n" for a, b, t in rows)

        response = api.upload_dataset(
            text.encode(), "table.csv", label="target", test_fraction="0.25"
        )

        assert response.status_code == 201, response.text
        body = response.json()
        assert body["format"] == "csv"
        train, test = body["info"]["splits"]["train"], body["info"]["splits"]["test"]
        assert (train["n"], test["n"]) == (15, 5)
        assert (train["x_shape"], train["x_dtype"], train["y_dtype"]) == (
            [15, 2],
            "float32",
            "int64",
        )
        assert sum(train["class_counts"].values()) + sum(test["class_counts"].values()) == 20
        with np.load(self.stored_path(api, body["id"]), allow_pickle=False) as stored:
            x = np.concatenate([stored["x_train"], stored["x_test"]])
            y = np.concatenate([stored["y_train"], stored["y_test"]])
        order = np.argsort(x[:, 0])
        np.testing.assert_array_equal(x[order], np.array([r[:2] for r in rows], np.float32))
        np.testing.assert_array_equal(y[order], [r[2] for r in rows])
        again = api.upload_dataset(text.encode(), "table.csv", label="target", test_fraction="0.25")
        assert again.json()["sha256"] == body["sha256"]  # the split is seeded

    def test_csv_float_label(self, api: Api) -> None:
        response = api.upload_dataset(b"x1,x2,label\n1,2,0.5\n3,4,1.5\n", "reg.csv")

        assert response.status_code == 201, response.text
        train = response.json()["info"]["splits"]["train"]
        assert (train["y_dtype"], train["class_counts"]) == ("float32", None)
        assert response.json()["classes"] is None

    def test_list_builtins_then_uploads(self, api: Api) -> None:
        uploaded = api.upload_dataset(npz(x_train=np.ones((2, 3)), y_train=np.array([0, 1])))
        assert uploaded.status_code == 201, uploaded.text

        items = api.client.get("/v1/datasets").json()["items"]

        assert [item["name"] for item in items[:3]] == ["digits", "mnist", "fashion_mnist"]
        digits, mnist = items[0], items[1]
        assert digits["builtin"]
        assert digits["id"] is None
        assert digits["classes"] == 10
        assert digits["info"]["splits"]["train"]["x_shape"] == [1437, 8, 8]
        assert digits["info"]["splits"]["test"]["n"] == 360
        assert mnist["info"]["splits"]["train"]["x_shape"] == [60000, 28, 28]
        assert items[3]["id"] == uploaded.json()["id"]
        assert all(not item["builtin"] for item in items[3:])
        assert api.client.get("/v1/datasets/fashion_mnist").json() == items[2]
        assert api.client.get("/v1/datasets/cifar").status_code == 404

    @staticmethod
    def stored_path(api: Api, dataset_id: str) -> Path:
        with transaction(api.database_url) as session:
            row = session.get(Dataset, uuid.UUID(dataset_id))
            assert row is not None
            uri = row.uri
        store = open_store(api.backend.settings())
        assert uri == store.uri_for(
            upload_key("default", "datasets", uuid.UUID(dataset_id), "data.npz")
        )
        return store.local_path(uri)


DATASET_REFUSALS: list[tuple[str, bytes, str, dict[str, str], str]] = [
    (
        "pickled",
        npz(x_train=np.ones((2, 2)), y_train=np.array([{"a": 1}, None], dtype=object)),
        "data.npz",
        {},
        "pickled arrays are not accepted",
    ),
    ("no-y", npz(x_train=np.ones((2, 2))), "data.npz", {}, "needs x_train and y_train"),
    (
        "lengths",
        npz(x_train=np.ones((3, 2)), y_train=np.array([0, 1])),
        "data.npz",
        {},
        "x_train has 3 examples, y_train 2",
    ),
    (
        "strings",
        npz(x_train=np.array([["a"], ["b"]]), y_train=np.array([0, 1])),
        "data.npz",
        {},
        "must be numeric",
    ),
    (
        "extra-array",
        npz(x_train=np.ones((2, 2)), y_train=np.array([0, 1]), names=np.array([1, 2])),
        "data.npz",
        {},
        "['names']",
    ),
    ("truncated", npz(x_train=np.ones((50, 50)), y_train=np.ones(50))[:3000], "d.npz", {}, "zip"),
    ("csv-text", b"a,label\n1,0\nx,1\n", "t.csv", {}, "not a number"),
    ("csv-no-label", b"a,b\n1,0\n", "t.csv", {}, "no label column 'label'"),
    ("csv-header-only", b"a,label\n", "t.csv", {}, "no rows"),
    ("csv-ragged", b"a,b,label\n1,2,0\n1,0\n", "t.csv", {}, "not a number"),
    ("csv-nan", b"a,label\nnan,0\n", "t.csv", {}, "NaN"),
    ("bad-fraction", b"a,label\n1,0\n", "t.csv", {"test_fraction": "0.5"}, "empty split"),
    (
        "zero-width",
        npz(x_train=np.ones((2**20, 0)), y_train=np.zeros(2**20)),
        "data.npz",
        {},
        "every dimension must be at least 1",
    ),
    (
        "rank",
        npz(x_train=np.ones((2, 1, 1, 1, 1, 1)), y_train=np.array([0, 1])),
        "data.npz",
        {},
        "x_train has 6 dimensions",
    ),
    (
        "csv-huge-column-name",
        b"a" * (200 * 1024) + b",label\n1,0\n",
        "t.csv",
        {},
        "header row cannot be read",
    ),
    (
        "csv-huge-header",
        b",".join([b"c" * 1000] * 1100) + b",label\n",
        "t.csv",
        {},
        "header row is longer than",
    ),
]


@pytest.mark.parametrize(
    ("content", "filename", "form", "message"),
    [case[1:] for case in DATASET_REFUSALS],
    ids=[case[0] for case in DATASET_REFUSALS],
)
def test_dataset_refusals(
    api: Api,
    refused: Callable[..., None],
    content: bytes,
    filename: str,
    form: dict[str, str],
    message: str,
) -> None:
    refused(api.upload_dataset(content, filename, **form), 422, message)
