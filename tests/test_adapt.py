"""Test-time BatchNorm adaptation: the statistics against NumPy, per batch, restored afterwards, no-BN models."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from an2dl_kit.errors import KitError
from an2dl_kit.inference import adapt
from an2dl_kit.inference.tta import predict_tta

EPSILON = 1e-3
W1 = np.array([[1.0, -2.0, 0.5], [0.3, 1.0, -1.0], [2.0, 0.0, 1.0], [-1.0, 0.5, 0.2]], np.float32)
W2 = np.array([[0.5, 1.0], [-1.0, 0.2], [0.3, -0.7]], np.float32)


def _model() -> keras.Model:
    """Dense -> BN -> [nested: Dense -> BN] -> Dropout, fixed weights, trained statistics far from the data's."""
    inner_in = keras.Input((3,))
    inner_bn = keras.layers.BatchNormalization(epsilon=EPSILON, name="inner_bn")
    inner = keras.Model(inner_in, inner_bn(keras.layers.Dense(2, use_bias=False, name="d2")(inner_in)), name="inner")
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, use_bias=False, name="d1")(inputs)
    x = keras.layers.BatchNormalization(epsilon=EPSILON, name="outer_bn")(x)
    model = keras.Model(inputs, keras.layers.Dropout(0.5)(inner(x)))
    model.get_layer("d1").set_weights([W1])
    inner.get_layer("d2").set_weights([W2])
    outer = model.get_layer("outer_bn")
    outer.set_weights([np.array([1.5, 0.5, 1.0]), np.array([0.1, -0.2, 0.3]), np.full(3, 5.0), np.full(3, 9.0)])
    inner_bn.set_weights([np.array([2.0, 1.0]), np.array([0.0, 1.0]), np.full(2, -3.0), np.full(2, 4.0)])
    return model


def _normalise(h, gamma, beta, mean, variance):
    return (h - mean) / np.sqrt(variance + EPSILON) * gamma + beta


def _expected(model, x, statistics):
    """The model's output by hand; `statistics(h)` gives the (mean, variance) each BN uses for its input h."""
    outer, inner = model.get_layer("outer_bn"), model.get_layer("inner").get_layer("inner_bn")
    h1 = x @ W1
    y1 = _normalise(h1, np.array(outer.gamma), np.array(outer.beta), *statistics(h1, outer))
    h2 = y1 @ W2
    return _normalise(h2, np.array(inner.gamma), np.array(inner.beta), *statistics(h2, inner))


def _trained(h, layer):
    return np.array(layer.moving_mean), np.array(layer.moving_variance)


def _batch(h, layer):
    return h.mean(axis=0), h.var(axis=0)


X = np.random.default_rng(0).normal(2.0, 3.0, (10, 4)).astype(np.float32)


@pytest.fixture(autouse=True)
def fully_adapted(monkeypatch):
    """Ten images count as a whole test set here; the blend of fewer images has its own test."""
    monkeypatch.setattr(adapt, "FULL_ADAPTATION_IMAGES", len(X))


def test_set_mode_re_estimates_every_layer_on_the_images_and_restores_the_trained_statistics():
    model = _model()
    before = [np.array(w) for w in model.weights]
    plain = model.predict(X, verbose=0)
    np.testing.assert_allclose(plain, _expected(model, X, _trained), rtol=1e-5, atol=1e-5)
    with adapt.adapted(model, "set", X):
        outer = model.get_layer("outer_bn")
        np.testing.assert_allclose(np.array(outer.moving_mean), (X @ W1).mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(np.array(outer.moving_variance), (X @ W1).var(axis=0), rtol=1e-5)
        # Ten images fit one statistics batch: the whole-set statistics exactly, in every layer.
        np.testing.assert_allclose(model.predict(X[:3], verbose=0), _expected(model, X, _batch)[:3], rtol=1e-4,
                                   atol=1e-5)
    for weight, kept in zip(model.weights, before, strict=True):
        np.testing.assert_array_equal(np.array(weight), kept)
    np.testing.assert_array_equal(model.predict(X, verbose=0), plain)
    assert "call" not in vars(model.get_layer("outer_bn"))  # the class's own call is back


def test_set_mode_pools_the_statistics_of_several_batches(monkeypatch):
    monkeypatch.setattr(adapt, "STATISTICS_BATCH", 4)
    model = _model()
    with adapt.adapted(model, "set", X):
        outer = model.get_layer("outer_bn")
        # The first layer sees the images themselves: pooled over 4 + 4 + 2 images, its statistics are exact.
        np.testing.assert_allclose(np.array(outer.moving_mean), (X @ W1).mean(axis=0), rtol=1e-5)
        np.testing.assert_allclose(np.array(outer.moving_variance), (X @ W1).var(axis=0), rtol=1e-5)


def test_batch_mode_normalises_each_prediction_batch_with_its_own_statistics():
    model = _model()
    with adapt.adapted(model, "batch"):
        got = model.predict(X, batch_size=5, verbose=0)
    expected = np.concatenate([_expected(model, X[:5], _batch), _expected(model, X[5:], _batch)])
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(model.predict(X, verbose=0), _expected(model, X, _trained), rtol=1e-5, atol=1e-5)


def test_predict_tta_adapts_on_all_its_images_and_every_member_of_an_average():
    class Average:  # the runner's MemberAverage: members, and a predict over them
        def __init__(self, members):
            self.members = members

        def predict(self, x, batch_size=None, verbose=0):
            return sum(m.predict(x, batch_size=batch_size, verbose=0) for m in self.members) / len(self.members)

    first, second = _model(), _model()
    second.get_layer("outer_bn").gamma.assign([0.5, 2.0, 1.0])
    average = Average([first, second])
    images = X.reshape(10, 2, 2, 1)  # predict_tta's views act on axes 1 and 2; the model sees 4 features
    flat = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Reshape((4,))])
    wrapped = Average([keras.Sequential([flat, m]) for m in average.members])
    got = predict_tta(wrapped, images, views=("identity",), batch_size=3, adapt="set")
    expected = (_expected(first, X, _batch) + _expected(second, X, _batch)) / 2
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-5)
    assert len(adapt.batchnorm_layers(wrapped)) == 4


