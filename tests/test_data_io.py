"""Loaders and discovery: valid files load with the documented dtypes; each bad input has its own message."""

from __future__ import annotations

import zipfile

import numpy as np
import pytest

from an2dl_kit.data import discover
from an2dl_kit.data.discover import find_inputs, input_root, shared_data_root
from an2dl_kit.data.io import (
    load_cells_test,
    load_cells_train,
    load_labels,
    load_mars,
    load_mars_test,
    npz_shape,
)
from an2dl_kit.errors import DataError
from an2dl_kit.task import CELLS, MARS

CELLS_SHAPE, MARS_SHAPE = CELLS.image_shape, MARS.image_shape


def _cells(tmp_path, name="training_set.npz", n=6, **overrides):
    arrays = {
        "images": np.random.default_rng(0).integers(0, 256, (n, *CELLS_SHAPE), dtype=np.uint8),
        "labels": (np.arange(n) % 8).astype(np.uint8)[:, None],
    }
    arrays.update(overrides)
    arrays = {k: v for k, v in arrays.items() if v is not None}
    path = tmp_path / name
    np.savez(path, **arrays)
    return path


def _mars(tmp_path, n=4, m=3, **overrides):
    rng = np.random.default_rng(0)
    train = np.stack([rng.integers(0, 256, (n, *MARS_SHAPE)), rng.integers(0, 5, (n, *MARS_SHAPE))], axis=1)
    arrays = {"training_set": train.astype(np.float64), "test_set": rng.uniform(0, 255, (m, *MARS_SHAPE))}
    arrays.update(overrides)
    path = tmp_path / "mars_for_students.npz"
    np.savez(path, **arrays)
    return path


def _error(load, path) -> str:
    with pytest.raises(DataError) as info:
        load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


# --- valid files -----------------------------------------------------------------------------------------


def test_cells_train_loads_uint8_images_and_flat_int64_labels(tmp_path):
    data = load_cells_train(_cells(tmp_path))
    assert data.images.dtype == np.uint8 and data.images.shape == (6, *CELLS_SHAPE)
    assert data.labels.dtype == np.int64 and data.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_cells_accepts_float_storage_and_flat_labels(tmp_path):
    images = np.full((2, *CELLS_SHAPE), 7.0)
    data = load_cells_train(_cells(tmp_path, n=2, images=images, labels=np.array([7.0, 3.0])))
    assert data.images.dtype == np.uint8 and int(data.images.max()) == 7
    assert data.labels.tolist() == [7, 3]


def test_mars_splits_images_masks_and_test(tmp_path):
    data = load_mars(_mars(tmp_path))
    assert data.images.dtype == np.float32 and data.images.shape == (4, *MARS_SHAPE)
    assert data.masks.dtype == np.uint8 and int(data.masks.max()) <= 4
    assert data.test.shape == (3, *MARS_SHAPE)
    assert load_mars_test(tmp_path / "mars_for_students.npz").shape == (3, *MARS_SHAPE)


def test_mars_accepts_uint8_storage(tmp_path):
    path = _mars(tmp_path)
    train = np.load(path)["training_set"].astype(np.uint8)
    np.savez(path, training_set=train, test_set=np.zeros((1, *MARS_SHAPE), np.uint8))
    assert load_mars(path).masks.shape == (4, *MARS_SHAPE)


def test_npz_shape_reads_header_only(tmp_path):
    assert npz_shape(_mars(tmp_path, m=5), "test_set") == (5, *MARS_SHAPE)


def test_load_labels_flattens_column_vectors(tmp_path):
    path = tmp_path / "test_labels.npz"
    np.savez(path, labels=np.array([[1], [2]], np.uint8))
    assert load_labels(path).tolist() == [1, 2]


# --- bad inputs: one message each ------------------------------------------------------------------------


def test_missing_file(tmp_path):
    assert _error(load_cells_train, tmp_path / "nope.npz") == "no such file"


