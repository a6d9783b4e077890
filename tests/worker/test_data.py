"""worker.data: the IDX reader, the real Keras cache lookup, and the preprocessing rules.

Keras reads ``KERAS_HOME`` once, when ``keras.src.backend.config`` is imported, into the
module global ``_KERAS_DIR``; ``get_file`` then asks ``config.keras_home()`` for it on every
call. Setting the environment variable here would come too late, so the tests point that
global at the ``keras_home`` cache instead: ``keras.utils.get_file`` itself still runs and
finds the files where Keras would look. Downloading is made to fail loudly so a cache miss
cannot silently reach the network.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from keras.src.backend import config as keras_config
from keras.src.utils import file_utils

from models.spec import DatasetSpec
from models.spec.data import IDX_FILES, IDX_SOURCES, cached_here
from tests.conftest import write_idx
from worker.data import Dataset, load_dataset, read_idx
from worker.errors import JobError


@pytest.fixture
def keras_cache(keras_home: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    def no_downloads(url: str, *_: object) -> None:
        raise AssertionError(f"tried to download {url}; the cache should have been used")

    monkeypatch.setenv("KERAS_HOME", str(keras_home))
    monkeypatch.setattr(keras_config, "_KERAS_DIR", str(keras_home))
    monkeypatch.setattr(file_utils, "urlretrieve", no_downloads)
    before = sorted(keras_home.rglob("*"))
    yield keras_home
    assert sorted(keras_home.rglob("*")) == before, "the cache was written to"


def load(name: str, preprocessing: str = "none", **options: object) -> Dataset:
    return load_dataset(
        DatasetSpec.model_validate({"name": name, "preprocessing": preprocessing, **options})
    )


class TestReadIdx:
    @pytest.mark.parametrize("shape", [(7,), (5, 28, 28), (3, 4, 5, 2)], ids=str)
    def test_round_trips_what_write_idx_writes(
        self, tmp_path: Path, shape: tuple[int, ...]
    ) -> None:
        array = np.random.default_rng(1).integers(0, 256, size=shape).astype(np.uint8)
        path = tmp_path / "data-idx-ubyte.gz"
        write_idx(path, array)

        read = read_idx(path)

        assert read.dtype == np.uint8
        np.testing.assert_array_equal(read, array)

    def test_reads_uncompressed_files(self, tmp_path: Path) -> None:
        array = np.arange(24, dtype=np.uint8).reshape(2, 3, 4)
        write_idx(tmp_path / "data.gz", array)
        plain = tmp_path / "data-idx3-ubyte"
        plain.write_bytes(gzip.decompress((tmp_path / "data.gz").read_bytes()))

        np.testing.assert_array_equal(read_idx(plain), array)

    @pytest.mark.parametrize("cut", [1, 100], ids=["one-byte-short", "rows-short"])
    def test_truncated_data_is_invalid_data(self, tmp_path: Path, cut: int) -> None:
        write_idx(tmp_path / "full.gz", np.zeros((10, 28, 28), np.uint8))
        raw = gzip.decompress((tmp_path / "full.gz").read_bytes())
        path = tmp_path / "short.gz"
        path.write_bytes(gzip.compress(raw[:-cut]))

        with pytest.raises(JobError, match="header promises 7840 bytes") as raised:
            read_idx(path)
        assert raised.value.code == "invalid_data"
        assert not raised.value.retryable

    def test_truncated_header_is_invalid_data(self, tmp_path: Path) -> None:
        path = tmp_path / "header"
        path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0]))
        with pytest.raises(JobError) as raised:
            read_idx(path)
        assert raised.value.code == "invalid_data"

    @pytest.mark.parametrize(
        "head",
        [
            bytes([0, 0, 0x0D, 1]),  # IDX of float32, not unsigned bytes
            bytes([1, 0, 0x08, 1]),
            b"PK\x03\x04",  # a zip archive
            b"",
        ],
        ids=["float-idx", "bad-zero-bytes", "zip", "empty"],
    )
    def test_wrong_magic_is_invalid_data(self, tmp_path: Path, head: bytes) -> None:
        path = tmp_path / "labels-idx1-ubyte.gz"
        path.write_bytes(gzip.compress(head + bytes(4 * 4)))
        with pytest.raises(JobError, match="not an unsigned-byte IDX file") as raised:
            read_idx(path)
        assert raised.value.code == "invalid_data"

    @pytest.mark.parametrize("damage", ["cut-stream", "not-gzip"])
    def test_damaged_gzip_is_invalid_data(self, tmp_path: Path, damage: str) -> None:
        # A partial download, or an HTML error page saved under the .gz name.
        write_idx(tmp_path / "full.gz", np.zeros((10, 28, 28), np.uint8))
        compressed = (tmp_path / "full.gz").read_bytes()
        path = tmp_path / "train-images-idx3-ubyte.gz"
        path.write_bytes(compressed[:-20] if damage == "cut-stream" else b"<html>oops</html>")
        with pytest.raises(JobError) as raised:
            read_idx(path)
        assert raised.value.code == "invalid_data"


class TestIdxDatasets:
    @pytest.mark.parametrize("name", sorted(IDX_SOURCES))
    def test_loads_the_cached_files_through_keras(self, keras_cache: Path, name: str) -> None:
        folder = keras_cache / IDX_SOURCES[name][0]

        data = load(name)

        assert data.x_train.shape == (200, 28, 28)
        assert data.x_test.shape == (50, 28, 28)
        assert data.x_train.dtype == np.dtype(np.float32)
        assert data.y_train.dtype == np.dtype(np.int64)
        np.testing.assert_array_equal(data.x_train, read_idx(folder / IDX_FILES["x_train"]))
        np.testing.assert_array_equal(data.y_train, read_idx(folder / IDX_FILES["y_train"]))
        np.testing.assert_array_equal(data.x_test, read_idx(folder / IDX_FILES["x_test"]))
        np.testing.assert_array_equal(data.y_test, read_idx(folder / IDX_FILES["y_test"]))
        assert data.n_classes == 10

    def test_a_built_in_neither_cached_nor_downloadable_says_where_to_put_it(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An offline worker: Keras's own download fails (here: a refused local port) and
        the job ends dataset_unavailable with the folder to copy the files to."""
        empty = tmp_path / "keras_home"
        monkeypatch.setenv("KERAS_HOME", str(empty))
        monkeypatch.setattr(keras_config, "_KERAS_DIR", str(empty))
        folder, _ = IDX_SOURCES["mnist"]
        monkeypatch.setitem(IDX_SOURCES, "mnist", (folder, "http://127.0.0.1:9/"))
        with pytest.raises(JobError) as raised:
            load("mnist")
        assert raised.value.code == "dataset_unavailable"
        assert str(empty / folder) in raised.value.message
        assert IDX_FILES["x_train"] in raised.value.message
        assert not cached_here("mnist")
        assert cached_here("digits")

    def test_mnist_and_fashion_mnist_are_different_folders(self, keras_cache: Path) -> None:
        assert not np.array_equal(load("mnist").x_train, load("fashion_mnist").x_train)

    def test_scale_divides_by_255(self, keras_cache: Path) -> None:
        raw, scaled = load("fashion_mnist"), load("fashion_mnist", "scale")
        assert raw.x_train.max() == 250  # the brightest pixel keras_home draws
        np.testing.assert_allclose(scaled.x_train, raw.x_train / 255, rtol=1e-6)
        np.testing.assert_allclose(scaled.x_test, raw.x_test / 255, rtol=1e-6)
        np.testing.assert_array_equal(scaled.y_train, raw.y_train)

    def test_standardize_uses_training_statistics_only(self, keras_cache: Path) -> None:
        raw, data = load("mnist"), load("mnist", "standardize")

        np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-4)
        np.testing.assert_allclose(data.x_train.std(axis=0), 1, rtol=1e-3)
        mean, std = raw.x_train.mean(axis=0), raw.x_train.std(axis=0)
        np.testing.assert_allclose(data.x_test, (raw.x_test - mean) / std, rtol=1e-4, atol=1e-4)
        own = (raw.x_test - raw.x_test.mean(axis=0)) / raw.x_test.std(axis=0)
        assert not np.allclose(data.x_test, own, atol=1e-2), "test split used its own statistics"

    def test_limit_keeps_the_first_n_after_a_seeded_shuffle(self, keras_cache: Path) -> None:
        full, limited = load("mnist", "scale"), load("mnist", "scale", limit=30)
        assert (len(limited.x_train), len(limited.y_train)) == (30, 30)
        assert (len(limited.x_test), len(limited.y_test)) == (30, 30)
        train_order = np.random.default_rng([0, 0]).permutation(len(full.x_train))[:30]
        test_order = np.random.default_rng([0, 1]).permutation(len(full.x_test))[:30]
        np.testing.assert_array_equal(limited.x_train, full.x_train[train_order])
        np.testing.assert_array_equal(limited.y_test, full.y_test[test_order])
        again = load("mnist", "scale", limit=30)
        np.testing.assert_array_equal(again.x_train, limited.x_train)  # same seed, same pick
        other = load("mnist", "scale", limit=30, seed=1)
        assert not np.array_equal(other.y_train, limited.y_train)

        beyond_test = load("mnist", limit=120)
        assert (len(beyond_test.x_train), len(beyond_test.x_test)) == (120, 50)
        assert len(beyond_test.y_test) == 50

    def test_limit_per_split(self, keras_cache: Path) -> None:
        data = load("mnist", limit={"train": 20})
        assert (len(data.x_train), len(data.x_test)) == (20, 50)

    def test_one_hot_labels_encode_the_class_ids(self, keras_cache: Path) -> None:
        ids, rows = load("fashion_mnist"), load("fashion_mnist", one_hot=True)
        assert rows.y_train.shape == (200, 10)
        assert rows.y_test.shape == (50, 10)
        np.testing.assert_array_equal(rows.y_train.argmax(axis=1), ids.y_train)
        np.testing.assert_array_equal(rows.y_train.sum(axis=1), 1)
        np.testing.assert_array_equal(rows.x_train, ids.x_train)


