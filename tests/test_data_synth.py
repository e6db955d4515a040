"""Synthetic files: deterministic, in the course formats, with every class present."""

from __future__ import annotations

import numpy as np
import pytest

from an2dl_kit.data.discover import find_inputs
from an2dl_kit.data.io import load_cells_train, load_labels, load_mars
from an2dl_kit.data.synth import SIZES, synth_cells, synth_mars, write_synthetic
from an2dl_kit.errors import KitError
from an2dl_kit.task import CELLS, MARS

CELLS_SHAPE, MARS_SHAPE = CELLS.image_shape, MARS.image_shape


def test_cells_are_deterministic_and_seeded():
    a, b, c = synth_cells(24, seed=5), synth_cells(24, seed=5), synth_cells(24, seed=6)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.images, c.images)
    assert a.images.dtype == np.uint8 and a.images.shape == (24, *CELLS_SHAPE)
    assert sorted(set(a.labels.tolist())) == list(range(8))


def test_contaminants_extend_the_genuine_rows():
    clean, dirty = synth_cells(40, seed=1), synth_cells(40, seed=1, contaminants=True)
    assert len(dirty) > len(clean)
    genuine = {row.tobytes() for row in clean.images}
    assert genuine <= {row.tobytes() for row in dirty.images}


def test_mars_tiles_have_textured_classes_and_background():
    data, test_masks = synth_mars(200, 10, seed=0)
    assert data.images.dtype == np.float32 and data.images.shape == (200, *MARS_SHAPE)
    assert data.masks.dtype == np.uint8 and test_masks.shape == (10, *MARS_SHAPE)
    assert data.test.shape == (10, *MARS_SHAPE)
    assert 0 <= data.images.min() and data.images.max() <= 255
    shares = np.bincount(data.masks.ravel(), minlength=5) / data.masks.size
    assert shares[0] > 0.03 and all(shares[1:4] > 0.1)
    assert 0 < shares[4] < 0.02  # big rock: rare
    means = [data.images[data.masks == c].mean() for c in (1, 2, 3)]
    assert means[1] < means[0] < means[2]  # bedrock darker than soil, sand brighter


def test_aliens_share_one_mask():
    data, _ = synth_mars(100, 0, seed=0, aliens=True)
    assert len(data) == 105  # max(REPEAT_THRESHOLD, 4% of 100) aliens added
    detailed = [m.tobytes() for m in data.masks if len(set(np.unique(m)) - {0}) >= 2]
    _, counts = np.unique(np.array(detailed, dtype=object), return_counts=True)
    assert sorted(counts)[-2:] == [1, 5]  # the alien mask 5 times; genuine detailed masks are all distinct


def test_write_synthetic_course_formats(synthetic_dir):
    files = {p.relative_to(synthetic_dir).as_posix() for p in synthetic_dir.rglob("*.npz")}
    assert files == {
        "cells/training_set.npz",
        "cells/test_set.npz",
        "cells/test_labels.npz",
        "mars/mars_for_students.npz",
        "mars/test_labels.npz",
    }
    with np.load(synthetic_dir / "cells" / "training_set.npz") as npz:
        assert npz["images"].dtype == np.uint8 and npz["labels"].shape[1:] == (1,)
    with np.load(synthetic_dir / "mars" / "mars_for_students.npz") as npz:
        assert npz["training_set"].dtype == np.float64 and npz["training_set"].shape[1:] == (2, *MARS_SHAPE)
        assert npz["test_set"].shape == (SIZES["tiny"].mars_test, *MARS_SHAPE)
    assert load_labels(synthetic_dir / "mars" / "test_labels.npz").shape == (
        SIZES["tiny"].mars_test,
        *MARS_SHAPE,
    )
    assert load_labels(synthetic_dir / "cells" / "test_labels.npz").shape == (SIZES["tiny"].cells_test,)
    inputs = find_inputs(synthetic_dir)
    assert len(load_cells_train(inputs.require("cells"))) > SIZES["tiny"].cells_train  # contaminants included
    assert len(load_mars(inputs.require("mars"))) > SIZES["tiny"].mars_train


def test_tiny_is_reproducible(tmp_path):
    a = write_synthetic(tmp_path / "a", seed=3, size="tiny")
    b = write_synthetic(tmp_path / "b", seed=3, size="tiny")
    for name in a:
        assert a[name].read_bytes() == b[name].read_bytes()


def test_unknown_size(tmp_path):
    with pytest.raises(KitError, match="^synthetic size 'huge': unknown; choose one of tiny, demo$"):
        write_synthetic(tmp_path, size="huge")
