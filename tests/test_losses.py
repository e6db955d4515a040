"""Segmentation losses against hand-computed values, background exclusion, and adaptive class weights."""

from __future__ import annotations

import math
import re

import keras
import numpy as np
import pytest

from an2dl_kit import losses as L
from an2dl_kit.errors import KitError
from an2dl_kit.registries import LOSSES, loss_terms

# Four pixels of one 1x4 tile, four classes (0 background); class 3 is absent from the truth.
Y = np.array([[[1, 2, 0, 1]]])
P = np.array([[[
    [0.1, 0.6, 0.2, 0.1],   # true 1
    [0.1, 0.2, 0.5, 0.2],   # true 2
    [0.7, 0.1, 0.1, 0.1],   # true 0 (unlabelled)
    [0.2, 0.3, 0.4, 0.1],   # true 1
]]], dtype="float32")
ln = math.log


def value(fn, y=Y, p=P, **kwargs) -> float:
    return float(keras.ops.convert_to_numpy(fn(y, p, **kwargs)))


def test_cce_by_hand():
    assert value(L.weighted_cce) == pytest.approx(-(ln(.6) + ln(.5) + ln(.7) + ln(.3)) / 4, rel=1e-6)
    assert value(L.weighted_cce, ignore_background=True) == pytest.approx(-(ln(.6) + ln(.5) + ln(.3)) / 3,
                                                                          rel=1e-6)
    expected = -(2 * ln(.6) + 1 * ln(.5) + 2 * ln(.3)) / (2 + 1 + 2)
    assert value(L.weighted_cce, class_weights=[1, 2, 1, 1], ignore_background=True) == pytest.approx(
        expected, rel=1e-6)


def test_focal_by_hand():
    def f(p):
        return -((1 - p) ** 2) * ln(p)

    assert value(L.categorical_focal, ignore_background=True) == pytest.approx((f(.6) + f(.5) + f(.3)) / 3,
                                                                               rel=1e-6)
    assert value(L.categorical_focal) == pytest.approx((f(.6) + f(.5) + f(.7) + f(.3)) / 4, rel=1e-6)


# Per class over the three labelled pixels (0, 1, 3): intersection, predicted mass, true mass.
STATS = {1: (0.9, 1.1, 2.0), 2: (0.5, 1.1, 1.0), 3: (0.0, 0.4, 0.0)}  # class 3 absent from the truth


def test_dice_by_hand_with_an_absent_class():
    scores = {k: (2 * i + 1) / (p + t + 1) for k, (i, p, t) in STATS.items()}
    assert scores[3] == pytest.approx(1 / 1.4)  # absent: only the predicted mass costs anything
    expected = np.mean([1 - s for s in scores.values()])
    assert value(L.dice, ignore_background=True) == pytest.approx(expected, rel=1e-6)
    weighted = (1 * (1 - scores[1]) + 3 * (1 - scores[2]) + 1 * (1 - scores[3])) / 5
    assert value(L.dice, class_weights=[9, 1, 3, 1], ignore_background=True) == pytest.approx(weighted, rel=1e-6)


def test_tversky_by_hand_with_an_absent_class():
    def score(i, p, t):
        return (i + 1) / (i + 0.3 * (p - i) + 0.7 * (t - i) + 1)

    expected = np.mean([1 - score(*STATS[k]) for k in (1, 2, 3)])
    assert value(L.tversky, ignore_background=True) == pytest.approx(expected, rel=1e-6)


def test_lovasz_by_hand_over_the_present_classes():
    # Labelled pixels 0, 1, 3. Class 1: truth 1 0 1, errors .4 .2 .7; sorted .7 .4 .2 with Jaccard steps
    # .5 .5 0 -> .55. Class 2: truth 0 1 0, errors .2 .5 .4; the first step takes it all -> .5. Class 3 is absent.
    assert value(L.lovasz, ignore_background=True) == pytest.approx((0.55 + 0.5) / 2, rel=1e-6)
    assert value(L.lovasz, class_weights=[9, 1, 3, 1], ignore_background=True) == pytest.approx(
        (0.55 + 3 * 0.5) / 4, rel=1e-6)


def test_lovasz_is_one_minus_iou_on_one_hot_predictions():
    rng = np.random.default_rng(0)
    truth = rng.integers(0, 4, size=(2, 6, 7))
    predicted = np.where(rng.random(truth.shape) < 0.6, truth, rng.integers(0, 4, size=truth.shape))
    labelled = truth > 0
    iou = [np.sum((truth == k) & (predicted == k) & labelled) / np.sum(((truth == k) | (predicted == k)) & labelled)
           for k in (1, 2, 3)]
    one_hot = np.eye(4, dtype="float32")[predicted]
    assert value(L.lovasz, y=truth, p=one_hot, ignore_background=True) == pytest.approx(1 - np.mean(iou), rel=1e-6)


