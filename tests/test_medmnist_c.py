"""MedMNIST-C: the package's BloodMNIST corruptions, seeded; the benchmark's copy; the training augmentation.

Skipped where the package or ImageMagick's MagickWand is missing (`make medmnistc`), except the skip itself."""

from __future__ import annotations

import json
import random
import sys

import numpy as np
import pytest

from an2dl_kit.augment import medmnist_c
from bench import medmnist_c as bench_copy

IMAGES = np.random.default_rng(0).integers(30, 230, (3, 96, 96, 3)).astype(np.uint8)
BLOOD = ("pixelate", "jpeg_compression", "defocus_blur", "motion_blur", "brightness_up", "brightness_down",
         "contrast_up", "contrast_down", "saturate", "stain_deposit", "bubble")
needs_package = pytest.mark.skipif(medmnist_c.missing() is not None,
                                   reason=f"MedMNIST-C unavailable: {medmnist_c.missing()}")


def test_without_the_package_the_benchmark_prints_one_line_and_skips_the_copy(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(medmnist_c, "missing", lambda: "the medmnistc package is not installed (make medmnistc)")
    assert bench_copy.load_or_make(IMAGES, np.arange(3), tmp_path) is None
    assert capsys.readouterr().out == ("cells_robustness: MedMNIST-C copy skipped: the medmnistc package is not "
                                       "installed (make medmnistc)\n")


def test_without_the_package_the_augmentation_is_a_kit_error_before_training(monkeypatch):
    from an2dl_kit.augment.cells import CellsAugment
    from an2dl_kit.errors import KitError

    monkeypatch.setattr(medmnist_c, "missing", lambda: "the medmnistc package is not installed (make medmnistc)")
    monkeypatch.setattr(medmnist_c, "blood_corruptions", medmnist_c.blood_corruptions.__wrapped__)  # uncached
    with pytest.raises(KitError, match="MedMNIST-C corruptions: the medmnistc package is not installed"):
        CellsAugment("medmnistc")


@needs_package
def test_the_blood_corruptions_are_the_packages_eleven_without_torchvision():
    assert tuple(medmnist_c.blood_corruptions()) == BLOOD
    assert bench_copy.corruption_names() == BLOOD
    assert "torchvision" not in sys.modules  # the stand-in served the import only


@needs_package
def test_a_corruption_is_seeded_at_224_px_and_leaves_the_global_generators_alone():
    random.seed(7)
    np.random.seed(7)
    expected = random.random(), np.random.random()
    random.seed(7)
    np.random.seed(7)
    first = medmnist_c.corrupt(IMAGES[0], "bubble", 5, seed=1)
    assert (random.random(), np.random.random()) == expected
    assert first.shape == (96, 96, 3) and first.dtype == np.uint8
    assert np.array_equal(first, medmnist_c.corrupt(IMAGES[0], "bubble", 5, seed=1))
    assert not np.array_equal(first, medmnist_c.corrupt(IMAGES[0], "bubble", 5, seed=2))
    darker = medmnist_c.corrupt(IMAGES[0], "brightness_down", 5, seed=0)  # factor 0.5 at severity 5
    assert darker.mean() == pytest.approx(IMAGES[0].mean() * 0.5, rel=0.02)


@needs_package
def test_the_benchmark_copy_cycles_severities_and_is_cached(tmp_path):
    copy = bench_copy.load_or_make(IMAGES, np.array([4, 5, 6]), tmp_path)
    assert copy["images"].shape == (33, 96, 96, 3) and copy["labels"].tolist() == [4, 5, 6] * 11
    assert copy["corruption"].tolist() == [k for k in range(11) for _ in range(3)]
    assert copy["severity"][:6].tolist() == [1, 2, 3, 2, 3, 4]
    cached = bench_copy.load_or_make(IMAGES, np.array([4, 5, 6]), tmp_path)
    assert all(np.array_equal(copy[key], cached[key]) for key in copy)
    other = bench_copy.load_or_make(IMAGES[::-1].copy(), np.array([6, 5, 4]), tmp_path)  # another test set: remade
    assert other["labels"].tolist()[:3] == [6, 5, 4]


@needs_package
def test_the_training_augmentation_is_seeded_by_the_batch():
    from an2dl_kit.augment.cells import CellsAugment

    augment = CellsAugment("medmnistc")
    first = augment.prepare(IMAGES, np.random.default_rng(0))
    assert first.shape == IMAGES.shape and first.dtype == np.uint8
    assert np.array_equal(first, augment.prepare(IMAGES, np.random.default_rng(0)))
    assert not np.array_equal(first, augment.prepare(IMAGES, np.random.default_rng(1)))


@needs_package
@pytest.mark.slow
def test_a_smoke_run_trains_with_medmnistc_augmentation(synthetic_dir, tmp_path):
    from an2dl_kit.cli import main

    out = tmp_path / "run"
    assert main(["train", "cells", "--data", str(synthetic_dir), "--out", str(out), "--profile", "smoke",
                 "--set", "augment=medmnistc", "--set", "tta=identity"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["config"]["augmentation"]["augment"] == "medmnistc" and metrics["phases"][0]["epochs_run"] == 1
