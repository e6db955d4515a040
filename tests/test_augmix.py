"""AugMix: the operations, the triplet batches, the consistency loss against NumPy, the settings, a smoke run."""

from __future__ import annotations

import json

import keras
import numpy as np
import pytest

from an2dl_kit.augment import augmix
from an2dl_kit.augment.cells import CellsAugment, image_augmenter
from an2dl_kit.errors import KitError
from an2dl_kit.losses import AugMixConsistency
from an2dl_kit.tasks import cells, resolve_config

IMAGES = np.random.default_rng(0).integers(0, 256, (6, 32, 32, 3)).astype(np.uint8)


@pytest.mark.parametrize("operation", augmix.OPERATIONS, ids=lambda op: getattr(op, "__name__", "op"))
def test_every_operation_keeps_shape_and_dtype(operation):
    out = operation(IMAGES[0], np.random.default_rng(1))
    assert out.shape == IMAGES[0].shape and out.dtype == np.uint8


def test_posterize_and_solarize_by_hand():
    image = np.array([[[0, 100, 255]]], np.uint8)
    rng = np.random.default_rng(0)
    level = np.random.default_rng(0).uniform(0.1, augmix.SEVERITY)
    bits = 4 - int(level * 4 / 10)
    assert augmix.posterize(image, rng).tolist() == (image & ((0xFF << (8 - bits)) & 0xFF)).tolist()
    threshold = 256 - int(np.random.default_rng(5).uniform(0.1, augmix.SEVERITY) * 256 / 10)
    solarized = augmix.solarize(image, np.random.default_rng(5))
    assert solarized.tolist() == np.where(image >= threshold, 255 - image, image).tolist()


def test_autocontrast_stretches_each_channel_to_the_full_range():
    image = np.stack([np.full((2, 2), 50), np.array([[10, 20], [30, 40]]), np.full((2, 2), 7)], -1).astype(np.uint8)
    out = augmix.autocontrast(image, np.random.default_rng(0))
    assert out[..., 1].tolist() == [[0, 85], [170, 255]]
    assert (out[..., 0] == 50).all() and (out[..., 2] == 7).all()  # flat channels are left alone


def test_an_augmix_view_is_seeded_and_blends_with_the_image():
    first = augmix.augmix(IMAGES[0], np.random.default_rng(3))
    assert np.array_equal(first, augmix.augmix(IMAGES[0], np.random.default_rng(3)))
    assert not np.array_equal(first, augmix.augmix(IMAGES[0], np.random.default_rng(4)))
    assert first.dtype == np.uint8 and not np.array_equal(first, IMAGES[0])
    assert image_augmenter("augmix")(IMAGES, np.random.default_rng(0)).shape == IMAGES.shape


def test_training_batches_are_triplets_with_the_views_weighted_zero():
    weights = np.arange(1, 9, dtype=np.float32)
    augment = CellsAugment("augmix", class_weights=weights, group=2)
    prepared = augment.prepare(IMAGES[:5], np.random.default_rng(0))
    assert prepared.shape == (5, 3, 32, 32, 3)
    assert not np.array_equal(prepared[:, 1], prepared[:, 2])
    labels = np.array([0, 3, 3, 7, 1])
    x, y, w = augment(prepared, labels, np.random.default_rng(1))
    assert x.shape == (12, 32, 32, 3)  # 5 images cut to 4 (two replicas), three rows each
    assert y.argmax(-1).tolist() == [0, 0, 0, 3, 3, 3, 3, 3, 3, 7, 7, 7]
    assert w.tolist() == [3.0, 0, 0, 12.0, 0, 0, 12.0, 0, 0, 24.0, 0, 0]
    with pytest.raises(ValueError, match="CutMix and MixUp must be off"):
        CellsAugment("augmix", cutmix_p=0.5)


