"""Leaderboard files: write them atomically, read them back exactly, and validate them before submitting.

Mars (Kaggle): `id,0,1,...,8191`, one row per test image in test-set order, each 64x128 mask flattened
row-major, integer labels 0..4 (the layout of the course's `y_to_df` + `to_csv(index=False)`). The course test
set gives 10,022 rows of 8,193 columns (about 165 MB): written in chunks, read with numpy in a few seconds.
Cells (local scoring; the challenge itself took a model upload): `id,label`, id = row in `test_set.npz`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from an2dl_kit.errors import DataError, SubmissionError
from an2dl_kit.files import atomic_path
from an2dl_kit.task import CELLS, MARS, TASKS

MARS_PIXELS = int(np.prod(MARS.label_shape))
MARS_HEADER = "id," + ",".join(str(i) for i in range(MARS_PIXELS))
CELLS_HEADER = "id,label"
HEADERS = {CELLS.name: CELLS_HEADER, MARS.name: MARS_HEADER}
COMMA, NEWLINE, ZERO = ord(","), ord("\n"), ord("0")


# --- writing -----------------------------------------------------------------------------------------------


def _integer_labels(path: Path, labels: np.ndarray, num_classes: int) -> np.ndarray:
    labels = np.asarray(labels)
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.all(np.isfinite(labels)) or np.any(labels != np.round(labels)):
            raise SubmissionError(f"{path}: labels must be whole numbers (got dtype {labels.dtype})")
    labels = labels.astype(np.int64)
    bad = (labels < 0) | (labels >= num_classes)
    if bad.any():
        raise SubmissionError(
            f"{path}: label {labels[bad].flat[0]} outside 0..{num_classes - 1} (row "
            f"{int(np.argmax(bad.reshape(len(labels), -1).any(axis=1)))})"
        )
    return labels


def write_cells_csv(path: str | os.PathLike, labels: np.ndarray) -> Path:
    """Write `id,label` for predicted class ids (M,)."""
    path = Path(path)
    labels = _integer_labels(path, np.asarray(labels).reshape(-1), CELLS.num_classes)
    lines = [CELLS_HEADER] + [f"{i},{label}" for i, label in enumerate(labels)]
    with atomic_path(path) as tmp:
        tmp.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _mars_rows(masks: np.ndarray, start: int) -> bytes:
    """CSV bytes for a chunk of masks: labels are single digits, so a row is built by byte interleaving."""
    n = len(masks)
    body = np.full((n, 2 * MARS_PIXELS + 1), COMMA, dtype=np.uint8)  # ",d" per pixel, then "\n"
    body[:, 1:-1:2] = masks.reshape(n, -1) + ZERO
    body[:, -1] = NEWLINE
    ids = [f"{start + i}".encode() for i in range(n)]
    return b"".join(i + row.tobytes() for i, row in zip(ids, body, strict=True))


def write_mars_csv(path: str | os.PathLike, masks: np.ndarray, chunk_rows: int = 512) -> Path:
    """Write the Kaggle CSV for predicted masks (M, 64, 128) with labels 0..4, `chunk_rows` rows at a time."""
    path = Path(path)
    masks = np.asarray(masks)
    if masks.shape[1:] != MARS.label_shape:
        raise SubmissionError(
            f"{path}: masks have shape {masks.shape}, expected (M, {', '.join(map(str, MARS.label_shape))})"
        )
    masks = _integer_labels(path, masks, MARS.num_classes).astype(np.uint8)
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        handle.write(MARS_HEADER.encode() + b"\n")
        for start in range(0, len(masks), chunk_rows):
            handle.write(_mars_rows(masks[start : start + chunk_rows], start))
    return path


# Task name -> (path, labels) -> path written.
WRITERS = {CELLS.name: write_cells_csv, MARS.name: write_mars_csv}


# --- reading -----------------------------------------------------------------------------------------------


def _lines(path: Path) -> list[bytes]:
    if not path.is_file():
        raise SubmissionError(f"{path}: no such file")
    data = path.read_bytes()
    if not data.strip():
        raise SubmissionError(f"{path}: empty file")
    if b"\r" in data:  # skips a copy of the whole file for the usual LF-only CSV
        data = data.replace(b"\r\n", b"\n")
    lines = data.split(b"\n")
    while lines and not lines[-1].strip():
        lines.pop()
    return lines


def _check_header(path: Path, got: bytes, expected: str) -> None:
    names = got.decode("utf-8", errors="replace").strip().lstrip("\ufeff").split(",")
    wanted = expected.split(",")
    for index, (name, want) in enumerate(zip(names, wanted, strict=False)):
        if name.strip() != want:
            raise SubmissionError(f"{path}: header column {index} is '{name}', expected '{want}'")
    if len(names) != len(wanted):
        raise SubmissionError(
            f"{path}: header has {len(names)} columns, expected {len(wanted)} ({wanted[0]}, "
            f"{', '.join(wanted[1:3])}{', ...' if len(wanted) > 3 else ''})"
        )


def _field_error(path: Path, row: int, column: str, text: str, num_classes: int) -> SubmissionError:
    where = f"{path}: row {row} (line {row + 2}), column '{column}'"
    if not text.strip():
        return SubmissionError(f"{where}: empty cell")
    try:
        value = float(text)
    except ValueError:
        return SubmissionError(f"{where}: '{text}' is not an integer label")
    if not np.isfinite(value):
        return SubmissionError(f"{where}: '{text}' is not a label (NaN/inf)")
    if value != int(value):
        return SubmissionError(f"{where}: '{text}' is not an integer label")
    return SubmissionError(f"{where}: label {text} outside 0..{num_classes - 1}")


def _parse_row_slow(path: Path, row: int, line: bytes, columns: list[str], num_classes: int) -> np.ndarray:
    """Field-by-field parse of an irregular row; raises the first problem with its row and column."""
    fields = line.decode("utf-8", errors="replace").strip().split(",")
    if len(fields) != len(columns):
        raise SubmissionError(
            f"{path}: row {row} (line {row + 2}) has {len(fields)} fields, expected {len(columns)}"
        )
    values = np.empty(len(fields), dtype=np.int64)
    limits = [None] + [num_classes] * (len(fields) - 1)
    for index, (text, limit) in enumerate(zip(fields, limits, strict=True)):
        text = text.strip()
        if not (text.isdigit() or (text.startswith("-") and text[1:].isdigit())):
            raise _field_error(path, row, columns[index], text, limit or np.iinfo(np.int64).max)
        values[index] = int(text)
        if limit is not None and not 0 <= values[index] < limit:
            raise _field_error(path, row, columns[index], text, limit)
    return values


def _read_ids_and_rows(path: Path, header: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Parse a CSV whose data fields are single digits on the fast path; irregular rows go field by field."""
    lines = _lines(path)
    _check_header(path, lines[0], header)
    columns = header.split(",")
    width = 2 * (len(columns) - 1) - 1  # digits and commas after the id
    rests = [line.rstrip(b"\r ").partition(b",") for line in lines[1:]]
    if all(len(rest) == width and head.isdigit() for head, _, rest in rests):
        raw = np.frombuffer(b"".join(rest for _, _, rest in rests), dtype=np.uint8).reshape(len(rests), width)
        digits = raw[:, 0::2] - ZERO
        if (raw[:, 1::2] == COMMA).all() and (digits < num_classes).all():
            return np.array([int(head) for head, _, _ in rests], dtype=np.int64), digits
    ids = np.empty(len(lines) - 1, dtype=np.int64)
    values = np.empty((len(lines) - 1, len(columns) - 1), dtype=np.uint8)
    for row, line in enumerate(lines[1:]):
        line = line.rstrip(b"\r ")
        head, _, rest = line.partition(b",")
        fast = len(rest) == width and head.isdigit()
        if fast:
            raw = np.frombuffer(rest, dtype=np.uint8)
            digits = raw[0::2] - ZERO
            fast = bool((raw[1::2] == COMMA).all() and (digits < num_classes).all())
        if fast:
            ids[row], values[row] = int(head), digits
        else:
            parsed = _parse_row_slow(path, row, line, columns, num_classes)
            ids[row], values[row] = parsed[0], parsed[1:]
    return ids, values


