"""Probabilities kept beside every submission (`test_probs.npz`, `val_probs.npz`), written and read in chunks.

Why: averaging runs, seeds and folds (`an2dl_kit.inference.ensemble`) needs each run's probabilities, not its labels,
and a run's probabilities cannot be recomputed once its kernel session is gone. The Mars maps are too large to
hold casually (10,022 x 64 x 128 x 5 float32 is 1.6 GB), so the file is written and read as a stream: the
runner appends each chunk of test predictions as it goes, the ensemble reads every member chunk by chunk.

Every run also keeps its validation predictions in `val_probs.npz`, in the same format: out-of-fold scores and
fold ensembles (K-fold runs, `data.folds`) need every fold's, and the validation labels travel with them, so a
downloaded kernel output is scored without the training data.

The file is an ordinary npz (`np.load` reads it) with two members, and for validation two more:
- `probs.npy`: the task's scored classes (`TaskInfo.scored_classes`). Classification: float16 (M, K).
  Dense tasks: uint8 (M, H, W, K), the scored classes renormalised to sum to one, then rounded to 0..255.
  Mars never predicts background, so its channel is not kept, and renormalising spends the 8 bits on the
  classes that compete for the arg-max (a map that is 90% background would otherwise keep 25 levels).
- `meta.npy`: one JSON string: the task, the stored classes and encoding, the test set's fingerprint and
  shape (runs on different test files are never mixed), the validation score of the submitted predictions,
  the TTA views and the model files that made them.
- `index.npy`, `labels.npy` (validation files): each row's index in the cleaned training set and its true
  labels (int64, and the labels as loaded: uint8 masks or class ids), written whole before the probabilities.

`probs.npy` is deflated as it is written; the zip's CRC-32, checked when a member is read to its end, and
the sizes checked when a file is opened turn a truncated or corrupted file into a one-line `KitError`.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import zipfile
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from an2dl_kit.errors import KitError
from an2dl_kit.files import atomic_path
from an2dl_kit.task import TaskInfo

PROBS_FILE = "test_probs.npz"
VAL_PROBS_FILE = "val_probs.npz"
PROBS_MEMBER = "probs.npy"
META_MEMBER = "meta.npy"
INDEX_MEMBER, LABELS_MEMBER = "index.npy", "labels.npy"
SCHEMA = 1
# Deflate level 1: on quantised maps it compresses almost as well as level 6 at a fraction of the time.
COMPRESS_LEVEL = 1
# Test images per chunk read: 512 Mars tiles are 16 MB stored, 67 MB as float32.
READ_CHUNK = 512
HEADER_READERS = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
# Exceptions that a damaged zip, deflate stream or npy header raise while reading.
DAMAGED = (zipfile.BadZipFile, zlib.error, EOFError, OSError, ValueError, KeyError, json.JSONDecodeError)


@dataclass(frozen=True)
class Encoding:
    """How a task's probabilities are stored: which classes, as float16 or quantised to uint8."""

    classes: tuple[int, ...]
    dtype: str

    def encode(self, probabilities: np.ndarray) -> np.ndarray:
        """(n, ..., num_classes) probabilities -> the stored array (n, ..., len(classes))."""
        kept = np.asarray(probabilities, np.float32)[..., list(self.classes)]
        if self.dtype == "float16":
            return kept.astype(np.float16)
        kept /= np.maximum(kept.sum(axis=-1, keepdims=True), 1e-12)
        return np.rint(kept * 255.0).astype(np.uint8)

    def decode(self, stored: np.ndarray) -> np.ndarray:
        """The stored array as float32 probabilities over `classes`."""
        values = np.asarray(stored, np.float32)
        return values / 255.0 if self.dtype == "uint8" else values

    def labels(self, probabilities: np.ndarray) -> np.ndarray:
        """The arg-max over the stored classes, as class labels (Mars: 1-4, never background)."""
        return np.asarray(self.classes, np.uint8)[np.argmax(probabilities, axis=-1)]


