"""Cells augmentation: strict pipelines, artefacts, batch mixing, seeding across batches and workers."""

from __future__ import annotations

import albumentations as A
import numpy as np
import pytest

from an2dl_kit.augment import cells as aug
from an2dl_kit.augment import medmnist_c
from an2dl_kit.errors import KitError
from an2dl_kit.pipeline import Batches
from an2dl_kit.registries import CELLS_AUGMENTATIONS


def _images(n=8, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = np.full((n, 96, 96, 3), (230, 200, 190), np.uint8)
    base[:, 30:66, 30:66] = rng.integers(60, 140, (n, 36, 36, 3), dtype=np.uint8)
    return base


def _strict_everywhere(transform) -> bool:
    if isinstance(transform, A.Compose) and not transform.strict:
        return False
    return all(_strict_everywhere(t) for t in getattr(transform, "transforms", []))


@pytest.mark.parametrize("name", [name for name in CELLS_AUGMENTATIONS if name != "none"])
def test_pipelines_are_strict_and_keep_shape_and_dtype(name):
    if name == "medmnistc" and medmnist_c.missing():  # an optional package: without it, the one-line error
        with pytest.raises(KitError, match=r"^MedMNIST-C corruptions: .*make medmnistc"):
            CELLS_AUGMENTATIONS.load(name)()
        return
    pipeline = CELLS_AUGMENTATIONS.load(name)()
    assert isinstance(pipeline, A.Compose) and _strict_everywhere(pipeline)
    pipeline.set_random_seed(0)
    for image in _images(4):
        out = pipeline(image=image)["image"]
        assert out.shape == (96, 96, 3) and out.dtype == np.uint8


@pytest.mark.filterwarnings(r"ignore:Argument\(s\) .opacity_rnage.")
def test_a_misspelled_argument_is_an_error_in_strict_mode():
    with pytest.raises(ValueError, match="opacity_rnage"):
        A.Compose([aug.Stains(opacity_rnage=(0.1, 0.2))], strict=True)
    with pytest.raises(ValueError, match="range must be \\(low, high\\)"):
        aug.Bubbles(radius_range=(0.5, 0.1))


@pytest.mark.parametrize("artefact", [aug.Stains, aug.Bubbles])
def test_artefacts_change_the_image_reproducibly(artefact):
    image = _images(1)[0]
    first = A.Compose([artefact(p=1.0)], strict=True, seed=3)(image=image)["image"]
    again = A.Compose([artefact(p=1.0)], strict=True, seed=3)(image=image)["image"]
    other = A.Compose([artefact(p=1.0)], strict=True, seed=4)(image=image)["image"]
    assert first.dtype == np.uint8 and first.shape == image.shape
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, image) and not np.array_equal(first, other)


def test_stains_only_darken_and_bubbles_darken_their_rims():
    image = np.full((96, 96, 3), 220, np.uint8)
    stained = A.Compose([aug.Stains(p=1.0)], strict=True, seed=0)(image=image)["image"]
    assert (stained <= image).all() and stained.min() < 200
    bubbled = A.Compose([aug.Bubbles(count_range=(1, 1), p=1.0)], strict=True, seed=0)(image=image)["image"]
    assert bubbled.min() < 180 and bubbled.max() >= 220


def test_mixup_and_cutmix_keep_label_distributions():
    rng = np.random.default_rng(0)
    x = _images(16).astype(np.float32)
    y = np.eye(8, dtype=np.float32)[rng.integers(0, 8, 16)]
    for mix in (aug.mixup, aug.cutmix):
        mixed_x, mixed_y = mix(x, y, np.random.default_rng(1))
        assert mixed_x.shape == x.shape and mixed_x.dtype == np.float32
        np.testing.assert_allclose(mixed_y.sum(axis=1), 1.0, rtol=1e-6)
        assert (mixed_y.max(axis=1) < 1).any()


def test_cutmix_label_share_equals_the_pasted_area():
    x = np.zeros((2, 10, 10, 1), np.float32)
    x[1] = 1.0
    y = np.eye(2, dtype=np.float32)
    rng = np.random.default_rng(5)
    mixed_x, mixed_y = aug.cutmix(x, y, rng)
    for i in range(2):
        partner_share = mixed_x[i].mean() if i == 0 else 1 - mixed_x[i].mean()
        np.testing.assert_allclose(mixed_y[i, 1 - i], partner_share, atol=1e-6)


def test_batch_transform_returns_one_hot_labels_and_class_weights():
    labels = np.array([0, 1, 2, 2, 7, 7, 7, 7])
    weights = np.arange(1, 9, dtype=np.float32)
    transform = aug.CellsAugment("none", class_weights=weights)
    x, y, w = transform(_images(8), labels, np.random.default_rng(0))
    assert x.dtype == np.uint8 and y.shape == (8, 8)  # unmixed batches stay uint8
    np.testing.assert_array_equal(y.argmax(axis=1), labels)
    np.testing.assert_allclose(w, weights[labels])
    mixed = aug.CellsAugment("none", class_weights=weights, mixup_p=1.0)
    x, y, w = mixed(_images(8), labels, np.random.default_rng(0))
    assert x.dtype == np.float32
    np.testing.assert_allclose(w, y @ weights, rtol=1e-6)


def _batches(workers, seed=7, n=32):
    images = np.repeat(_images(1), n, axis=0)  # identical images: any difference is augmentation
    labels = np.zeros(n, np.int64)
    augment = aug.CellsAugment("robust")
    return Batches(images, labels, batch_size=8, transform=augment, seed=seed, workers=workers)


