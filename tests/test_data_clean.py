"""Cleaning removes exactly the injected contaminants, and nothing from clean data."""

from __future__ import annotations

import numpy as np

from an2dl_kit.data.clean import REPEAT_THRESHOLD, clean_cells, clean_mars
from an2dl_kit.data.io import CellsData, MarsData, load_cells_train, load_mars
from an2dl_kit.data.synth import synth_cells, synth_cells_truth, synth_mars, synth_mars_truth


def _assert_removed_exactly(report, truth: dict[str, np.ndarray], total: int) -> None:
    assert report.removed == {reason: len(rows) for reason, rows in truth.items()}
    for reason, rows in truth.items():
        np.testing.assert_array_equal(report.removed_rows[reason], rows)
    expected_kept = np.setdiff1d(np.arange(total), np.concatenate(list(truth.values())))
    np.testing.assert_array_equal(report.kept, expected_kept)


def test_cells_cleaning_removes_exactly_the_contaminants():
    data = synth_cells(120, seed=3, contaminants=True)
    cleaned, report = clean_cells(data)
    truth = synth_cells_truth(120, seed=3)
    _assert_removed_exactly(report, truth, len(data))
    assert set(truth) == {"repeated_image", "conflicting_labels", "duplicate"}
    # 120 genuine rows, minus the one whose copy carries another label.
    assert len(cleaned) == 119 and report.total == len(data)
    assert len({row.tobytes() for row in cleaned.images}) == len(cleaned)


def test_mars_cleaning_removes_exactly_the_aliens():
    data, _ = synth_mars(60, 0, seed=1, aliens=True)
    cleaned, report = clean_mars(data)
    truth = synth_mars_truth(60, seed=1)
    _assert_removed_exactly(report, truth, len(data))
    assert len(truth["repeated_mask"]) == REPEAT_THRESHOLD  # max(5, 4% of 60)
    assert len(cleaned) == 60 and cleaned.test is data.test


def test_clean_data_is_untouched():
    cells = synth_cells(80, seed=2)
    assert clean_cells(cells)[1].removed == {}
    mars, _ = synth_mars(40, 0, seed=2)
    _, report = clean_mars(mars)
    assert report.removed == {} and len(report.kept) == 40


def test_repeat_threshold_boundary():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (10, 96, 96, 3), dtype=np.uint8)
    images[1:REPEAT_THRESHOLD] = images[0]  # 5 copies of one image, same label
    _, report = clean_cells(CellsData(images, np.zeros(10, np.int64)))
    assert report.removed == {"repeated_image": REPEAT_THRESHOLD}
    images[REPEAT_THRESHOLD - 1] = rng.integers(0, 256, (96, 96, 3))  # now 4 copies: plain duplicates
    _, report = clean_cells(CellsData(images, np.zeros(10, np.int64)))
    assert report.removed == {"duplicate": REPEAT_THRESHOLD - 2}
    assert report.kept.tolist() == [0, *range(REPEAT_THRESHOLD - 1, 10)]


def test_conflicting_pair_loses_both_copies():
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, (4, 96, 96, 3), dtype=np.uint8)
    images[3] = images[1]
    _, report = clean_cells(CellsData(images, np.array([0, 1, 2, 5])))
    assert report.removed == {"conflicting_labels": 2} and report.kept.tolist() == [0, 2]
    assert report.lines() == ["kept 2 of 4 samples", "removed 2: the same image occurs with different labels"]


def test_simple_repeated_masks_are_natural():
    """One terrain class plus a fixed unlabelled strip recurs in real data; it must not look like aliens."""
    rng = np.random.default_rng(2)
    images = rng.uniform(0, 255, (8, 64, 128)).astype(np.float32)
    masks = np.ones((8, 64, 128), np.uint8)
    masks[:, -3:] = 0
    data = MarsData(images, masks, np.zeros((1, 64, 128), np.float32))
    assert clean_mars(data)[1].removed == {}
    masks[:, :10] = 2  # now two terrain classes, shared by 8 images
    assert clean_mars(data)[1].removed == {"repeated_mask": 8}


def test_real_stand_in_data_has_no_false_positives(shared_data):
    _, cells_report = clean_cells(load_cells_train(shared_data / "cells" / "training_set.npz"))
    _, mars_report = clean_mars(load_mars(shared_data / "mars" / "mars_for_students.npz"))
    assert cells_report.removed == {} and mars_report.removed == {}