def encoding_for(info: TaskInfo, dense: bool) -> Encoding:
    """Dense tasks: uint8 over the scored classes (size); classification: float16 over every class."""
    return Encoding(info.scored_classes, "uint8" if dense else "float16")


def fingerprint(*arrays: np.ndarray) -> str:
    """sha256 of arrays as the loaders return them (dtype, shape and bytes of each): equal only for the same
    data (a test set; the cleaned training images and labels), whatever file or folder it was read from."""
    digest = hashlib.sha256()
    for array in map(np.ascontiguousarray, arrays):
        digest.update(f"{array.dtype.str}{array.shape}".encode())
        digest.update(memoryview(array.reshape(-1)).cast("B"))
    return digest.hexdigest()


@dataclass
class Writer:
    """The open `probs.npy` stream of `writer`; `meta` is completed by the caller before the file closes."""

    stream: Any
    encoding: Encoding
    shape: tuple[int, ...]
    meta: dict
    rows: int = 0

    def write(self, probabilities: np.ndarray) -> None:
        """Append the next chunk of test probabilities (n, ..., num_classes), in test-set order."""
        encoded = self.encoding.encode(probabilities)
        if encoded.shape[1:] != self.shape[1:] or self.rows + len(encoded) > self.shape[0]:
            raise ValueError(f"probability chunk {encoded.shape} does not continue {self.shape} at row {self.rows}")
        self.stream.write(np.ascontiguousarray(encoded).tobytes())
        self.rows += len(encoded)


@contextlib.contextmanager
def writer(path: str | Path, *, task: str, encoding: Encoding, rows: int, item_shape: tuple[int, ...],
           test_fingerprint: str | None = None, index: np.ndarray | None = None,
           labels: np.ndarray | None = None) -> Iterator[Writer]:
    """Stream one run's probabilities into `path`, atomically: the file appears complete or not at all.

    Args:
        path: the npz to write (`PROBS_FILE` or `VAL_PROBS_FILE` in a run folder).
        task: the task's name, recorded and checked by the ensemble.
        encoding: `encoding_for(info, dense)`.
        rows: images; every one must be written before the block ends.
        item_shape: one image's prediction without the class axis: () or (H, W).
        test_fingerprint: `fingerprint(test)` of the test set predicted (test files).
        index, labels: validation files: each row's index in the cleaned training set and its true labels.
    """
    shape = (rows, *item_shape, len(encoding.classes))
    arrays = {} if index is None else {INDEX_MEMBER: np.asarray(index, np.int64), LABELS_MEMBER: np.asarray(labels)}
    kind = "validation" if arrays else "test"
    meta = {"schema": SCHEMA, "kind": kind, "task": task, "classes": list(encoding.classes),
            "encoding": encoding.dtype, "shape": list(shape)}
    meta.update({"test_fingerprint": test_fingerprint, "test_shape": list(shape)} if kind == "test" else {})
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED,
                                                    compresslevel=COMPRESS_LEVEL) as archive:
        for member, array in arrays.items():
            if len(array) != rows:
                raise ValueError(f"{path}: {member} holds {len(array)} rows, not {rows}")
            archive.writestr(member, _npy_bytes(array))
        with archive.open(PROBS_MEMBER, "w", force_zip64=True) as stream:
            header = {"descr": np.lib.format.dtype_to_descr(np.dtype(encoding.dtype)), "fortran_order": False,
                      "shape": shape}
            np.lib.format.write_array_header_2_0(stream, header)
            sink = Writer(stream, encoding, shape, meta)
            yield sink
        if sink.rows != rows:
            raise ValueError(f"{path}: {sink.rows} of {rows} rows written")
        archive.writestr(META_MEMBER, _npy_bytes(np.array(json.dumps(sink.meta))))


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@dataclass(frozen=True)
class Stored:
    """One run's probabilities file, opened and checked (`open_stored`); `chunks` streams its rows. A
    validation file's `index` and `labels` are read on opening."""

    path: Path
    meta: dict
    encoding: Encoding
    shape: tuple[int, ...]
    data_offset: int = field(repr=False)
    index: np.ndarray | None = field(default=None, repr=False)
    labels: np.ndarray | None = field(default=None, repr=False)

    def read(self) -> np.ndarray:
        """Every row at once (validation files, which are small), as float32 probabilities."""
        return np.concatenate(list(self.chunks())) if self.shape[0] else np.zeros(self.shape, np.float32)

    def chunks(self, rows: int = READ_CHUNK) -> Iterator[np.ndarray]:
        """float32 probabilities over the stored classes, `rows` test images at a time; a damaged stream is
        a `KitError` naming the file (the CRC-32 is checked when the last chunk is read)."""
        item = self.shape[1:]
        row_bytes = int(np.prod(item)) * np.dtype(self.encoding.dtype).itemsize
        try:
            with zipfile.ZipFile(self.path) as archive, archive.open(PROBS_MEMBER) as stream:
                stream.read(self.data_offset)
                for start in range(0, self.shape[0], rows):
                    count = min(rows, self.shape[0] - start)
                    data = stream.read(count * row_bytes)
                    if len(data) != count * row_bytes:
                        raise EOFError(f"ends at row {start + len(data) // row_bytes}")
                    yield self.encoding.decode(np.frombuffer(data, self.encoding.dtype).reshape(count, *item))
                if stream.read(1):
                    raise ValueError("holds more rows than its header says")
        except DAMAGED as error:
            raise KitError(f"{self.path}: corrupted probabilities ({_reason(error)}); re-download or re-run "
                           "that run") from None


