"""The leaderboard mIoU tracked in Keras equals the numpy one; post-processing never predicts background."""

from __future__ import annotations

import numpy as np
import pytest

from an2dl_kit import keras_metrics as KM
from an2dl_kit.inference import postprocess
from an2dl_kit.metrics import mars_scores


def _data(seed: int = 0, n: int = 6):
    rng = np.random.default_rng(seed)
    truth = rng.choice(5, size=(n, 64, 128), p=[0.4, 0.25, 0.2, 0.13, 0.02]).astype(np.uint8)
    logits = rng.normal(size=(n, 64, 128, 5)).astype(np.float32)
    logits[np.arange(n)[:, None, None], np.arange(64)[None, :, None], np.arange(128)[None, None, :],
           truth] += 1.5  # better than chance, so the IoUs are not all alike
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    return truth, probs


def _keras_value(metric, truth, probs, batch: int = 4) -> float:
    for start in range(0, len(truth), batch):
        metric.update_state(truth[start:start + batch], probs[start:start + batch])
    return float(metric.result())


@pytest.mark.parametrize("never_background", [True, False])
def test_keras_miou_equals_numpy_leaderboard_miou(never_background):
    truth, probs = _data()
    labels = postprocess.never_background(probs) if never_background else postprocess.plain_argmax(probs)
    expected = mars_scores(truth, labels)
    metric = KM.LeaderboardMeanIoU(never_background=never_background)
    assert _keras_value(metric, truth, probs) == pytest.approx(expected["miou"], abs=1e-6)
    if not never_background:
        # Background predictions on labelled pixels add class 0's zero term to the mean.
        assert expected["background_predicted"] > 0
        assert expected["miou"] < np.mean(list(expected["iou"].values()))


def test_keras_class_iou_equals_numpy_per_class_iou():
    truth, probs = _data(1)
    expected = mars_scores(truth, postprocess.never_background(probs))["iou"]
    for class_id, name in enumerate(("soil", "bedrock", "sand", "big rock"), start=1):
        metric = KM.ClassIoU(class_id)
        assert metric.name == f"iou_{name.replace(' ', '_')}"
        assert _keras_value(metric, truth, probs) == pytest.approx(expected[name], abs=1e-6)


def test_metrics_round_trip_through_config():
    metric = KM.LeaderboardMeanIoU(never_background=False)
    clone = KM.LeaderboardMeanIoU.from_config(metric.get_config())
    assert clone.never_background is False and clone.ignore_class == 0 and clone.num_classes == 5
    iou = KM.ClassIoU.from_config(KM.ClassIoU(4).get_config())
    assert iou.class_id == 4 and iou.target_class_ids == [4] and iou.name == "iou_big_rock"


def test_metric_set_and_log_keys_agree():
    names = [m.name for m in KM.mars_metrics()]
    assert names == ["miou", "iou_soil", "iou_bedrock", "iou_sand", "iou_big_rock"]
    assert KM.iou_log_keys() == {k: f"val_{names[k]}" for k in range(1, 5)}


def test_never_background_skips_class_zero():
    probs = np.zeros((1, 2, 2, 5), np.float32)
    probs[..., 0] = 0.9
    probs[0, 0, 0, 3] = 0.05
    probs[0, 1, 1, 4] = 0.06
    labels = postprocess.never_background(probs)
    assert labels.dtype == np.uint8 and labels.min() >= 1
    assert labels[0, 0, 0] == 3 and labels[0, 1, 1] == 4
    assert postprocess.plain_argmax(probs).max() == 0


def test_majority_filter_removes_specks_and_keeps_regions():
    labels = np.full((1, 16, 16), 1, np.uint8)
    labels[0, :, 8:] = 2
    noisy = labels.copy()
    noisy[0, 3, 3] = 4          # an isolated speck inside soil
    noisy[0, 10, 12] = 3        # and one inside bedrock
    cleaned = postprocess.majority_filter(noisy, 5)
    np.testing.assert_array_equal(cleaned, labels)
    assert postprocess.majority_filter(noisy, 1) is noisy
    assert postprocess.majority_filter(noisy[0], 3).shape == (16, 16)


def test_to_labels_with_cleanup_never_brings_background_back():
    _, probs = _data(2, n=2)
    labels = postprocess.to_labels(probs, cleanup=5)
    assert labels.min() >= 1 and labels.shape == (2, 64, 128)
    assert postprocess.to_labels(probs, allow_background=True).min() == 0
