"""The Mars networks: the reference table's shapes at full width, dtypes, width scaling, the baseline."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from an2dl_kit.errors import KitError
from an2dl_kit.models import blocks as B
from an2dl_kit.models import mars as M

# The reference report's table (batch dimension left out).
REFERENCE_SHAPES = {
    "image": (64, 128, 1),
    "enc1": (32, 64, 32),
    "enc2": (16, 32, 64),
    "enc3": (8, 16, 128),
    "enc4": (4, 8, 256),
    "bridge": (4, 8, 512),
    "dec1": (4, 8, 256),
    "dec2": (8, 16, 128),
    "dec3": (16, 32, 64),
    "dec4": (32, 64, 32),
    "fusion": (64, 128, 480),
    "head": (64, 128, 5),
}


@pytest.fixture(scope="module")
def full_model() -> keras.Model:
    return M.build_enhanced_unet(width=1.0)


def test_full_width_network_matches_the_reference_table(full_model):
    for name, shape in REFERENCE_SHAPES.items():
        assert tuple(full_model.get_layer(name).output.shape) == (None, *shape), name


def test_full_width_network_maps_tiles_to_float32_probabilities(full_model):
    x = np.random.default_rng(0).uniform(size=(2, 64, 128, 1)).astype("float32")
    y = keras.ops.convert_to_numpy(full_model(x, training=False))
    assert y.shape == (2, 64, 128, 5) and y.dtype == np.float32
    np.testing.assert_allclose(y.sum(axis=-1), 1.0, atol=1e-5)


def test_network_uses_every_block_of_the_design(full_model):
    kinds = {type(layer) for layer in full_model.layers}
    assert {B.ResidualBlock, B.SqueezeExcite, B.MultiScaleASPP, B.ASPP, B.AttentionGate, B.WeightedFusion,
            B.FusionBlock} <= kinds
    assert isinstance(full_model.get_layer("dec1_up"), keras.layers.Conv2DTranspose)
    assert full_model.get_layer("dec1_up").strides == (1, 1)  # enc4 already has the bridge's grid
    assert full_model.get_layer("dec2_up").strides == (2, 2)
    assert full_model.get_layer("bridge_aspp").rates == (1, 2, 3)
    assert full_model.get_layer("bridge_aspp").compute_output_shape((None, 4, 8, 256))[-1] == 512 + 256 + 128


@pytest.mark.parametrize("width", [0.5, 0.125])
def test_width_scales_every_filter_count(width):
    model = M.build_enhanced_unet(width=width)
    for name, shape in REFERENCE_SHAPES.items():
        channels = shape[-1] if name in ("image", "head") else M.scaled(shape[-1], width)
        if name == "fusion":
            channels = sum(M.scaled(f, width) for f in M.ENCODER_FILTERS)
        assert tuple(model.get_layer(name).output.shape) == (None, *shape[:2], channels), name


def test_fused_head_is_the_same_network_without_the_wide_tensor(full_model):
    fused = M.build_enhanced_unet(width=1.0, fused_head=True)
    assert fused.count_params() == full_model.count_params()
    assert tuple(fused.get_layer("head").output.shape) == (None, 64, 128, 5)
    assert "fusion" not in [layer.name for layer in fused.layers]
    for name in ("bridge", "dec4"):
        assert fused.get_layer(name).output.shape == full_model.get_layer(name).output.shape


def test_mixed_precision_network_computes_in_float16_and_outputs_float32():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = M.build_enhanced_unet(width=0.125)
        y = model(np.zeros((1, 64, 128, 1), "float32"), training=False)
        fused_y = M.build_enhanced_unet(width=0.125, fused_head=True)(np.zeros((1, 64, 128, 1), "float32"))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    assert model.get_layer("dec4").compute_dtype == "float16"
    assert model.get_layer("fusion").compute_dtype == "float16"
    for output in (y, fused_y):
        assert keras.backend.standardize_dtype(output.dtype) == "float32"
        assert np.isfinite(keras.ops.convert_to_numpy(output)).all()


def test_plain_baseline_is_a_three_level_unet():
    model = M.build_model("plain", width=1.0)
    assert [tuple(model.get_layer(f"enc{i}").output.shape[1:]) for i in (1, 2, 3)] == [
        (32, 64, 32), (16, 32, 64), (8, 16, 128)]
    assert tuple(model.get_layer("bottleneck").output.shape[1:]) == (8, 16, 256)
    assert tuple(model.output.shape) == (None, 64, 128, 5)
    assert model.count_params() < M.build_model("enhanced", width=1.0).count_params()


def test_unknown_architecture_is_refused():
    with pytest.raises(KitError, match="^architecture 'segformer': unknown; choose one of enhanced, plain$"):
        M.build_model("segformer")