def test_a_model_without_batchnorm_predicts_unchanged_and_the_log_says_so():
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.LayerNormalization()(keras.layers.Dense(3)(inputs)))
    plain = model.predict(X, batch_size=4, verbose=0)
    for mode in ("set", "batch"):
        with adapt.adapted(model, mode, X):
            np.testing.assert_array_equal(model.predict(X, batch_size=4, verbose=0), plain)
        assert "no BatchNormalization layer; predicting as with none" in adapt.describe(model, mode)
    assert adapt.describe(_model(), "set") == ("bn_adapt=set: statistics re-estimated on every image predicted "
                                              "at once, in 2 BatchNormalization layer(s) per model")


def test_an_unknown_mode_is_a_kit_error():
    with pytest.raises(KitError, match="BatchNorm adaptation 'train': unknown; choose one of none, set, batch"):
        with adapt.adapted(_model(), "train", X):
            pass


def test_mixed_precision_batchnorm_adapts_in_float32():
    policy = keras.config.dtype_policy()
    keras.config.set_dtype_policy("mixed_float16")
    try:
        model = _model()
    finally:
        keras.config.set_dtype_policy(policy)
    with adapt.adapted(model, "set", X):
        got = model.predict(X, verbose=0)
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, _expected(model, X, _batch), rtol=2e-2, atol=2e-2)


def test_batchnorm_inside_a_custom_layer_is_found_and_adapted():
    from an2dl_kit.models.mars import build_enhanced_unet

    model = build_enhanced_unet((16, 32, 1), 5, 0.25)

    def walk(layer):  # what `.layers` shows: models inside models, not a custom layer's own sublayers
        yield layer
        for child in getattr(layer, "layers", []):
            yield from walk(child)

    visible = [layer for layer in walk(model) if isinstance(layer, keras.layers.BatchNormalization)]
    layers = adapt.batchnorm_layers(model)
    assert len(layers) > len(visible)
    hidden = next(layer for layer in layers if layer not in visible)
    images = np.random.default_rng(0).uniform(0, 255, (6, 16, 32, 1)).astype(np.float32)
    with adapt.adapted(model, "set", images):
        assert not np.allclose(np.array(hidden.moving_mean), 0.0)
    assert np.allclose(np.array(hidden.moving_mean), 0.0)  # a fresh model's statistics, back in place


def test_set_mode_blends_the_statistics_of_few_images_with_the_trained_ones(monkeypatch):
    monkeypatch.setattr(adapt, "FULL_ADAPTATION_IMAGES", 4 * len(X))
    model = _model()
    outer = model.get_layer("outer_bn")
    trained_mean, trained_variance = np.array(outer.moving_mean), np.array(outer.moving_variance)
    with adapt.adapted(model, "set", X):
        np.testing.assert_allclose(np.array(outer.moving_mean), 0.25 * (X @ W1).mean(axis=0) + 0.75 * trained_mean,
                                   rtol=1e-5)
        np.testing.assert_allclose(np.array(outer.moving_variance),
                                   0.25 * (X @ W1).var(axis=0) + 0.75 * trained_variance, rtol=1e-5)
    np.testing.assert_array_equal(np.array(outer.moving_mean), trained_mean)