def test_text_file_is_not_npz(tmp_path):
    path = tmp_path / "training_set.npz"
    path.write_text("images,labels\n1,2\n")
    assert _error(load_cells_train, path) == "not an npz file (not a zip archive)"


def test_truncated_npz(tmp_path):
    path = _cells(tmp_path, n=50)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    assert _error(load_cells_train, path).startswith(("not an npz file", "not a readable npz file"))


def test_corrupt_member_in_valid_zip(tmp_path):
    path = tmp_path / "training_set.npz"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("images.npy", b"garbage")
        archive.writestr("labels.npy", b"garbage")
    assert _error(load_cells_train, path).startswith("not a readable npz file")


def test_missing_key(tmp_path):
    assert _error(load_cells_train, _cells(tmp_path, labels=None)) == "missing key 'labels' (found: images)"


def test_wrong_rank(tmp_path):
    path = _cells(tmp_path, images=np.zeros((6, 96, 96), np.uint8))
    assert _error(load_cells_train, path) == "'images' has rank 3 (6, 96, 96), expected rank 4 (N, 96, 96, 3)"


def test_wrong_shape(tmp_path):
    path = _cells(tmp_path, images=np.zeros((6, 64, 64, 3), np.uint8))
    assert _error(load_cells_train, path) == "'images' has shape (6, 64, 64, 3), expected (N, 96, 96, 3)"


def test_mars_wrong_shape(tmp_path):
    path = _mars(tmp_path, training_set=np.zeros((2, 3, 64, 128)))
    assert _error(load_mars, path) == "'training_set' has shape (2, 3, 64, 128), expected (N, 2, 64, 128)"


def test_nan_in_images(tmp_path):
    images = np.zeros((6, *CELLS_SHAPE))
    images[2, 0, 0, 0] = np.nan
    images[3, 0, 0, 0] = np.inf
    assert _error(load_cells_train, _cells(tmp_path, images=images)) == "'images' contains 2 NaN/inf values"


def test_nan_in_mars_masks(tmp_path):
    path = _mars(tmp_path)
    train = np.load(path)["training_set"]
    train[1, 1, 5, 5] = np.nan
    np.savez(path, training_set=train, test_set=np.zeros((1, *MARS_SHAPE)))
    assert _error(load_mars, path) == "'training_set[:, 1] (masks)' contains 1 NaN/inf values"


def test_pixels_out_of_range(tmp_path):
    path = _cells(tmp_path, images=np.full((6, *CELLS_SHAPE), 300.0))
    assert _error(load_cells_train, path) == "'images' has pixel values 300..300, expected 0..255"


def test_label_out_of_range(tmp_path):
    labels = np.array([0, 1, 2, 9, 4, 5], np.uint8)[:, None]
    message = _error(load_cells_train, _cells(tmp_path, labels=labels))
    assert message == "'labels' has label 9 outside 0..7 (row 3; 1 bad rows)"


def test_mars_mask_out_of_range(tmp_path):
    path = _mars(tmp_path)
    train = np.load(path)["training_set"]
    train[2, 1, 0, 0] = 5
    np.savez(path, training_set=train, test_set=np.zeros((1, *MARS_SHAPE)))
    assert (
        _error(load_mars, path) == "'training_set[:, 1] (masks)' has label 5 outside 0..4 (row 2; 1 bad rows)"
    )


def test_fractional_labels(tmp_path):
    path = _cells(tmp_path, labels=np.array([0, 1, 2, 3.5, 4, 5]))
    assert _error(load_cells_train, path) == "'labels' has non-integer values"


def test_mismatched_lengths(tmp_path):
    path = _cells(tmp_path, labels=np.zeros((5, 1), np.uint8))
    assert _error(load_cells_train, path) == "'images' has 6 rows but 'labels' has 5"


def test_empty_array(tmp_path):
    path = _cells(tmp_path, n=0)
    assert _error(load_cells_train, path) == "'images' is empty (0 rows)"


