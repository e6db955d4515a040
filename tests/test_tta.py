"""Test-time augmentation: views, their inverses, classification and dense merging."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest

from an2dl_kit.errors import KitError
from an2dl_kit.inference import tta

EXACT = ("identity", "flip_lr", "flip_ud", "rot90", "rot180", "rot270", "transpose", "anti_transpose")


def _images(n=3, height=12, width=12, channels=3) -> np.ndarray:
    shape = (n, height, width) + ((channels,) if channels else ())
    return np.random.default_rng(0).uniform(0, 255, shape).astype(np.float32)


class _Recorder:
    """A stand-in model: records what it is fed and returns a fixed function of it."""

    def __init__(self, fn):
        self.fn, self.calls = fn, []

    def predict(self, x, batch_size=None, verbose=0):
        self.calls.append(x.copy())
        return self.fn(x)


def _mean_colour_probabilities(x):
    """Invariant to every geometric view: softmax of the per-channel mean."""
    logits = x.mean(axis=(1, 2)) / 50.0
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("name", EXACT)
def test_exact_views_are_undone_exactly(name):
    x = _images()
    view = tta.VIEWS[name]
    assert view.apply(x).shape == x.shape
    np.testing.assert_array_equal(view.undo(view.apply(x)), x)


def test_dihedral_views_are_eight_distinct_images():
    x = _images(n=1)
    outputs = [tta.VIEWS[name].apply(x) for name in tta.DIHEDRAL_VIEWS]
    assert len({o.tobytes() for o in outputs}) == 8


def test_shift_moves_content_by_three_pixels_and_repeats_the_edge():
    x = np.zeros((1, 9, 9), np.float32)
    x[0, 4, 4] = 1
    right = tta.VIEWS["shift_right"].apply(x)[0]
    down = tta.VIEWS["shift_down"].apply(x)[0]
    assert np.argwhere(right).tolist() == [[4, 7]]
    assert np.argwhere(down).tolist() == [[7, 4]]
    ramp = np.tile(np.arange(9, dtype=np.float32), (1, 9, 1))
    np.testing.assert_array_equal(tta.VIEWS["shift_right"].apply(ramp)[0, 0], [0, 0, 0, 0, 1, 2, 3, 4, 5])
    # Undo restores the interior exactly (the border was pushed out).
    x = _images()
    back = tta.VIEWS["shift_left"].undo(tta.VIEWS["shift_left"].apply(x))
    np.testing.assert_array_equal(back[:, :, 3:-3], x[:, :, 3:-3])


def test_rotation_turns_counter_clockwise_like_rot90():
    x = _images(n=2, height=15, width=15)
    np.testing.assert_allclose(tta._rotate(90.0)(x), tta.VIEWS["rot90"].apply(x), atol=1e-3)
    rotated = tta.VIEWS["rotate_ccw"].apply(x)
    assert rotated.shape == x.shape and rotated.dtype == np.float32
    assert not np.allclose(rotated, x)
    # Centre pixel is the rotation's fixed point.
    np.testing.assert_allclose(rotated[:, 7, 7], x[:, 7, 7], atol=1e-4)


def test_tta_of_a_view_invariant_model_equals_the_plain_prediction():
    x = _images(n=5, height=16, width=16)
    model = _Recorder(_mean_colour_probabilities)
    plain = tta.predict_tta(model, x, views="none")
    for views in ("dihedral", tta.DIHEDRAL_VIEWS[:3]):
        np.testing.assert_allclose(tta.predict_tta(model, x, views=views), plain, rtol=1e-6)
    assert plain.dtype == np.float32 and plain.shape == (5, 3)
    np.testing.assert_allclose(plain, _mean_colour_probabilities(x), rtol=1e-6)


def test_tta_of_an_identity_like_keras_model_returns_the_plain_prediction():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((16, 16, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inputs)
    outputs = keras.layers.Dense(8, activation="softmax")(pooled)
    model = keras.Model(inputs, outputs)
    # Scaled to 0..1 so the logits stay O(1): with 0..255 inputs the rounding of each view's
    # summation order in the pooling broke rtol 1e-5 for about 1 weight init in 60.
    x = _images(n=4, height=16, width=16) / 255.0
    plain = model.predict(x, verbose=0)
    np.testing.assert_allclose(tta.predict_tta(model, x, views="dihedral"), plain, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(tta.predict_tta(model, x, views="none"), plain, rtol=1e-6)


def test_classification_tta_is_the_mean_over_views():
    x = _images(n=2)
    model = _Recorder(lambda batch: batch[:, :1, :1, :].reshape(len(batch), -1))  # top-left pixel
    out = tta.predict_tta(model, x, views=("identity", "flip_lr"))
    expected = (x[:, 0, 0, :] + x[:, 0, -1, :]) / 2
    np.testing.assert_allclose(out, expected, rtol=1e-6)
    assert len(model.calls) == 2


@pytest.mark.parametrize("views", ["dense", "dihedral"])
def test_dense_mode_undoes_each_view_on_the_probability_maps(views):
    x = _images(n=2, height=8, width=8, channels=4)  # the "model" returns its input as 4-class maps
    model = _Recorder(lambda batch: batch)
    np.testing.assert_allclose(tta.predict_tta(model, x, views=views, dense=True), x, rtol=1e-6)
    # Without undo the flipped maps would be averaged misaligned.
    assert not np.allclose(tta.predict_tta(model, x, views=views, dense=False), x)


def test_dense_views_keep_a_non_square_shape():
    x = _images(n=2, height=4, width=8, channels=5)
    model = _Recorder(lambda batch: batch)
    out = tta.predict_tta(model, x, views="dense", dense=True)
    assert out.shape == (2, 4, 8, 5)
    np.testing.assert_allclose(out, x, rtol=1e-6)


def test_large_inputs_are_predicted_in_chunks(monkeypatch):
    monkeypatch.setattr(tta, "CHUNK", 4)
    x = _images(n=10, height=6, width=6)
    model = _Recorder(_mean_colour_probabilities)
    out = tta.predict_tta(model, x, views=("identity", "flip_ud"))
    assert [len(c) for c in model.calls] == [4, 4, 4, 4, 2, 2]
    np.testing.assert_allclose(out, _mean_colour_probabilities(x), rtol=1e-6)


def test_view_names_resolve_from_sets_lists_and_strings():
    assert tta.resolve_views("reference") == tta.REFERENCE_VIEWS
    assert len(tta.REFERENCE_VIEWS) == 8
    assert tta.resolve_views("identity,flip_lr") == ("identity", "flip_lr")
    assert tta.resolve_views(["rot90"]) == ("rot90",)
    choices = re.escape(f"choose views from {', '.join(tta.VIEWS)} or a set from {', '.join(tta.VIEW_SETS)}") + "$"
    with pytest.raises(KitError, match=f"^TTA views 'identity,spin': unknown spin; {choices}") as error:
        tta.resolve_views("identity,spin")
    assert "\n" not in str(error.value)
    with pytest.raises(KitError, match=f"^TTA views \\(\\): unknown empty; {choices}"):
        tta.resolve_views(())
    with pytest.raises(KitError, match="^TTA views 'dihedrall': unknown dihedrall;"):
        tta.resolve_views("dihedrall")
