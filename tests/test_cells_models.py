"""Cells backbones and head: shapes, dtypes, weights handling, phase freezing."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from an2dl_kit.errors import KitError
from an2dl_kit.models import cells as models
from an2dl_kit.registries import BACKBONES


def _images(side: int, n: int = 2) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, side, side, 3)).astype("float32")


# The two largest take several seconds even at their minimum input.
SLOW_BACKBONES = ("convnext_large", "efficientnet")


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BACKBONES else n
                                  for n in sorted(BACKBONES)])
def test_each_backbone_maps_raw_pixels_to_eight_float32_probabilities(name):
    side = BACKBONES[name].min_size
    model, used = models.build_classifier(name, "none", input_shape=(side, side, 3))
    probabilities = keras.ops.convert_to_numpy(model(_images(side), training=False))
    assert used == "none"
    assert probabilities.shape == (2, 8)
    assert probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-5)
    assert np.isfinite(probabilities).all()


def test_head_layers_follow_the_reference_solution():
    model, _ = models.build_classifier("small_cnn", "none", image_size=32)
    head = [layer for layer in model.layers if layer.name.startswith(("head_", "probabilities"))]
    kinds = [type(layer).__name__ for layer in head]
    assert kinds == ["GlobalAveragePooling2D", "BatchNormalization", "Dropout", "Dense", "Dense", "Dense",
                     "Dense", "Dropout", "Dense"]
    dense = [layer for layer in head if isinstance(layer, keras.layers.Dense)]
    assert [layer.units for layer in dense] == [512, 256, 128, 64, 8]
    assert [layer.activation.__name__ for layer in dense] == ["relu"] * 4 + ["softmax"]
    assert [layer.rate for layer in head if isinstance(layer, keras.layers.Dropout)] == [0.2, 0.25]


def test_softmax_stays_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model, _ = models.build_classifier("small_cnn", "none", image_size=32)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("head_dense_512").compute_dtype == "float16"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    assert model.output.dtype == "float32"


def test_image_size_resizes_inside_the_model():
    model, _ = models.build_classifier("small_cnn", "none", image_size=48)
    assert model.input_shape == (None, 96, 96, 3)
    assert models.get_backbone(model).input_shape == (None, 48, 48, 3)


def _bn_and_other_weighted_layers(model):
    bn, other = [], []
    for layer in models._all_layers(models.get_backbone(model))[1:]:
        if isinstance(layer, keras.layers.BatchNormalization):
            bn.append(layer)
        elif layer.weights and not isinstance(layer, keras.Model):
            other.append(layer)
    return bn, other


def test_phase_one_freezes_the_whole_backbone():
    # MobileNet nests its functional model behind a rescaling layer: the case Keras' own propagation misses.
    model, _ = models.build_classifier("mobilenet", "none", input_shape=(32, 32, 3))
    models.freeze_backbone(model)
    assert models.get_backbone(model).trainable_weights == []
    assert all(not layer.trainable for layer in models._all_layers(models.get_backbone(model)))
    assert model.get_layer("head_dense_512").trainable


# The normalisation kind each pretrained backbone has; fine-tuning must freeze exactly those layers.
NORMALIZATION_KIND = {"convnext_base": keras.layers.LayerNormalization,
                      "convnext_large": keras.layers.LayerNormalization,
                      "efficientnet": keras.layers.BatchNormalization,
                      "mobilenet": keras.layers.BatchNormalization,
                      "inception_v3": keras.layers.BatchNormalization}


def _split_backbone_layers(model):
    norm, other = [], []
    for layer in models._all_layers(models.get_backbone(model))[1:]:
        if isinstance(layer, models.NORMALIZATION_LAYERS):
            norm.append(layer)
        elif layer.weights and not isinstance(layer, keras.Model):
            other.append(layer)
    return norm, other


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW_BACKBONES else n
                                  for n in sorted(NORMALIZATION_KIND)])
def test_fine_tuning_freezes_the_backbones_own_normalisation(name):
    side = BACKBONES[name].min_size
    model, _ = models.build_classifier(name, "none", input_shape=(side, side, 3))
    models.freeze_backbone(model)
    models.unfreeze_except_normalization(model)
    norm, other = _split_backbone_layers(model)
    assert len(norm) > 10 and len(other) > 10
    assert all(isinstance(layer, NORMALIZATION_KIND[name]) for layer in norm)
    assert not any(layer.trainable for layer in norm)
    assert all(layer.trainable for layer in other)
    assert all(layer.trainable for layer in model.layers if layer.name.startswith("head_"))
    frozen = {id(w) for layer in norm for w in layer.weights}
    assert frozen.isdisjoint({id(w) for w in model.trainable_weights})


@pytest.mark.slow
def test_reference_fine_tuning_also_freezes_layer_scales_and_the_head_batchnorm():
    model, _ = models.build_classifier("convnext_base", "none", input_shape=(32, 32, 3))
    models.unfreeze_except_normalization(model, ("layer_scale", "head_bn"))
    scales = [layer for layer in models._all_layers(model) if type(layer).__name__ == "LayerScale"]
    assert len(scales) == 36  # one per ConvNeXt-Base block
    assert not any(layer.trainable for layer in scales) and not model.get_layer("head_bn").trainable
    assert model.get_layer("head_dense_512").trainable
    with pytest.raises(KitError, match="unknown parts"):
        models.unfreeze_except_normalization(model, ("stem",))


def test_unknown_backbone_is_a_kit_error():
    with pytest.raises(KitError, match=f"backbone 'resnet9000': unknown; choose one of {', '.join(BACKBONES)}$"):
        models.build_classifier("resnet9000", "none")


def test_missing_weights_file_is_a_kit_error(tmp_path):
    missing = tmp_path / "nope.weights.h5"
    with pytest.raises(KitError, match=f"{missing}: weights file not found"):
        models.build_classifier("small_cnn", missing, image_size=32)


def test_imagenet_for_a_scratch_backbone_fails_or_falls_back():
    with pytest.raises(KitError, match="backbone small_cnn weights imagenet: no ImageNet weights"):
        models.build_backbone("small_cnn", "imagenet", (32, 32, 3))
    model, used = models.build_backbone("small_cnn", "imagenet", (32, 32, 3), allow_random_fallback=True)
    assert used == "none"
    assert model.output_shape[-1] == models.SMALL_STAGES[-1][0]


@pytest.mark.filterwarnings("ignore:Skipping nested container")
def test_local_weights_file_is_loaded_and_a_mismatched_one_is_refused(tmp_path):
    source, _ = models.build_backbone("small_cnn", "none", (32, 32, 3))
    path = tmp_path / "small.weights.h5"
    source.save_weights(path)
    loaded, used = models.build_backbone("small_cnn", path, (32, 32, 3))
    assert used == str(path)
    for a, b in zip(source.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    wrong = tmp_path / "other.weights.h5"
    other.save_weights(wrong)
    with pytest.raises(KitError, match=f"backbone small_cnn weights {wrong}: "):
        models.build_backbone("small_cnn", wrong, (32, 32, 3))
    _, used = models.build_backbone("small_cnn", wrong, (32, 32, 3), allow_random_fallback=True)
    assert used == "none"


def test_input_below_the_minimum_side_is_refused():
    with pytest.raises(KitError, match="backbone inception_v3: input \\(32, 32\\) is below its minimum side 75"):
        models.build_backbone("inception_v3", "none", (32, 32, 3))