def test_empty_mars_test_set(tmp_path):
    assert _error(load_mars, _mars(tmp_path, m=0)) == "'test_set' is empty (0 rows)"


def test_string_array_is_refused(tmp_path):
    path = _cells(tmp_path, name="test_set.npz", images=np.array(["a"] * 6))
    assert _error(load_cells_test, path).startswith("'images' has rank 1")
    path = tmp_path / "test_labels.npz"
    np.savez(path, labels=np.array(["a", "b"]))
    assert _error(load_labels, path) == "'labels' has dtype <U1, expected uint8 or float"


# --- discovery -------------------------------------------------------------------------------------------


def test_input_root_precedence(monkeypatch, tmp_path):
    monkeypatch.delenv("AN2DL_INPUT", raising=False)
    assert str(input_root()) == "/kaggle/input"
    monkeypatch.setenv("AN2DL_INPUT", str(tmp_path / "env"))
    assert input_root() == tmp_path / "env"
    assert input_root(tmp_path / "arg") == tmp_path / "arg"


@pytest.mark.parametrize(
    "layout",
    [
        (
            "an2dl-cells/training_set.npz",
            "an2dl-cells/test_set.npz",
            "an-2-dl-2024-2025-homework-2/mars_for_students.npz",
        ),
        (
            "competitions/cells/training_set.npz",
            "competitions/cells/test_set.npz",
            "competitions/mars/data/mars_for_students.npz",
        ),
        ("cells/training_set.npz", "cells/test_set.npz", "mars/mars_for_students.npz"),
    ],
)
def test_find_inputs_layouts(tmp_path, layout):
    for name in layout:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    inputs = find_inputs(tmp_path)
    assert (inputs.cells_train, inputs.cells_test, inputs.mars) == tuple(tmp_path / name for name in layout)
    assert inputs.require("mars") == tmp_path / layout[2]


def test_find_inputs_prefers_test_set_beside_training_set(tmp_path):
    for name in ("a/test_set.npz", "b/cells/training_set.npz", "b/cells/test_set.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert find_inputs(tmp_path).cells_test == tmp_path / "b/cells/test_set.npz"


def test_find_inputs_uses_env(monkeypatch, synthetic_dir):
    monkeypatch.setenv("AN2DL_INPUT", str(synthetic_dir))
    assert find_inputs().require("cells") == synthetic_dir / "cells" / "training_set.npz"


def test_shared_data_root_from_env_or_none(monkeypatch, tmp_path):
    monkeypatch.setattr(discover, "SHARED_DATA_CANDIDATES", ())  # this machine's own shared data stays out
    monkeypatch.setenv("AN2DL_SHARED_DATA", str(tmp_path))
    assert shared_data_root() is None  # an empty folder
    for name in ("cells/training_set.npz", "mars/mars_for_students.npz"):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"")
    assert shared_data_root() == tmp_path


def test_require_names_root_and_file(tmp_path):
    (tmp_path / "cells").mkdir()
    inputs = find_inputs(tmp_path)
    with pytest.raises(DataError) as info:
        inputs.require("mars")
    assert str(info.value).startswith(
        f"{tmp_path}: no mars_for_students.npz found for mars under this folder;"
    )
    with pytest.raises(DataError, match="the folder does not exist"):
        find_inputs(tmp_path / "absent").require("cells")


def _loaded_shapes(root) -> tuple:
    inputs = find_inputs(root)
    train = load_cells_train(inputs.require("cells"))
    return (len(train) > 0, load_cells_test(inputs.cells_test).shape[1:],
            load_mars(inputs.require("mars")).test.shape[1:])


def test_synthetic_files_load(synthetic_dir):
    assert _loaded_shapes(synthetic_dir) == (True, CELLS_SHAPE, MARS_SHAPE)


def test_shared_files_load(shared_data):
    assert _loaded_shapes(shared_data) == (True, CELLS_SHAPE, MARS_SHAPE)
