"""Stratified split, balanced class weights, Mars strata."""

from __future__ import annotations

import numpy as np
import pytest

from an2dl_kit.data.split import balanced_class_weights, mars_strata, stratified_split


def test_split_is_stratified_disjoint_and_complete():
    labels = np.repeat(np.arange(4), [100, 50, 30, 20])
    train, val = stratified_split(labels, 0.2, seed=0)
    assert len(val) == 40 and len(train) == 160
    assert np.intersect1d(train, val).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([train, val])), np.arange(200))
    assert np.bincount(labels[val]).tolist() == [20, 10, 6, 4]


def test_split_is_seeded():
    labels = np.random.default_rng(0).integers(0, 8, 500)
    a, b, c = (stratified_split(labels, 0.25, seed) for seed in (1, 1, 2))
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])
    assert len(a[1]) == 125


def test_split_keeps_a_rare_class_in_training():
    labels = np.array([0] * 10 + [1])
    train, val = stratified_split(labels, 0.5, seed=0)
    assert 10 in train and 10 not in val


def test_split_rejects_bad_fraction():
    with pytest.raises(ValueError):
        stratified_split(np.zeros(4), 1.0, seed=0)


def test_balanced_weights_match_sklearn_formula():
    labels = np.array([0] * 6 + [1] * 3 + [3] * 1)
    weights = balanced_class_weights(labels, 4)
    # n_samples / (n_present_classes * count): 10 / (3 * count); absent class 2 gets 0.
    assert weights == pytest.approx({0: 10 / 18, 1: 10 / 9, 2: 0.0, 3: 10 / 3})


def test_balanced_weights_on_masks_count_pixels():
    masks = np.zeros((2, 4, 4), np.uint8)
    masks[0, :2] = 1
    weights = balanced_class_weights(masks, 2)
    assert weights == pytest.approx({0: 32 / (2 * 24), 1: 32 / (2 * 8)})


def test_mars_strata():
    masks = np.zeros((4, 4, 8), np.uint8)
    masks[1, :, :6] = 2
    masks[1, :, 6:] = 1
    masks[2, :3] = 3
    masks[2, 3, 0] = 4
    assert mars_strata(masks).tolist() == [0, 2, 4, 0]