class TestSelection:
    """Géron's tasks: A drops sandals (5) and shirts (6); B tells them apart."""

    def test_classes_keep_and_reindex_in_the_given_order(self, keras_cache: Path) -> None:
        full = load("fashion_mnist")
        kept = [0, 1, 2, 3, 4, 7, 8, 9]
        task_a = load("fashion_mnist", classes=kept)
        mask = np.isin(full.y_train, kept)
        np.testing.assert_array_equal(task_a.x_train, full.x_train[mask])
        expected = np.array([kept.index(label) for label in full.y_train[mask]])
        np.testing.assert_array_equal(task_a.y_train, expected)
        assert task_a.n_classes == 8

    def test_relabel_maps_original_labels(self, keras_cache: Path) -> None:
        full = load("fashion_mnist")
        task_b = load(
            "fashion_mnist", classes=[5, 6], relabel={"5": 0, "6": 1}, limit={"train": 10}
        )
        assert len(task_b.x_train) == 10
        assert set(np.unique(task_b.y_train)) <= {0, 1}
        shirts = full.y_test == 6
        sandals_or_shirts = np.isin(full.y_test, [5, 6])
        np.testing.assert_array_equal(task_b.y_test, shirts[sandals_or_shirts].astype(int))

    def test_relabel_must_cover_the_kept_classes(self) -> None:
        with pytest.raises(ValueError, match=r"no new label for class\(es\) \[6\]"):
            DatasetSpec.model_validate({"name": "mnist", "classes": [5, 6], "relabel": {"5": 0}})

    def test_unlabeled_has_no_classes(self, keras_cache: Path) -> None:
        data = load("mnist", unlabeled=True)
        assert data.n_classes == 0

    def test_selection_that_leaves_nothing_is_invalid_data(self, keras_cache: Path) -> None:
        with pytest.raises(JobError, match="no training examples") as raised:
            load("mnist", classes=[42])
        assert raised.value.code == "invalid_data"


