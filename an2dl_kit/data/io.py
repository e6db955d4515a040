"""Loaders for the two competitions' npz files, with one-line errors for every malformed input.

File formats (the course's, mirrored by `an2dl synth` and `../shared/data`):

- cells `training_set.npz`: `images` (N, 96, 96, 3) 0-255, `labels` (N, 1) or (N,) in 0..7.
- cells `test_set.npz`: `images` (M, 96, 96, 3).
- mars `mars_for_students.npz`: `training_set` (N, 2, 64, 128), image `[:, 0]` 0-255 and mask `[:, 1]`
  in 0..4; `test_set` (M, 64, 128).
- `test_labels.npz` (stand-ins and synthetic data only): `labels`, (M,) for cells or (M, 64, 128) for mars.

Arrays may be stored as uint8 or as floats (the course stores Mars as float64); floats must be finite and
whole-valued where they are labels. Every problem raises `DataError("<file>: <problem>")`.
"""

from __future__ import annotations

import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from an2dl_kit.errors import DataError
from an2dl_kit.task import CELLS, MARS

PIXEL_RANGE = (0.0, 255.0)



@dataclass(frozen=True)
class CellsData:
    images: np.ndarray  # uint8 (N, 96, 96, 3)
    labels: np.ndarray  # int64 (N,)

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class MarsData:
    images: np.ndarray  # float32 (N, 64, 128), values 0..255
    masks: np.ndarray  # uint8 (N, 64, 128), values 0..4
    test: np.ndarray  # float32 (M, 64, 128)

    def __len__(self) -> int:
        return len(self.masks)


# --- reading ---------------------------------------------------------------------------------------------