def _expected_loss(y_true, y_pred, weight, smoothing):
    smoothed = y_true * (1 - smoothing) + smoothing / y_true.shape[-1]
    entropy = -(smoothed * np.log(y_pred)).sum(-1)
    groups = y_pred.reshape(-1, 3, y_pred.shape[-1])
    mixture = groups.mean(axis=1, keepdims=True)
    divergence = (groups * np.log(groups / mixture)).sum(-1).mean(axis=1)
    rows = np.zeros((len(groups), 3))
    rows[:, 0] = divergence
    return entropy + weight * rows.reshape(-1)


def test_the_consistency_loss_against_numpy():
    rng = np.random.default_rng(0)
    y_pred = rng.dirichlet(np.ones(4), 6).astype(np.float32)  # two images, three rows each
    y_true = np.repeat(np.eye(4, dtype=np.float32)[[1, 2]], 3, axis=0)
    sample_weight = np.array([3.0, 0, 0, 1.5, 0, 0], np.float32)
    loss = AugMixConsistency(weight=12.0, label_smoothing=0.1)
    per_row = _expected_loss(y_true, y_pred, 12.0, 0.1)
    got = float(loss(y_true, y_pred, sample_weight=sample_weight))
    assert got == pytest.approx((per_row * sample_weight).sum() / 6, rel=1e-5)
    # Identical views (a validation batch): no consistency term, the mean cross-entropy.
    same = np.repeat(y_pred[::3], 3, axis=0)
    plain = float(keras.losses.CategoricalCrossentropy(label_smoothing=0.1)(y_true, same))
    assert float(loss(y_true, same)) == pytest.approx(plain, rel=1e-5)
    restored = AugMixConsistency.from_config(loss.get_config())
    assert (restored.weight, restored.views, restored.label_smoothing) == (12.0, 3, 0.1)


def test_augmix_settings_refuse_mixing_and_choose_the_loss():
    with pytest.raises(KitError, match="augment=augmix: set cutmix_p=0 and mixup_p=0 \\(now 0.5 and 0.5\\)"):
        resolve_config("cells", "smoke", ["augment=augmix"])
    config = resolve_config("cells", "smoke", ["augment=augmix", "cutmix_p=0", "mixup_p=0", "jsd_weight=6"])
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(8, activation="softmax")])
    cells.compile_classifier(model, config, type("CPU", (), {"jit_compile": False})())
    assert isinstance(model.loss, AugMixConsistency) and model.loss.weight == 6.0
    with pytest.raises(KitError, match="jsd_weight=-1.0: out of range"):
        resolve_config("cells", "smoke", ["augment=augmix", "cutmix_p=0", "mixup_p=0", "jsd_weight=-1"])


def test_validation_batches_repeat_each_image_as_its_views():
    config = resolve_config("cells", "smoke", ["augment=augmix", "cutmix_p=0", "mixup_p=0"])
    batches = list(cells.validation_data(IMAGES[:5], np.arange(5), config, batch_size=4, replicas=2))
    assert [tuple(x.shape) for x, _ in batches] == [(12, 32, 32, 3)]  # 5 images cut to 4 for two replicas
    x, y = batches[0]
    assert np.array_equal(x.numpy()[3], x.numpy()[5]) and y.numpy().argmax(-1).tolist()[:6] == [0, 0, 0, 1, 1, 1]


@pytest.mark.slow
def test_a_smoke_run_trains_on_triplets(synthetic_dir, tmp_path):
    from an2dl_kit.cli import main

    out = tmp_path / "run"
    settings = ["augment=augmix", "cutmix_p=0", "mixup_p=0", "tta=identity"]
    assert main(["train", "cells", "--data", str(synthetic_dir), "--out", str(out), "--profile", "smoke",
                 *[part for setting in settings for part in ("--set", setting)]]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["augmentation"]["jsd_weight"] == 12.0
    history = (out / "history.csv").read_text()
    assert "val_loss" in history and "nan" not in history.lower()
    loaded = keras.saving.load_model(out / "model.keras")  # the loss is saved with the model and comes back
    assert isinstance(loaded.loss, AugMixConsistency)
