"""The Mars network's blocks: documented shapes, .keras round trips, mixed precision, block behaviour."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from an2dl_kit.models import blocks as B

X_SHAPE = (8, 16, 12)   # a skip / feature map
G_SHAPE = (4, 8, 20)    # a coarser gating map
RNG = np.random.default_rng(0)


def _x(shape=X_SHAPE, batch=2):
    return RNG.normal(size=(batch, *shape)).astype("float32")


# name -> (factory, input shapes, expected output shape without batch)
CASES = {
    "conv_norm_act": (lambda: B.ConvNormAct(7, 3, dilation_rate=2), [X_SHAPE], (8, 16, 7)),
    "residual_same": (lambda: B.ResidualBlock(12), [X_SHAPE], (8, 16, 12)),
    "residual_project": (lambda: B.ResidualBlock(16, dropout=0.2), [X_SHAPE], (8, 16, 16)),
    "squeeze_excite": (lambda: B.SqueezeExcite(4), [X_SHAPE], X_SHAPE),
    "aspp": (lambda: B.ASPP(10, rates=(1, 2, 3)), [X_SHAPE], (8, 16, 10)),
    "multiscale_aspp": (lambda: B.MultiScaleASPP(16), [X_SHAPE], (8, 16, 16 + 8 + 4)),
    "attention_gate_coarse": (lambda: B.AttentionGate(), [X_SHAPE, G_SHAPE], X_SHAPE),
    "attention_gate_same": (lambda: B.AttentionGate(6), [X_SHAPE, (8, 16, 5)], X_SHAPE),
    "weighted_fusion": (lambda: B.WeightedFusion(), [X_SHAPE, X_SHAPE, X_SHAPE], X_SHAPE),
    "fusion_block": (lambda: B.FusionBlock(size=(16, 32)), [X_SHAPE, G_SHAPE], (16, 32, 12 + 20)),
    "fusion_block_largest": (lambda: B.FusionBlock(), [G_SHAPE, X_SHAPE], (8, 16, 20 + 12)),
    "fusion_head": (lambda: B.FusionHead(5, size=(16, 32)), [X_SHAPE, G_SHAPE], (16, 32, 5)),
}
FLOAT32_OUTPUT = {"fusion_head"}  # probabilities stay float32 under mixed precision


def _model(factory, shapes) -> keras.Model:
    inputs = [keras.Input(s) for s in shapes]
    output = factory()(inputs if len(inputs) > 1 else inputs[0])
    return keras.Model(inputs, output)


def _randomise(model: keras.Model) -> None:
    """Random values in every variable (BN statistics and fusion logits included), so a reload that
    silently re-initialised anything would be caught."""
    for variable in model.variables:
        value = RNG.uniform(0.5, 1.5, size=variable.shape) if "variance" in variable.path else \
            RNG.normal(scale=0.3, size=variable.shape)
        variable.assign(value.astype(variable.dtype))


@pytest.mark.parametrize("name", sorted(CASES))
def test_block_shape_and_keras_round_trip(name, tmp_path):
    factory, shapes, expected = CASES[name]
    model = _model(factory, shapes)
    assert tuple(model.output.shape) == (None, *expected)
    _randomise(model)
    data = [_x(s) for s in shapes]
    before = keras.ops.convert_to_numpy(model(data, training=False))
    assert before.shape == (2, *expected)

    path = tmp_path / f"{name}.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    after = keras.ops.convert_to_numpy(loaded(data, training=False))
    np.testing.assert_allclose(after, before, rtol=0, atol=1e-6)
    block = model.layers[-1]
    assert type(loaded.layers[-1]) is type(block)
    assert loaded.layers[-1].get_config() == block.get_config()


@pytest.fixture
def mixed_policy():
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    yield
    keras.mixed_precision.set_global_policy(previous)


@pytest.mark.parametrize("name", sorted(CASES))
def test_block_runs_in_mixed_float16(name, mixed_policy):
    factory, shapes, expected = CASES[name]
    block = factory()
    data = [_x(s) for s in shapes]
    output = block(data if len(data) > 1 else data[0], training=False)
    assert block.compute_dtype == "float16"
    expected_dtype = "float32" if name in FLOAT32_OUTPUT else "float16"
    assert keras.backend.standardize_dtype(output.dtype) == expected_dtype
    assert tuple(output.shape) == (2, *expected)
    assert np.isfinite(keras.ops.convert_to_numpy(output)).all()
    # Weights stay float32 (a dropout's integer seed state aside).
    assert block.trainable_variables
    assert all(v.dtype == "float32" for v in block.variables if "float" in v.dtype)


def test_weighted_fusion_is_a_learned_convex_combination():
    a, b = _x(), _x()
    fusion = B.WeightedFusion()
    np.testing.assert_allclose(fusion([a, b]), (a + b) / 2, atol=1e-6)
    fusion.logits.assign(np.log(np.array([3.0, 1.0], "float32")))
    np.testing.assert_allclose(fusion.fusion_weights(), [0.75, 0.25], atol=1e-6)
    np.testing.assert_allclose(fusion([a, b]), 0.75 * a + 0.25 * b, atol=1e-5)


def test_weighted_fusion_rejects_different_shapes():
    with pytest.raises(ValueError, match="one shape"):
        B.WeightedFusion()([_x(), _x(G_SHAPE)])


def test_fusion_block_starts_as_concatenation_and_upsamples():
    full, coarse = _x((8, 16, 3)), _x((4, 8, 2))
    fusion = B.FusionBlock()
    out = keras.ops.convert_to_numpy(fusion([full, coarse]))
    np.testing.assert_allclose(fusion.fusion_weights(), [1.0, 1.0], atol=1e-6)
    np.testing.assert_allclose(out[..., :3], full, atol=1e-6)
    # A constant coarse map upsamples to the same constant.
    constant = np.full((1, 4, 8, 2), 0.7, "float32")
    out = keras.ops.convert_to_numpy(fusion([full[:1], constant]))
    np.testing.assert_allclose(out[..., 3:], 0.7, atol=1e-6)


def test_fusion_block_rejects_a_grid_that_does_not_divide():
    with pytest.raises(ValueError, match="does not divide"):
        B.FusionBlock(size=(10, 16))([_x(), _x(G_SHAPE)])


def test_attention_gate_only_attenuates():
    x, g = _x(), _x(G_SHAPE)
    out = keras.ops.convert_to_numpy(B.AttentionGate()([x, g]))
    ratio = out / x
    assert (ratio > 0).all() and (ratio < 1).all()  # a sigmoid gate in (0, 1) per pixel
    # One gate per pixel, shared by all channels.
    np.testing.assert_allclose(ratio, np.repeat(ratio[..., :1], x.shape[-1], axis=-1), rtol=1e-4)


def test_squeeze_excite_gates_channels_not_pixels():
    x = np.abs(_x()) + 0.1
    ratio = keras.ops.convert_to_numpy(B.SqueezeExcite(4)(x)) / x
    assert (ratio > 0).all() and (ratio < 1).all()
    np.testing.assert_allclose(ratio, np.broadcast_to(ratio[:, :1, :1, :], ratio.shape), rtol=1e-5)


def test_aspp_default_rates_fit_a_small_bridge():
    assert max(B.SMALL_MAP_RATES) < 4  # a 4x8 map: every 3x3 tap of every rate lands inside the map
    assert B.ASPP(8).rates == B.SMALL_MAP_RATES


def test_fusion_head_equals_fusion_block_then_1x1_softmax_head():
    shapes = [(4, 8, 6), (8, 16, 4), (16, 32, 3)]
    inputs = [keras.Input(s) for s in shapes]
    fused = B.FusionHead(5, size=(32, 64))
    unfused_block = B.FusionBlock(size=(32, 64))
    head = keras.layers.Conv2D(5, 1, activation="softmax")
    fused_model = keras.Model(inputs, fused(inputs))
    unfused_model = keras.Model(inputs, head(unfused_block(inputs)))
    assert fused_model.count_params() == unfused_model.count_params()
    _randomise(unfused_model)
    fused.fusion.logits.assign(unfused_block.logits)
    fused.kernel.assign(head.kernel)
    fused.bias.assign(head.bias)
    data = [_x(s) for s in shapes]
    np.testing.assert_allclose(fused_model(data), unfused_model(data), atol=1e-6)