def _arrays(path: str | os.PathLike, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Read `keys` from an npz, turning every way a file can be unreadable into one DataError line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if path.is_dir():
        raise DataError(f"{path}: is a folder, expected an .npz file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an npz file (not a zip archive)")
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [key for key in keys if key not in npz.files]
            if missing:
                found = ", ".join(npz.files) or "nothing"
                raise DataError(f"{path}: missing key '{missing[0]}' (found: {found})")
            arrays = {key: npz[key] for key in keys}
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        # A truncated download, an object array (pickle) or a corrupt member all land here.
        raise DataError(f"{path}: not a readable npz file ({type(error).__name__}: {error})") from None
    for key, value in arrays.items():
        if not isinstance(value, np.ndarray):  # NpzFile hands back raw bytes for a member that is not .npy
            raise DataError(f"{path}: not a readable npz file ('{key}' is not a numpy array)")
    return arrays


def npz_shape(path: str | os.PathLike, key: str) -> tuple[int, ...]:
    """Shape of one array in an npz, read from its header only (cheap even for the 650 MB Mars test set)."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):
        raise DataError(f"{path}: not an npz file (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [name.removesuffix(".npy") for name in archive.namelist()]
            if key not in names:
                raise DataError(f"{path}: missing key '{key}' (found: {', '.join(names) or 'nothing'})")
            with archive.open(f"{key}.npy") as member:
                version = np.lib.format.read_magic(member)
                read_header = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, _ = read_header(member)
    except DataError:
        raise
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as error:
        raise DataError(f"{path}: not a readable npz file ({type(error).__name__}: {error})") from None
    return tuple(shape)


# --- validation --------------------------------------------------------------------------------------------


def _shape_text(shape: tuple) -> str:
    return "(" + ", ".join(str(s) for s in shape) + ")"


def _check_shape(path: Path, key: str, array: np.ndarray, tail: tuple[int, ...]) -> None:
    expected = ("N", *tail)
    if array.ndim != len(expected):
        raise DataError(
            f"{path}: '{key}' has rank {array.ndim} {_shape_text(array.shape)}, "
            f"expected rank {len(expected)} {_shape_text(expected)}"
        )
    if tuple(array.shape[1:]) != tail:
        raise DataError(
            f"{path}: '{key}' has shape {_shape_text(array.shape)}, expected {_shape_text(expected)}"
        )
    if array.shape[0] == 0:
        raise DataError(f"{path}: '{key}' is empty (0 rows)")


def _check_numeric(path: Path, key: str, array: np.ndarray) -> None:
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise DataError(f"{path}: '{key}' has dtype {array.dtype}, expected uint8 or float")
    if np.issubdtype(array.dtype, np.floating):
        bad = np.count_nonzero(~np.isfinite(array))
        if bad:
            raise DataError(f"{path}: '{key}' contains {bad} NaN/inf values")


def _as_pixels(path: Path, key: str, array: np.ndarray, dtype: type) -> np.ndarray:
    """Validate 0..255 pixel values and convert (floats are rounded when the target is uint8)."""
    _check_numeric(path, key, array)
    low, high = array.min(), array.max()
    if low < PIXEL_RANGE[0] or high > PIXEL_RANGE[1]:
        raise DataError(f"{path}: '{key}' has pixel values {low:g}..{high:g}, expected 0..255")
    if dtype is np.uint8 and array.dtype != np.uint8:
        return np.rint(array).astype(np.uint8)
    return array.astype(dtype, copy=False)


def _as_labels(path: Path, key: str, array: np.ndarray, num_classes: int, dtype: type) -> np.ndarray:
    """Validate whole-valued labels in 0..num_classes-1."""
    _check_numeric(path, key, array)
    if np.issubdtype(array.dtype, np.floating) and np.any(array != np.round(array)):
        raise DataError(f"{path}: '{key}' has non-integer values")
    bad_rows = np.flatnonzero(((array < 0) | (array >= num_classes)).reshape(len(array), -1).any(axis=1))
    if len(bad_rows):
        row = int(bad_rows[0])
        value = array[row][(array[row] < 0) | (array[row] >= num_classes)].flat[0]
        raise DataError(
            f"{path}: '{key}' has label {value:g} outside 0..{num_classes - 1} "
            f"(row {row}; {len(bad_rows)} bad rows)"
        )
    return array.astype(dtype)


def _check_lengths(path: Path, first: tuple[str, np.ndarray], second: tuple[str, np.ndarray]) -> None:
    if len(first[1]) != len(second[1]):
        raise DataError(
            f"{path}: '{first[0]}' has {len(first[1])} rows but '{second[0]}' has {len(second[1])}"
        )


# --- public loaders ----------------------------------------------------------------------------------------


def load_cells_train(path: str | os.PathLike) -> CellsData:
    """Read and validate a cells `training_set.npz`."""
    path = Path(path)
    raw = _arrays(path, ("images", "labels"))
    images, labels = raw["images"], raw["labels"]
    _check_shape(path, "images", images, CELLS.image_shape)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1:
        raise DataError(f"{path}: 'labels' has shape {_shape_text(labels.shape)}, expected (N, 1) or (N,)")
    if len(labels) == 0:
        raise DataError(f"{path}: 'labels' is empty (0 rows)")
    _check_lengths(path, ("images", images), ("labels", labels))
    labels = _as_labels(path, "labels", labels, CELLS.num_classes, np.int64)
    return CellsData(images=_as_pixels(path, "images", images, np.uint8), labels=labels)


def load_cells_test(path: str | os.PathLike) -> np.ndarray:
    """Read and validate a cells `test_set.npz`; returns uint8 (M, 96, 96, 3)."""
    path = Path(path)
    images = _arrays(path, ("images",))["images"]
    _check_shape(path, "images", images, CELLS.image_shape)
    return _as_pixels(path, "images", images, np.uint8)


def load_mars(path: str | os.PathLike) -> MarsData:
    """Read and validate `mars_for_students.npz` (training images, masks and the unlabelled test set)."""
    path = Path(path)
    raw = _arrays(path, ("training_set", "test_set"))
    train, test = raw["training_set"], raw["test_set"]
    _check_shape(path, "training_set", train, (2, *MARS.image_shape))
    _check_shape(path, "test_set", test, MARS.image_shape)
    images = _as_pixels(path, "training_set[:, 0] (images)", train[:, 0], np.float32)
    masks = _as_labels(path, "training_set[:, 1] (masks)", train[:, 1], MARS.num_classes, np.uint8)
    return MarsData(images=images, masks=masks, test=_as_pixels(path, "test_set", test, np.float32))


def load_mars_test(path: str | os.PathLike) -> np.ndarray:
    """Read only the `test_set` of `mars_for_students.npz`; float32 (M, 64, 128)."""
    path = Path(path)
    test = _arrays(path, ("test_set",))["test_set"]
    _check_shape(path, "test_set", test, MARS.image_shape)
    return _as_pixels(path, "test_set", test, np.float32)


# Task name -> test-file loader.
TEST_LOADERS = {CELLS.name: load_cells_test, MARS.name: load_mars_test}


def load_labels(path: str | os.PathLike) -> np.ndarray:
    """Read `labels` from a `test_labels.npz`: int64 (M,) for cells or (M, 64, 128) for mars.

    The class range is checked by the scorer, which knows the task.
    """
    path = Path(path)
    labels = _arrays(path, ("labels",))["labels"]
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim not in (1, 3):
        mask = ", ".join(map(str, MARS.label_shape))
        raise DataError(f"{path}: 'labels' has rank {labels.ndim}, expected (M,) or (M, {mask})")
    if len(labels) == 0:
        raise DataError(f"{path}: 'labels' is empty (0 rows)")
    return _as_labels(path, "labels", labels, np.iinfo(np.int32).max, np.int64)
