"""Mars terrain segmenters: the enhanced U-Net of the reference solution and a plain U-Net baseline.

Enhanced U-Net at width 1.0 (layer name -> output shape, batch dimension left out):

| layer   | shape          | what                                                          |
|---------|----------------|---------------------------------------------------------------|
| image   | (64, 128, 1)   | grey tile scaled to [0, 1]                                    |
| enc1    | (32, 64, 32)   | residual block + squeeze-and-excitation, 2x2 max pool         |
| enc2    | (16, 32, 64)   | the same                                                      |
| enc3    | (8, 16, 128)   | the same                                                      |
| enc4    | (4, 8, 256)    | the same                                                      |
| bridge  | (4, 8, 512)    | SE, multi-scale ASPP, concat with enc4 and pooled enc3, 3x3 conv |
| dec1    | (4, 8, 256)    | transpose conv, gated skip (ASPP + attention), fusion, residual |
| dec2    | (8, 16, 128)   | the same                                                      |
| dec3    | (16, 32, 64)   | the same                                                      |
| dec4    | (32, 64, 32)   | the same                                                      |
| fusion  | (64, 128, 480) | every decoder output upsampled to the tile and weighted       |
| head    | (64, 128, 5)   | 1x1 conv, softmax, float32                                    |

Decoder i upsamples the previous stage with a transpose convolution (stride 1 for dec1, whose skip enc4
already has the bridge's grid), passes the matching encoder output through ASPP and an attention gate driven
by the previous stage, merges the two with learned weights, and refines the result with a residual block.
`width` scales every filter count, so the same network exists in smoke, local and Kaggle sizes.
"""

from __future__ import annotations

import keras
from keras import layers

from an2dl_kit.models.blocks import (
    ASPP,
    SMALL_MAP_RATES,
    AttentionGate,
    ConvNormAct,
    FusionBlock,
    FusionHead,
    MultiScaleASPP,
    ResidualBlock,
    SqueezeExcite,
    WeightedFusion,
)
from an2dl_kit.registries import ARCHITECTURES
from an2dl_kit.task import MARS

INPUT_SHAPE = (*MARS.image_shape, 1)  # the grey tile with its channel axis
ENCODER_FILTERS = (32, 64, 128, 256)
BRIDGE_FILTERS = 512
PLAIN_FILTERS = (32, 64, 128)
MIN_FILTERS = 4


def scaled(filters: int, width: float) -> int:
    """A filter count scaled by the width multiplier, never below MIN_FILTERS."""
    return max(int(round(filters * width)), MIN_FILTERS)


def _head(x, num_classes: int):
    # float32 softmax: under mixed precision a float16 softmax saturates and the loss goes NaN.
    return layers.Conv2D(num_classes, 1, activation="softmax", dtype="float32", name="head")(x)


