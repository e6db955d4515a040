"""Metrics: hand-computed mIoU, equality with Keras MeanIoU(ignore_class=0), cells scores, scoring files."""

from __future__ import annotations

import numpy as np
import pytest

from an2dl_kit.errors import SubmissionError
from an2dl_kit.metrics import (
    cells_scores,
    class_errors,
    confusion_matrix,
    format_class_errors,
    format_scores,
    mars_scores,
    score_files,
)
from an2dl_kit.submission import write_cells_csv, write_mars_csv


def test_hand_computed_miou():
    y_true = np.array([[0, 1, 1, 2], [2, 3, 3, 0]])
    y_pred = np.array([[1, 1, 0, 2], [3, 3, 3, 2]])
    scores = mars_scores(y_true, y_pred)
    # Labelled pairs (t, p): (1,1) (1,0) (2,2) (2,3) (3,3) (3,3). IoU: class 0 -> 0/1 (background predicted on
    # a soil pixel), 1 -> 1/2, 2 -> 1/2, 3 -> 2/3, 4 absent (not averaged).
    assert scores["miou"] == pytest.approx((0 + 0.5 + 0.5 + 2 / 3) / 4)
    assert scores["iou"]["soil"] == pytest.approx(0.5) and scores["iou"]["sand"] == pytest.approx(2 / 3)
    assert np.isnan(scores["iou"]["big rock"])
    assert scores["pixel_accuracy"] == pytest.approx(4 / 6)
    assert scores["background_predicted"] == pytest.approx(1 / 6)


def test_class_errors_hand_computed():
    # Big rock (4): 10 true pixels, 4 found, 5 called bedrock, 1 sand; 2 soil and 2 bedrock pixels called rock.
    y_true = np.array([4] * 10 + [1] * 2 + [2] * 2)
    y_pred = np.array([4] * 4 + [2] * 5 + [3] + [4] * 2 + [4] * 2)
    cm = mars_scores(y_true, y_pred)["confusion_matrix"]
    errors = class_errors(cm, 4)
    assert errors["recall"] == pytest.approx(0.4) and errors["precision"] == pytest.approx(0.5)
    assert errors["missed_as"] == pytest.approx({0: 0.0, 1: 0.0, 2: 5 / 6, 3: 1 / 6})
    assert format_class_errors(cm, 4, ("background", "soil", "bedrock", "sand", "big rock")) == (
        "big rock: recall 0.40, precision 0.50; missed pixels predicted as bedrock 83%, sand 17%")
    assert format_scores("mars", mars_scores(y_true, y_pred)).endswith("bedrock 83%, sand 17%")


def test_class_errors_of_an_absent_or_perfect_class():
    absent = class_errors(confusion_matrix([1, 2], [1, 2], 5), 4)
    assert np.isnan(absent["recall"]) and np.isnan(absent["precision"])
    perfect = confusion_matrix([4, 4, 1], [4, 4, 1], 5)
    assert class_errors(perfect, 4)["missed_as"] == {0: 0.0, 1: 0.0, 2: 0.0, 3: 0.0}
    assert format_class_errors(perfect, 4, tuple("abcde")).endswith("missed pixels predicted as nothing else")


def test_no_background_prediction_means_no_zero_term():
    y_true = np.array([0, 1, 2, 2])
    assert mars_scores(y_true, np.array([0, 1, 2, 2]))["miou"] == pytest.approx(1.0)
    assert mars_scores(y_true, np.array([3, 1, 2, 2]))["miou"] == pytest.approx(1.0)  # true-0 pixel dropped


def test_confusion_matrix_layout_and_out_of_range():
    cm = confusion_matrix([0, 1, 1, 2, 9], [1, 1, 2, 2, 0], 3)
    assert cm.tolist() == [[0, 1, 0], [0, 1, 1], [0, 0, 1]]


def test_matches_keras_mean_iou():
    import keras

    rng = np.random.default_rng(0)
    cases = []
    for _ in range(3):
        y_true = rng.integers(0, 4, (6, 16, 32))  # big rock absent from the truth
        y_pred = rng.integers(0, 5, (6, 16, 32))  # background and big rock predicted
        cases.append((y_true, y_pred))
    y_true = rng.choice([0, 1, 2, 4], (4, 8, 8))
    cases.append((y_true, np.where(rng.random(y_true.shape) < 0.7, y_true, 1)))  # no background predicted
    for y_true, y_pred in cases:
        metric = keras.metrics.MeanIoU(num_classes=5, ignore_class=0)
        metric.update_state(y_true, y_pred)
        assert mars_scores(y_true, y_pred)["miou"] == pytest.approx(float(metric.result()), rel=1e-6)


def test_cells_scores_hand_computed():
    scores = cells_scores([0, 0, 1, 1, 2], [0, 1, 1, 1, 0])
    assert scores["accuracy"] == pytest.approx(3 / 5)
    # Classes present: 0, 1, 2. Precision 1/2, 2/3, 0; recall 1/2, 1, 0; F1 1/2, 4/5, 0.
    assert scores["precision"] == pytest.approx((1 / 2 + 2 / 3) / 3)
    assert scores["recall"] == pytest.approx((1 / 2 + 1) / 3)
    assert scores["f1"] == pytest.approx((1 / 2 + 4 / 5) / 3)
    assert scores["confusion_matrix"].shape == (8, 8) and scores["confusion_matrix"][1, 1] == 2


def test_score_files(tmp_path, synthetic_dir):
    labels_path = synthetic_dir / "mars" / "test_labels.npz"
    truth = np.load(labels_path)["labels"]
    perfect = write_mars_csv(tmp_path / "mars.csv", np.where(truth == 0, 1, truth))
    assert score_files("mars", perfect, labels_path)["miou"] == pytest.approx(1.0)
    cells_truth = np.load(synthetic_dir / "cells" / "test_labels.npz")["labels"]
    cells_csv = write_cells_csv(tmp_path / "cells.csv", cells_truth)
    assert score_files("cells", cells_csv, synthetic_dir / "cells" / "test_labels.npz")["accuracy"] == 1.0
    short = write_cells_csv(tmp_path / "short.csv", cells_truth[:-1])
    with pytest.raises(SubmissionError, match="rows but the test set has"):
        score_files("cells", short, synthetic_dir / "cells" / "test_labels.npz")
    with pytest.raises(SubmissionError, match="expected 3 for mars"):
        score_files("mars", perfect, synthetic_dir / "cells" / "test_labels.npz")
