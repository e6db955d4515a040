"""The colour normalisation layer: values by hand, invariances, .keras round trip, mixed precision."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from an2dl_kit.models.cells import build_classifier
from an2dl_kit.models.colour import METHODS, OPPONENT_BASIS, OPPONENT_TARGET, ColourNormalization
from an2dl_kit.registries import COLOUR_NORMALIZATIONS

RNG = np.random.default_rng(0)
IMAGES = RNG.uniform(40, 200, (3, 16, 16, 3)).astype(np.float32)


def _run(layer, images=IMAGES) -> np.ndarray:
    return keras.ops.convert_to_numpy(layer(images))


def test_the_registry_names_the_layer_methods():
    assert COLOUR_NORMALIZATIONS.choices == ("none", *METHODS)


def test_grey_world_scales_each_channel_to_the_image_grey_level():
    image = np.zeros((1, 2, 2, 3), np.float32)
    image[..., 0], image[..., 1], image[..., 2] = [[60, 100], [60, 100]], 40.0, 20.0  # channel means 80, 40, 20
    out = _run(ColourNormalization("grey_world"), image)
    grey = (80 + 40 + 20) / 3
    np.testing.assert_allclose(out[0, 0, 1], [100 * grey / 80, grey, grey], rtol=1e-5)
    np.testing.assert_allclose(out.mean(axis=(1, 2))[0], [grey] * 3, rtol=1e-5)


def test_grey_world_undoes_a_colour_cast():
    cast = np.clip(IMAGES * np.array([1.2, 0.9, 0.7], np.float32), 0, 255)
    layer = ColourNormalization("grey_world")
    plain, shifted = _run(layer), _run(layer, cast)
    # The grey level moves with the cast (brightness is kept); the colour balance does not.
    ratio = shifted / np.maximum(plain, 1e-3)
    np.testing.assert_allclose(ratio, ratio[:, :1, :1, :1] * np.ones_like(ratio), rtol=1e-4)


def _opponent_statistics(images: np.ndarray) -> np.ndarray:
    opponent = images.astype(np.float64) @ np.asarray(OPPONENT_BASIS)
    mean, variance = opponent.mean(axis=(1, 2)), opponent.var(axis=(1, 2))
    return np.stack([mean[:, 0], np.sqrt(variance[:, 0]), mean[:, 1], mean[:, 2],
                     np.sqrt(variance[:, 1:].mean(axis=1))], axis=1)


NARROW = (300.0, 20.0, 5.0, -2.0, 6.0)  # a target whose images stay inside 0-255 (no clipping to blur the check)


def test_opponent_sets_each_image_to_the_target_statistics():
    out = _run(ColourNormalization("opponent", target=NARROW, epsilon=1e-3))
    assert 0 < out.min() and out.max() < 255
    np.testing.assert_allclose(_opponent_statistics(out), np.tile(NARROW, (3, 1)), rtol=1e-4, atol=1e-3)


def test_opponent_removes_brightness_contrast_and_saturation_shifts():
    layer = ColourNormalization("opponent", target=NARROW, epsilon=1e-3)
    grey = IMAGES.mean(axis=-1, keepdims=True)
    shifted = np.clip(0.6 * (grey + 1.5 * (IMAGES - grey)) + 30, 0, 255)  # more saturated, less contrast, brighter
    np.testing.assert_allclose(_run(layer, shifted), _run(layer), atol=0.05)


def test_an_unknown_method_or_a_short_target_is_refused():
    with pytest.raises(ValueError, match="method 'macenko': choose one of grey_world, opponent"):
        ColourNormalization("macenko")
    with pytest.raises(ValueError, match="target needs 5 values"):
        ColourNormalization("opponent", target=(1.0, 2.0))


@pytest.mark.parametrize("method", METHODS)
def test_a_classifier_with_the_layer_survives_a_keras_round_trip(method, tmp_path):
    model, _ = build_classifier("small_cnn", "none", image_size=32, colour_norm=method)
    layer = model.get_layer("colour_norm")
    assert layer.get_config()["method"] == method and layer.get_config()["target"] == list(OPPONENT_TARGET)
    model.save(tmp_path / "model.keras")
    loaded = keras.saving.load_model(tmp_path / "model.keras", compile=False)
    images = RNG.integers(0, 256, (4, 96, 96, 3)).astype(np.float32)
    assert isinstance(loaded.get_layer("colour_norm"), ColourNormalization)
    np.testing.assert_allclose(loaded.predict(images, verbose=0), model.predict(images, verbose=0), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("method", METHODS)
def test_under_mixed_precision_the_layer_computes_in_float32(method):
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        mixed = ColourNormalization(method)
    finally:
        keras.config.set_dtype_policy(policy)
    assert mixed.compute_dtype == "float32"
    images = RNG.uniform(0, 255, (2, 96, 96, 3)).astype(np.float16)  # sums of 9,216 values: beyond float16
    out = _run(mixed, images)
    assert out.dtype == np.float32 and np.isfinite(out).all()
    np.testing.assert_allclose(out, _run(ColourNormalization(method), images.astype(np.float32)), rtol=1e-5,
                               atol=1e-3)