def _check_ids(path: Path, ids: np.ndarray, n_test: int | None = None) -> None:
    """Row count against the test set (naming missing or unexpected ids), then ids 0..M-1 in order."""
    if n_test is not None and len(ids) != n_test:
        missing = np.setdiff1d(np.arange(n_test), ids)
        extra = np.setdiff1d(ids, np.arange(n_test))
        detail = [f"{len(missing)} missing id(s), first {missing[0]}"] if len(missing) else []
        detail += [f"{len(extra)} unexpected id(s), first {extra[0]}"] if len(extra) else []
        raise SubmissionError(
            f"{path}: {len(ids)} rows but the test set has {n_test} ({'; '.join(detail) or 'duplicate ids'})"
        )
    wrong = np.flatnonzero(ids != np.arange(len(ids)))
    if len(wrong):
        row = int(wrong[0])
        raise SubmissionError(
            f"{path}: row {row} (line {row + 2}) has id {ids[row]}, expected {row} "
            f"(ids must be 0..M-1 in test-set order)"
        )


def _read(path: Path, task: str, n_test: int | None = None) -> np.ndarray:
    info = TASKS[task]
    ids, values = _read_ids_and_rows(path, HEADERS[task], info.num_classes)
    _check_ids(path, ids, n_test)
    return values.reshape(-1, *info.label_shape) if info.label_shape else values[:, 0].astype(np.int64)