def build_enhanced_unet(input_shape=INPUT_SHAPE, num_classes: int = MARS.num_classes, width: float = 1.0,
                        rates=SMALL_MAP_RATES, se_ratio: int = 8, dropout: float = 0.0,
                        fused_head: bool = False, name: str = "mars_unet") -> keras.Model:
    """The reference solution's enhanced U-Net (see the module docstring for its layer table).

    Args:
        input_shape: (height, width, channels) of a tile; height and width divisible by 16.
        num_classes: output classes (background included).
        width: multiplier of every filter count.
        rates: dilation rates of every ASPP.
        se_ratio: channel reduction of the squeeze-and-excitation blocks.
        dropout: spatial dropout inside the two deepest encoder blocks (0 for none).
        fused_head: compute fusion + head as one `FusionHead` (the same function and parameters, without
            the full-resolution 480-channel tensor: about twice as fast to train on a CPU); the table's
            `fusion` layer then does not exist.
        name: the model's name.
    """
    filters = [scaled(f, width) for f in ENCODER_FILTERS]
    bridge_filters = scaled(BRIDGE_FILTERS, width)
    inputs = keras.Input(input_shape, name="image")

    x, encoders = inputs, []
    for i, f in enumerate(filters, start=1):
        deep = i >= len(filters) - 1
        x = ResidualBlock(f, dropout=dropout if deep else 0.0, name=f"enc{i}_res")(x)
        x = SqueezeExcite(se_ratio, name=f"enc{i}_se")(x)
        x = layers.MaxPooling2D(2, name=f"enc{i}")(x)
        encoders.append(x)

    context = SqueezeExcite(se_ratio, name="bridge_se")(encoders[-1])
    context = MultiScaleASPP(bridge_filters, rates, name="bridge_aspp")(context)
    pooled_enc3 = layers.MaxPooling2D(2, name="bridge_pool_enc3")(encoders[-2])
    x = layers.Concatenate(name="bridge_concat")([context, encoders[-1], pooled_enc3])
    x = ConvNormAct(bridge_filters, 3, name="bridge")(x)

    decoders = []
    for i, (f, skip) in enumerate(zip(reversed(filters), reversed(encoders), strict=True), start=1):
        stride = skip.shape[1] // x.shape[1]
        up = layers.Conv2DTranspose(f, 3, strides=stride, padding="same", name=f"dec{i}_up")(x)
        skip = ASPP(f, rates, name=f"dec{i}_skip_aspp")(skip)
        skip = AttentionGate(name=f"dec{i}_gate")([skip, x])
        x = WeightedFusion(name=f"dec{i}_fuse")([skip, up])
        x = ResidualBlock(f, name=f"dec{i}")(x)
        decoders.append(x)

    if fused_head:
        outputs = FusionHead(num_classes, size=input_shape[:2], name="head")(decoders)
        return keras.Model(inputs, outputs, name=name)
    x = FusionBlock(size=input_shape[:2], name="fusion")(decoders)
    return keras.Model(inputs, _head(x, num_classes), name=name)


def build_plain_unet(input_shape=INPUT_SHAPE, num_classes: int = MARS.num_classes, width: float = 1.0,
                     name: str = "plain_unet", **_ignored) -> keras.Model:
    """A plain 3-level U-Net (two conv-BN-ReLU per level, max pooling, transpose-conv upsampling, concat
    skips): the baseline the enhanced network is benchmarked against.

    Args:
        input_shape: (height, width, channels) of a tile; height and width divisible by 8.
        num_classes: output classes (background included).
        width: multiplier of the filter counts (32, 64, 128; bottleneck 256).
        name: the model's name.
    """
    filters = [scaled(f, width) for f in PLAIN_FILTERS]
    inputs = keras.Input(input_shape, name="image")
    x, skips = inputs, []
    for i, f in enumerate(filters, start=1):
        x = ConvNormAct(f, 3, name=f"enc{i}_a")(x)
        x = ConvNormAct(f, 3, name=f"enc{i}_b")(x)
        skips.append(x)
        x = layers.MaxPooling2D(2, name=f"enc{i}")(x)
    x = ConvNormAct(2 * filters[-1], 3, name="bottleneck_a")(x)
    x = ConvNormAct(2 * filters[-1], 3, name="bottleneck")(x)
    for i, (f, skip) in enumerate(zip(reversed(filters), reversed(skips), strict=True), start=1):
        x = layers.Conv2DTranspose(f, 2, strides=2, name=f"dec{i}_up")(x)
        x = layers.Concatenate(name=f"dec{i}_concat")([x, skip])
        x = ConvNormAct(f, 3, name=f"dec{i}_a")(x)
        x = ConvNormAct(f, 3, name=f"dec{i}")(x)
    return keras.Model(inputs, _head(x, num_classes), name=name)


def load_model(path, compile: bool = False) -> keras.Model:
    """Load a saved Mars model (`model.keras`), registering the kit's losses and metrics first.

    `compile=False` (the default) is enough for prediction and skips restoring the training loss.
    """
    import an2dl_kit.keras_metrics  # noqa: F401  (registers the metrics a compiled model refers to)
    import an2dl_kit.losses  # noqa: F401  (registers SegmentationLoss)

    return keras.models.load_model(path, compile=compile)


def build_model(architecture: str = "enhanced", **options) -> keras.Model:
    """Build the architecture `registries.ARCHITECTURES` names (an unknown name is a `KitError`)."""
    return ARCHITECTURES.load(architecture)(**options)