class TestDigits:
    def test_loads_offline_with_the_fixed_split(self) -> None:
        data = load("digits")
        assert data.x_train.shape == (1437, 8, 8)
        assert data.x_test.shape == (360, 8, 8)
        assert data.y_train.shape == (1437,)
        assert data.y_test.shape == (360,)
        assert data.n_classes == 10
        assert data.x_train.max() == 16
        np.testing.assert_array_equal(load("digits").x_train, data.x_train)

    def test_scale_divides_by_16(self) -> None:
        raw, scaled = load("digits"), load("digits", "scale")
        np.testing.assert_allclose(scaled.x_train, raw.x_train / 16, rtol=1e-6)
        np.testing.assert_allclose(scaled.x_test, raw.x_test / 16, rtol=1e-6)
        assert scaled.x_train.max() == 1.0

    def test_standardize_leaves_constant_pixels_finite(self) -> None:
        raw, data = load("digits"), load("digits", "standardize")
        constant = raw.x_train.std(axis=0) == 0
        assert constant.any()  # the corner pixels of the 8×8 digits are always blank
        assert np.isfinite(data.x_train).all()
        assert np.isfinite(data.x_test).all()
        np.testing.assert_allclose(data.x_train.mean(axis=0), 0, atol=1e-5)
        np.testing.assert_allclose(data.x_train.std(axis=0)[~constant], 1, rtol=1e-3)
        mean = raw.x_train.mean(axis=0)
        np.testing.assert_allclose(data.x_test[:, constant], (raw.x_test - mean)[:, constant])