def test_dice_with_background_counts_every_pixel_and_class():
    # Class 0 over all 4 pixels: I 0.7, P 1.1, T 1; other classes gain pixel 2's mass in P.
    stats = {0: (0.7, 1.1, 1.0), 1: (0.9, 1.2, 2.0), 2: (0.5, 1.2, 1.0), 3: (0.0, 0.5, 0.0)}
    expected = np.mean([1 - (2 * i + 1) / (p + t + 1) for i, p, t in stats.values()])
    assert value(L.dice) == pytest.approx(expected, rel=1e-6)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_background_exclusion_removes_background_pixels(name):
    fn = LOSSES.load(name)
    changed = P.copy()
    changed[0, 0, 2] = [0.01, 0.01, 0.01, 0.97]  # a different prediction on the unlabelled pixel only
    assert value(fn, p=changed, ignore_background=True) == pytest.approx(value(fn, ignore_background=True),
                                                                         rel=1e-6)
    assert value(fn, p=changed) != pytest.approx(value(fn), rel=1e-3)
    # Dropping the unlabelled pixel altogether gives the same loss as ignoring it.
    labelled = [0, 1, 3]
    assert value(fn, y=Y[:, :, labelled], p=P[:, :, labelled], ignore_background=True) == pytest.approx(
        value(fn, ignore_background=True), rel=1e-6)


def test_background_weight_is_ignored_when_background_is_excluded():
    for name in LOSSES:
        fn = LOSSES.load(name)
        a = value(fn, class_weights=[0, 1, 1, 1], ignore_background=True)
        b = value(fn, class_weights=[50, 1, 1, 1], ignore_background=True)
        assert a == pytest.approx(b, rel=1e-6), name


def test_sums_and_parsing():
    assert loss_terms("cce + dice") == ("cce", "dice")
    total = value(lambda y, p: L.combined_loss(y, p, ("cce", "dice"), None, True))
    assert total == pytest.approx(value(L.weighted_cce, ignore_background=True)
                                  + value(L.dice, ignore_background=True), rel=1e-6)
    for bad, name in (("", ""), ("cce+boundary", "boundary"), ("+", "+")):
        message = f"^loss '{re.escape(name)}': unknown; choose one of cce, dice, tversky, focal, lovasz$"
        with pytest.raises(KitError, match=message):
            loss_terms(bad)
    with pytest.raises(KitError, match="^loss 'boundary': unknown"):
        L.SegmentationLoss("cce+boundary")


def test_segmentation_loss_wrapper_matches_and_serialises():
    loss = L.SegmentationLoss("cce+tversky", class_weights=[1, 2, 1, 1], ignore_background=True, num_classes=4)
    expected = value(L.weighted_cce, class_weights=[1, 2, 1, 1], ignore_background=True) + \
        value(L.tversky, class_weights=[1, 2, 1, 1], ignore_background=True)
    assert float(loss(Y.astype("float32"), P)) == pytest.approx(expected, rel=1e-6)
    clone = L.SegmentationLoss.from_config(loss.get_config())
    assert clone.terms == ("cce", "tversky") and clone.ignore_background
    np.testing.assert_allclose(np.asarray(clone.class_weights), [1, 2, 1, 1])
    with pytest.raises(ValueError, match="4 values"):
        L.SegmentationLoss(class_weights=[1, 1], num_classes=4)


def test_adaptive_weights_formula_and_cap():
    iou = np.array([0.8, 0.3, 0.6, 0.0])
    raw = 1 / (iou + 0.2)
    np.testing.assert_allclose(L.adaptive_weights(iou, alpha=0.2), raw / raw.max(), rtol=1e-6)
    capped = L.adaptive_weights(iou, alpha=0.2, caps={3: 1.5})
    # Big rock's raw weight 5 is held to 1.5 x bedrock's 2, then everything is divided by it.
    np.testing.assert_allclose(capped, [1 / 3, 2 / 3, 1.25 / 3, 1.0], rtol=1e-6)
    assert capped.min() > 0 and capped.max() == pytest.approx(1.0)


def test_adaptive_callback_moves_weight_toward_the_worst_class():
    loss = L.SegmentationLoss("cce", ignore_background=True)
    keys = {1: "val_iou_soil", 2: "val_iou_bedrock", 3: "val_iou_sand", 4: "val_iou_big_rock"}
    callback = L.AdaptiveClassWeights(loss, keys, alpha=0.2, caps={4: 2.0})
    logs = {"val_iou_soil": 0.85, "val_iou_bedrock": 0.25, "val_iou_sand": 0.7, "val_iou_big_rock": 0.6}
    callback.on_epoch_end(0, logs)
    weights = np.asarray(loss.class_weights)
    assert weights[0] == 1.0  # background untouched (and ignored by the loss anyway)
    assert np.argmax(weights[1:]) + 1 == 2 and weights[2] == pytest.approx(1.0)
    assert weights[1] == weights[1:].min()
    assert logs["weight_2"] == pytest.approx(1.0)
    # The next epoch bedrock is fine and sand is worst: the weight follows.
    callback.on_epoch_end(1, {"val_iou_soil": 0.85, "val_iou_bedrock": 0.8, "val_iou_sand": 0.2,
                              "val_iou_big_rock": 0.6})
    assert np.argmax(np.asarray(loss.class_weights)[1:]) + 1 == 3
    assert len(callback.history) == 2


def test_adaptive_momentum_keeps_part_of_the_old_weights():
    loss = L.SegmentationLoss("cce", ignore_background=True)
    callback = L.AdaptiveClassWeights(loss, {1: "a", 2: "b"}, alpha=0.2, momentum=0.5)
    callback.on_epoch_end(0, {"a": 0.8, "b": 0.3})
    new = L.adaptive_weights([0.8, 0.3], alpha=0.2)
    np.testing.assert_allclose(np.asarray(loss.class_weights)[1:3], 0.5 * 1.0 + 0.5 * new, rtol=1e-6)