def test_seeded_batches_are_reproducible_and_differ_across_batches_epochs_and_workers():
    first, again = _batches(workers=2), _batches(workers=2)
    batch0, batch1 = first[0][0], first[1][0]
    np.testing.assert_array_equal(batch0, again[0][0])
    # The two batches two workers would build differ, and so do the images within them: a third of the images
    # get only a dihedral turn and can repeat, but the 8 turns alone could not give more than 8 distinct ones.
    assert not np.array_equal(batch0, batch1)
    assert len({image.tobytes() for image in np.concatenate([batch0, batch1])}) > 8
    np.testing.assert_array_equal(_batches(workers=1)[1][0], batch1)
    first.set_epoch(1)
    assert not np.array_equal(first[0][0], batch0)
    assert not np.array_equal(_batches(workers=2, seed=8)[0][0], batch0)


def test_batches_built_concurrently_match_serial_ones():
    from concurrent.futures import ThreadPoolExecutor

    data = _batches(workers=4)
    serial = [data[i][0] for i in range(4)]
    with ThreadPoolExecutor(4) as pool:
        parallel = list(pool.map(lambda i: data[i][0], range(4)))
    for a, b in zip(serial, parallel, strict=True):
        np.testing.assert_array_equal(a, b)


def test_preview_puts_the_original_first():
    images = _images(3)
    grid = aug.preview(images, "robust", copies=4, seed=0)
    assert grid.shape == (3, 4, 96, 96, 3) and grid.dtype == np.uint8
    np.testing.assert_array_equal(grid[:, 0], images)
    assert not np.array_equal(grid[:, 1], images)


def test_unknown_pipeline_is_a_kit_error_naming_the_choices():
    choices = ", ".join(CELLS_AUGMENTATIONS)
    with pytest.raises(KitError, match=f"^cells augmentation 'robustt': unknown; choose one of {choices}$"):
        aug.CellsAugment("robustt")


def test_preview_of_none_repeats_the_original():
    images = _images(2)
    grid = aug.preview(images, "none", copies=3)
    assert all((grid[:, k] == images).all() for k in range(3))


def test_mix_both_applies_cutmix_then_mixup_to_every_batch(monkeypatch):
    calls = []
    monkeypatch.setattr(aug, "cutmix", lambda x, y, rng: (calls.append("cutmix"), (x, y))[1])
    monkeypatch.setattr(aug, "mixup", lambda x, y, rng: (calls.append("mixup"), (x, y))[1])
    onehot = np.eye(8, dtype=np.float32)[np.arange(8)]
    for seed in range(5):
        aug.mix_batch(_images(8), onehot, np.random.default_rng(seed), 1.0, 1.0, both=True)
    assert calls == ["cutmix", "mixup"] * 5
    calls.clear()
    aug.mix_batch(_images(8), onehot, np.random.default_rng(0), 1.0, 1.0)
    assert calls == ["cutmix"]  # without `both`, at most one per batch


def test_reference_pool_has_the_keras_cv_ops():
    names = {type(op).__name__ for op in aug.randaugment_ops()}
    assert {"AutoContrast", "Equalize", "Solarize"} <= names


def test_random_dihedral_draws_all_eight_turns_evenly_and_keeps_pixels():
    image = np.arange(4 * 4 * 3, dtype=np.uint8).reshape(4, 4, 3)  # no symmetry: all 8 turns differ
    turns = [np.rot90(candidate, k) for candidate in (image, image[:, ::-1]) for k in range(4)]
    out = aug.random_dihedral(np.repeat(image[None], 800, axis=0), np.random.default_rng(0))
    counts = [sum(np.array_equal(o, turn) for o in out) for turn in turns]
    assert sum(counts) == 800 and min(counts) > 60, counts
    assert out.dtype == np.uint8


def test_random_affine_warps_its_share_of_the_batch_and_leaves_the_rest():
    images = np.repeat(_images(1), 400, axis=0)
    out = aug.random_affine(images, np.random.default_rng(0), p=0.3)
    changed = np.array([not np.array_equal(o, images[0]) for o in out])
    assert out.dtype == np.uint8 and out.shape == images.shape
    assert 0.2 < changed.mean() < 0.4
    # The warp itself: no rotation, scaling or shift gives every image back exactly.
    still = aug.random_affine(images[:8], np.random.default_rng(0), p=1.0, rotate=0.0, shift=0.0, scale=(1.0, 1.0))
    np.testing.assert_array_equal(still, images[:8])


def test_pipelines_split_into_a_costly_per_image_stage_and_a_batch_stage():
    prepare, finish = aug.image_stages("robust")
    assert finish is aug.random_dihedral and prepare is not None
    assert aug.image_stages("randaugment1")[1] is None
    assert aug.image_stages("none") == (None, None)
    images = _images(6)
    both = aug.image_augmenter("robust")(images, np.random.default_rng(3))
    rng = np.random.default_rng(3)
    np.testing.assert_array_equal(both, finish(prepare(images, rng), rng))


def test_batch_dihedral_pipelines_turn_whole_batches_reproducibly():
    images = _images(6)
    augment = aug.image_augmenter("robust")
    first = augment(images, np.random.default_rng(5))
    assert first.shape == images.shape and first.dtype == np.uint8
    np.testing.assert_array_equal(first, augment(images, np.random.default_rng(5)))
    assert set(aug.BATCH_GEOMETRY) <= set(CELLS_AUGMENTATIONS)