def open_stored(path: str | Path) -> Stored:
    """Open a probabilities file and check it without reading its maps: every member, the metadata, the
    header against the metadata, and the stored size against the header (a short or long stream); a
    validation file's index and labels are read and must hold a row each."""
    path = Path(path)
    if not path.is_file():
        raise KitError(f"{path.parent}: no {path.name} (runs made before the kit kept probabilities cannot be "
                       "ensembled; re-run them)")
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(str(_read_member(archive, META_MEMBER)))
            info = archive.getinfo(PROBS_MEMBER)
            with archive.open(PROBS_MEMBER) as stream:
                read_header = HEADER_READERS[np.lib.format.read_magic(stream)]
                shape, _, dtype = read_header(stream)
                offset = stream.tell()
            validation = meta.get("kind") == "validation"
            index, labels = ((_read_member(archive, INDEX_MEMBER), _read_member(archive, LABELS_MEMBER))
                             if validation else (None, None))
    except DAMAGED as error:
        raise KitError(f"{path}: not a readable probabilities file ({_reason(error)}); re-download or re-run "
                       "that run") from None
    encoding = Encoding(tuple(meta.get("classes", ())), str(meta.get("encoding")))
    expected = (tuple(meta.get("shape", meta.get("test_shape", ()))), encoding.dtype)
    if meta.get("schema") != SCHEMA or (tuple(shape), dtype.name) != expected:
        raise KitError(f"{path}: header {dtype.name} {tuple(shape)} does not match its metadata "
                       f"{expected[1]} {expected[0]}")
    if info.file_size != offset + int(np.prod(shape)) * dtype.itemsize:
        raise KitError(f"{path}: probabilities hold {info.file_size - offset} bytes, expected "
                       f"{int(np.prod(shape)) * dtype.itemsize} for {tuple(shape)}")
    if validation and not (len(index) == len(labels) == shape[0] and index.dtype == np.int64):
        raise KitError(f"{path}: {len(index)} indices and {len(labels)} labels for {shape[0]} validation rows")
    return Stored(path, meta, encoding, tuple(shape), offset, index, labels)


def _read_member(archive: zipfile.ZipFile, name: str) -> np.ndarray:
    """One whole npy member (its CRC-32 checked, since it is read to its end)."""
    with archive.open(name) as stream:
        return np.lib.format.read_array(stream, allow_pickle=False)


def _reason(error: BaseException) -> str:
    text = str(error).splitlines()[0] if str(error) else ""
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