def read_cells_csv(path: str | os.PathLike) -> np.ndarray:
    """Read an `id,label` CSV back; returns int64 labels (M,) after checking header, ids and labels."""
    return _read(Path(path), CELLS.name)


def read_mars_csv(path: str | os.PathLike) -> np.ndarray:
    """Read a Mars CSV back exactly: uint8 masks (M, 64, 128), after checking header, ids and labels."""
    return _read(Path(path), MARS.name)


# --- validation --------------------------------------------------------------------------------------------


def read_checked(path: str | os.PathLike, task: str, n_test: int | None) -> tuple[np.ndarray, str]:
    """`check_submission` that also returns the labels read (cells (M,), mars (M, 64, 128))."""
    path = Path(path)
    info = TASKS[task]
    labels = _read(path, task, n_test)
    # count_nonzero per class: bincount would first copy 82 M uint8 labels to intp on the course test set.
    counts = np.array([np.count_nonzero(labels == c) for c in range(info.num_classes)])
    shares = ", ".join(f"{c}:{n / max(counts.sum(), 1):.1%}" for c, n in enumerate(counts))
    summary = f"{path}: OK, {task}, {len(labels)} rows, label shares {shares}"
    if info.ignored_class is not None and counts[info.ignored_class]:
        summary += f" ({info.class_names[info.ignored_class]} predictions score as errors on labelled pixels)"
    return labels, summary


def check_submission(path: str | os.PathLike, task: str, n_test: int | None) -> str:
    """Validate a leaderboard CSV; return a one-line summary or raise SubmissionError naming the problem.

    Checks: header (a renamed column is named), one row per test image (`n_test`; None checks the format
    only), ids 0..M-1 in order, every label a whole number in the task's range, no NaN or empty cell.
    """
    return read_checked(path, task, n_test)[1]


def count_test_rows(task: str, path: str | os.PathLike) -> int:
    """Number of test images in a test file: cells `test_set.npz` (`images`), `mars_for_students.npz`
    (`test_set`), or either task's `test_labels.npz` (`labels`); read from the npz header only."""
    from an2dl_kit.data.io import npz_shape

    path = Path(path)
    keys = {CELLS.name: ("images", "labels"), MARS.name: ("test_set", "labels")}[TASKS.check(task)]
    for key in keys:
        try:
            return npz_shape(path, key)[0]
        except DataError as error:
            if "missing key" not in str(error):
                raise
    raise DataError(f"{path}: no '{keys[0]}' array (expected the {task} test file)")


def cli(args: argparse.Namespace) -> int:
    """`an2dl check FILE --task cells|mars [--test NPZ]`."""
    n_test = count_test_rows(args.task, args.test) if args.test else None
    print(check_submission(args.file, args.task, n_test))
    if n_test is None:
        print("format only: pass --test to check the row count against the test set")
    return 0
