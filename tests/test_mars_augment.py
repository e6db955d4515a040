"""Mars augmentation: image and mask move together, masks stay labels, copies and oversampling."""

from __future__ import annotations

import numpy as np
import pytest

from an2dl_kit.augment import mars as AM
from an2dl_kit.errors import KitError


def _tiles(n: int = 8, seed: int = 0):
    """Blocky masks, and images that encode their mask (image = mask / 4) so alignment is checkable."""
    rng = np.random.default_rng(seed)
    masks = np.kron(rng.integers(0, 5, size=(n, 4, 8)), np.ones((16, 16), dtype=np.int64)).astype(np.uint8)
    images = (masks / 4.0).astype(np.float32)[..., None]
    return images, masks


@pytest.mark.parametrize("name", ["light", "default", "scale"])
def test_pipelines_keep_shapes_dtypes_and_label_values(name):
    images, masks = _tiles()
    x, y = AM.batch_transform(name)(images, masks, np.random.default_rng(1))
    assert x.shape == images.shape and x.dtype == np.float32
    assert y.shape == masks.shape and y.dtype == np.uint8
    assert set(np.unique(y)) <= set(range(5))
    assert not np.array_equal(y, masks)  # something moved


@pytest.mark.parametrize("name", ["light", "scale"])
def test_geometry_moves_mask_with_image(name):
    images, masks = _tiles(16)
    x, y = AM.batch_transform(name)(images, masks, np.random.default_rng(3))
    # Away from block borders the bilinear image still reads back as its nearest-neighbour mask.
    agreement = (np.rint(x[..., 0] * 4).astype(np.uint8) == y).mean()
    assert agreement > 0.9
    assert (x != images).any()


def test_dropout_fills_the_mask_with_background():
    import albumentations as A

    from an2dl_kit.augment.common import SeededCompose

    images, masks = _tiles(4)
    masks[:] = 2
    compose = SeededCompose(lambda: A.Compose(AM._dropout(A, p=1.0), strict=True))
    x, y = AM._apply(compose, images, masks, np.random.default_rng(0))
    holes = y == 0
    assert holes.any() and (x[..., 0][holes] == 0).all()


def test_batch_transform_is_reproducible_and_none_is_identity():
    images, masks = _tiles()
    transform = AM.batch_transform("default")
    a = transform(images, masks, np.random.default_rng(5))
    b = transform(images, masks, np.random.default_rng(5))
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert AM.batch_transform("none") is None
    message = "^mars augmentation 'randaugment': unknown; choose one of none, light, default, scale$"
    with pytest.raises(KitError, match=message):
        AM.batch_transform("randaugment")


def test_union_of_copies_keeps_originals_first():
    images, masks = _tiles(6)
    x, y = AM.union_of_copies(images, masks, copies=2, name="light", seed=0, chunk=4)
    assert x.shape == (18, *images.shape[1:]) and y.shape == (18, 64, 128)
    np.testing.assert_array_equal(x[:6], images)
    np.testing.assert_array_equal(y[:6], masks)
    again = AM.union_of_copies(images, masks, copies=2, name="light", seed=0, chunk=4)
    np.testing.assert_array_equal(again[1], y)
    assert AM.union_of_copies(images, masks, copies=0)[0] is images


def test_oversample_repeats_tiles_holding_big_rock():
    masks = np.ones((5, 64, 128), np.uint8)
    masks[1, 0, 0] = 4
    masks[3, 10:20, 10:20] = 4
    order = AM.oversample(masks, factor=3)
    counts = np.bincount(order, minlength=5)
    np.testing.assert_array_equal(counts, [1, 3, 1, 3, 1])
    np.testing.assert_array_equal(np.bincount(AM.oversample(masks, factor=3, min_pixels=50), minlength=5),
                                  [1, 1, 1, 3, 1])
    np.testing.assert_array_equal(AM.oversample(masks, factor=1), np.arange(5))
