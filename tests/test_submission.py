"""Leaderboard CSVs: exact round trips, the course layout, atomic writes, one precise message per fault."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from an2dl_kit import submission
from an2dl_kit.errors import SubmissionError
from an2dl_kit.submission import (
    check_submission,
    count_test_rows,
    read_cells_csv,
    read_mars_csv,
    write_cells_csv,
    write_mars_csv,
)


@pytest.fixture
def masks():
    return np.random.default_rng(0).integers(0, 5, (7, 64, 128)).astype(np.uint8)


@pytest.fixture
def mars_csv(tmp_path, masks):
    return write_mars_csv(tmp_path / "submission.csv", masks, chunk_rows=3)


def _lines(path):
    return path.read_text().splitlines()


def _refused(path, task="mars", n_test=7) -> str:
    with pytest.raises(SubmissionError) as info:
        check_submission(path, task, n_test)
    message = str(info.value)
    assert "\n" not in message and message.startswith(f"{path}: ")
    return message[len(f"{path}: ") :]


def test_mars_round_trip_is_exact(mars_csv, masks):
    np.testing.assert_array_equal(read_mars_csv(mars_csv), masks)
    assert check_submission(mars_csv, "mars", 7).startswith(f"{mars_csv}: OK, mars, 7 rows")


def test_mars_csv_matches_course_y_to_df(mars_csv, masks, tmp_path):
    """Byte-identical to the course helper: DataFrame of flat masks, `id` first, to_csv(index=False)."""
    df = pd.DataFrame(masks.reshape(len(masks), -1))
    df["id"] = np.arange(len(masks))
    df[["id"] + [c for c in df.columns if c != "id"]].to_csv(tmp_path / "course.csv", index=False)
    assert (tmp_path / "course.csv").read_bytes() == mars_csv.read_bytes()


def test_cells_round_trip(tmp_path):
    labels = np.array([0, 7, 3, 3, 1])
    path = write_cells_csv(tmp_path / "cells.csv", labels)
    assert _lines(path)[:3] == ["id,label", "0,0", "1,7"]
    np.testing.assert_array_equal(read_cells_csv(path), labels)
    assert "5 rows" in check_submission(path, "cells", 5)


def test_missing_row_is_refused(mars_csv):
    lines = _lines(mars_csv)
    mars_csv.write_text("\n".join(lines[:4] + lines[5:]) + "\n")
    assert (
        _refused(mars_csv, n_test=None)
        == "row 3 (line 5) has id 4, expected 3 (ids must be 0..M-1 in test-set order)"
    )
    assert _refused(mars_csv) == "6 rows but the test set has 7 (1 missing id(s), first 3)"
    mars_csv.write_text("\n".join(lines[:-1]) + "\n")
    assert _refused(mars_csv) == "6 rows but the test set has 7 (1 missing id(s), first 6)"


def test_extra_rows_are_refused(mars_csv):
    lines = _lines(mars_csv)
    mars_csv.write_text("\n".join(lines + [lines[-1]]) + "\n")
    assert _refused(mars_csv) == "8 rows but the test set has 7 (duplicate ids)"
    mars_csv.write_text("\n".join(lines + ["7" + lines[-1][1:]]) + "\n")
    assert _refused(mars_csv) == "8 rows but the test set has 7 (1 unexpected id(s), first 7)"


def test_renamed_column_is_named(mars_csv):
    lines = _lines(mars_csv)
    lines[0] = lines[0].replace(",17,", ",pixel_17,")
    mars_csv.write_text("\n".join(lines) + "\n")
    assert _refused(mars_csv) == "header column 18 is 'pixel_17', expected '17'"
    lines[0] = "ID" + lines[0][2:]
    mars_csv.write_text("\n".join(lines) + "\n")
    assert _refused(mars_csv) == "header column 0 is 'ID', expected 'id'"


def test_label_7_is_named_with_row_and_column(mars_csv):
    lines = _lines(mars_csv)
    fields = lines[3].split(",")
    fields[1 + 130] = "7"
    lines[3] = ",".join(fields)
    mars_csv.write_text("\n".join(lines) + "\n")
    assert _refused(mars_csv) == "row 2 (line 4), column '130': label 7 outside 0..4"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("", "empty cell"),
        ("nan", "'nan' is not a label (NaN/inf)"),
        ("1.5", "'1.5' is not an integer label"),
        ("-1", "label -1 outside 0..4"),
        ("x", "'x' is not an integer label"),
    ],
)
def test_bad_cells_are_named(mars_csv, value, problem):
    lines = _lines(mars_csv)
    fields = lines[1].split(",")
    fields[1 + 8191] = value
    lines[1] = ",".join(fields)
    mars_csv.write_text("\n".join(lines) + "\n")
    assert _refused(mars_csv) == f"row 0 (line 2), column '8191': {problem}"


def test_short_row_and_short_header(mars_csv):
    lines = _lines(mars_csv)
    mars_csv.write_text("\n".join([lines[0], lines[1].rsplit(",", 1)[0]] + lines[2:]) + "\n")
    assert _refused(mars_csv) == "row 0 (line 2) has 8192 fields, expected 8193"
    mars_csv.write_text("\n".join([lines[0].rsplit(",", 1)[0]] + lines[1:]) + "\n")
    assert _refused(mars_csv) == "header has 8192 columns, expected 8193 (id, 0, 1, ...)"


def test_cells_label_out_of_range(tmp_path):
    path = tmp_path / "cells.csv"
    path.write_text("id,label\n0,1\n1,8\n")
    assert _refused(path, "cells", 2) == "row 1 (line 3), column 'label': label 8 outside 0..7"


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    assert _refused(tmp_path / "empty.csv") == "empty file"
    assert _refused(tmp_path / "absent.csv") == "no such file"


def test_writer_refuses_out_of_range_and_bad_shape(tmp_path, masks):
    masks[1, 2, 3] = 7
    with pytest.raises(SubmissionError, match=r"label 7 outside 0..4 \(row 1\)"):
        write_mars_csv(tmp_path / "s.csv", masks)
    with pytest.raises(SubmissionError, match="expected"):
        write_mars_csv(tmp_path / "s.csv", masks[:, :32])
    assert not (tmp_path / "s.csv").exists()


def test_interrupted_write_leaves_no_file(tmp_path, masks, monkeypatch):
    calls = []

    def failing_rows(chunk, start):
        calls.append(start)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return original(chunk, start)

    original = submission._mars_rows
    monkeypatch.setattr(submission, "_mars_rows", failing_rows)
    with pytest.raises(KeyboardInterrupt):
        write_mars_csv(tmp_path / "s.csv", masks, chunk_rows=2)
    assert list(tmp_path.iterdir()) == []


def test_interrupted_rewrite_keeps_previous_file(mars_csv, masks, monkeypatch):
    before = mars_csv.read_bytes()
    monkeypatch.setattr(submission, "_mars_rows", lambda chunk, start: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        write_mars_csv(mars_csv, masks)
    assert mars_csv.read_bytes() == before
    assert [p.name for p in mars_csv.parent.iterdir()] == ["submission.csv"]


def test_count_test_rows(synthetic_dir):
    assert count_test_rows("mars", synthetic_dir / "mars" / "mars_for_students.npz") == 8
    assert count_test_rows("mars", synthetic_dir / "mars" / "test_labels.npz") == 8
    assert count_test_rows("cells", synthetic_dir / "cells" / "test_set.npz") == 16
