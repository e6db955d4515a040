"""Blood-cell classifiers: the backbones `registries.BACKBONES` names, under the reference solution's head.

Every model takes raw 0-255 RGB images of shape (96, 96, 3) and returns 8 class probabilities in float32.
Preprocessing lives inside the model, so a saved model needs no companion code (the Codabench `model.py`
only loads and calls it): ConvNeXt and EfficientNetV2 carry their own; MobileNetV2 and InceptionV3 get a
`Rescaling` to [-1, 1]; the small CPU network standardises each image.

Weights are `"imagenet"` (downloaded by Keras; on Kaggle the kernel needs internet), `"none"` (random
init), or the path of a local weights file for the backbone without its top (a Kaggle dataset or model
attachment; Keras reads `.h5` and `.weights.h5`). A request that cannot be met raises `KitError`, unless
the caller allows falling back to random initialisation.

Only built-in Keras layers are used, so `keras.saving.load_model` needs nothing from this kit, except with a
colour normalisation (`models.colour`, registered when that module is imported; the Codabench `model.py`
carries its source).

EfficientNet choice: V2-S rather than B0. Its fused-MBConv early stages train several times faster than
B0's depthwise blocks on GPUs, it is markedly stronger on ImageNet (83.9% vs 77.1% top-1) and in transfer,
it was the backbone of the course's 0.96 EfficientNetV2 ensemble, and it carries its own preprocessing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import keras
from keras import layers

from an2dl_kit.errors import KitError
from an2dl_kit.registries import BACKBONES, COLOUR_NORMALIZATIONS
from an2dl_kit.registry import resolve_reference
from an2dl_kit.task import CELLS

HEAD_UNITS = (512, 256, 128, 64)
HEAD_DROPOUT_IN = 0.2
HEAD_DROPOUT_OUT = 0.25
BACKBONE_NAME = "backbone"
DEFAULT_BACKBONE = "convnext_base"

# The small network: (channels, 3x3 convolutions) per stage; each stage after the first halves the
# resolution. Two convolutions only where the maps are mid-sized: the first stage is the costliest per
# convolution and the last holds most weights.
SMALL_STEM = 24
SMALL_STAGES = ((32, 1), (64, 2), (128, 2), (256, 1))


def _application(factory: Callable[..., keras.Model], scale: float | None, input_shape, weights, **kwargs):
    """A `keras.applications` backbone, optionally prefixed by a rescaling of 0-255 to [-1, 1]."""
    base = factory(include_top=False, weights=weights, input_shape=input_shape, **kwargs)
    if scale is None:
        return keras.Model(base.input, base.output, name=BACKBONE_NAME)
    inputs = keras.Input(input_shape)
    x = layers.Rescaling(scale, offset=-1.0, name="to_unit_range")(inputs)
    return keras.Model(inputs, base(x), name=BACKBONE_NAME)


# The builders `registries.BACKBONES` names: (input_shape, weights) -> backbone model on 0-255 images.


def convnext_base(input_shape, weights):
    return _application(keras.applications.ConvNeXtBase, None, input_shape, weights, include_preprocessing=True)


def convnext_large(input_shape, weights):
    return _application(keras.applications.ConvNeXtLarge, None, input_shape, weights, include_preprocessing=True)


def efficientnet_v2s(input_shape, weights):
    return _application(keras.applications.EfficientNetV2S, None, input_shape, weights,
                        include_preprocessing=True)


def mobilenet_v2(input_shape, weights):
    return _application(keras.applications.MobileNetV2, 1 / 127.5, input_shape, weights)


def inception_v3(input_shape, weights):
    return _application(keras.applications.InceptionV3, 1 / 127.5, input_shape, weights)


def _conv_bn(x, filters: int, strides: int = 1, name: str = ""):
    # A from-scratch run lasts a few hundred steps: BatchNorm's moving statistics must follow the weights
    # faster than Keras' default momentum (0.99, a ~100-step memory) allows; the registry entry says how fast.
    momentum = BACKBONES["small_cnn"].bn_momentum
    x = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False, name=f"{name}_conv")(x)
    x = layers.BatchNormalization(momentum=momentum, name=f"{name}_bn")(x)
    return layers.ReLU(name=f"{name}_relu")(x)


def small_cnn(input_shape, weights):
    """A VGG-style network sized for two CPU cores: a strided stem, then one or two 3x3 convolutions per
    stage (`SMALL_STAGES`).

    Its input rescaling is a per-image, per-channel standardisation (a GroupNormalization with one group
    per channel, on the 0-255 values so that its epsilon stays negligible even for a nearly flat,
    low-contrast image). It removes global brightness, contrast and colour-cast shifts before the first
    convolution: those are among the corruptions of the shifted test set, and a from-scratch network on a
    few thousand images does not learn that invariance from augmentation alone within a CPU budget.
    """
    inputs = keras.Input(input_shape)
    x = layers.GroupNormalization(groups=input_shape[-1], epsilon=1e-3, name="image_standardise")(inputs)
    x = _conv_bn(x, SMALL_STEM, strides=2, name="stem")
    for stage, (filters, convs) in enumerate(SMALL_STAGES):
        if stage:
            x = layers.MaxPooling2D(name=f"stage{stage}_pool")(x)
        for conv in range(convs):
            x = _conv_bn(x, filters, name=f"stage{stage}_{conv}")
    model = keras.Model(inputs, x, name=BACKBONE_NAME)
    if weights is not None:
        model.load_weights(weights)
    return model


def resolve_weights(name: str, weights: str | Path | None) -> str | None:
    """Turn a weights request into what the builders take: None, "imagenet" or an existing file path."""
    if weights is None or str(weights).lower() == "none":
        return None
    if str(weights).lower() == "imagenet":
        if not BACKBONES[name].imagenet:
            raise KitError(f"backbone {name} weights imagenet: no ImageNet weights exist for this backbone")
        return "imagenet"
    path = Path(weights).expanduser()
    if not path.is_file():
        raise KitError(f"{path}: weights file not found (expected imagenet, none or a .h5/.weights.h5 file)")
    if not path.name.endswith(".h5"):
        raise KitError(f"{path}: unsupported weights file; Keras loads .h5 and .weights.h5 files")
    return str(path)


def build_backbone(name: str, weights: str | Path | None = "imagenet", input_shape=CELLS.image_shape,
                   allow_random_fallback: bool = False) -> tuple[keras.Model, str]:
    """Build backbone `name` and report the weights it actually got ("imagenet", "none" or a path).

    A request that fails (no internet for the ImageNet download, a file for another architecture) raises
    `KitError`, or with `allow_random_fallback` logs the reason and returns a randomly initialised model.
    """
    entry = BACKBONES[name]
    build = resolve_reference(entry.build)
    if min(input_shape[:2]) < entry.min_size:
        raise KitError(f"backbone {name}: input {input_shape[:2]} is below its minimum side {entry.min_size}")
    try:
        resolved = resolve_weights(name, weights)
        return build(tuple(input_shape), resolved), resolved or "none"
    except Exception as error:  # network, HDF5 and shape errors all mean "these weights cannot be had"
        if isinstance(error, KitError):
            message = str(error)
        else:
            problem = (str(error).strip().splitlines() or [type(error).__name__])[0]
            message = f"backbone {name} weights {weights}: {problem}"
        if not allow_random_fallback:
            raise KitError(message) from error
    from an2dl_kit.runtime import log

    log(f"{message}; falling back to random init (the profile allows it)")
    return build(tuple(input_shape), None), "none"


def classification_head(features, units=HEAD_UNITS, num_classes: int = CELLS.num_classes,
                        bn_momentum: float = 0.99):
    """GAP -> BatchNorm -> Dropout 0.2 -> Dense stack (ReLU) -> Dropout 0.25 -> softmax in float32.

    The softmax is computed in float32 whatever the global policy, so mixed precision cannot saturate it.
    """
    x = layers.GlobalAveragePooling2D(name="head_pool")(features)
    x = layers.BatchNormalization(momentum=bn_momentum, name="head_bn")(x)
    x = layers.Dropout(HEAD_DROPOUT_IN, name="head_dropout_in")(x)
    for width in units:
        x = layers.Dense(width, activation="relu", name=f"head_dense_{width}")(x)
    x = layers.Dropout(HEAD_DROPOUT_OUT, name="head_dropout_out")(x)
    return layers.Dense(num_classes, activation="softmax", dtype="float32", name="probabilities")(x)


def build_classifier(backbone: str = DEFAULT_BACKBONE, weights: str | Path | None = "imagenet", *,
                     input_shape=CELLS.image_shape, image_size: int | None = None, head_units=HEAD_UNITS,
                     allow_random_fallback: bool = False, colour_norm: str = "none") -> tuple[keras.Model, str]:
    """The full classifier: 0-255 images -> [colour normalisation] -> [resize] -> backbone -> head. Returns
    (model, weights used).

    Args:
        backbone: a name in `registries.BACKBONES`.
        weights: "imagenet", "none"/None or a local weights file.
        input_shape: the shape of the images the model is fed (the competition's 96x96x3).
        image_size: resize inside the model to this side first (None keeps the input size); larger
            inputs help big pretrained backbones, smaller ones speed up CPU training.
        head_units: widths of the head's Dense stack.
        allow_random_fallback: build with random weights when the requested ones cannot be had.
        colour_norm: "none" or a `models.colour.ColourNormalization` method, applied at full resolution.
    """
    inputs = keras.Input(input_shape, name="images")
    x = inputs
    if COLOUR_NORMALIZATIONS.check(colour_norm) != "none":
        from an2dl_kit.models.colour import ColourNormalization

        x = ColourNormalization(colour_norm, name="colour_norm")(x)
    side = input_shape[0]
    if image_size and image_size != side:
        # Area averaging when shrinking (no aliasing), bilinear when enlarging for a pretrained backbone.
        interpolation = "area" if image_size < side else "bilinear"
        x = layers.Resizing(image_size, image_size, interpolation=interpolation, name="resize")(x)
        side = image_size
    base, used = build_backbone(backbone, weights, (side, side, input_shape[-1]), allow_random_fallback)
    outputs = classification_head(base(x), head_units, bn_momentum=BACKBONES[backbone].bn_momentum)
    return keras.Model(inputs, outputs, name=f"cells_{backbone}"), used


def get_backbone(model: keras.Model) -> keras.Model:
    return model.get_layer(BACKBONE_NAME)


def _all_layers(layer) -> list:
    found = [layer]
    for child in getattr(layer, "layers", []):
        found += _all_layers(child)
    return found


def freeze_backbone(model: keras.Model) -> None:
    """Phase 1 of transfer learning: the backbone is fixed (and its BatchNorm runs in inference mode).

    Every layer is set explicitly, parents before children: Keras does not carry a `trainable` change
    into a functional model nested inside another (MobileNet and InceptionV3 behind their rescaling)."""
    backbone = get_backbone(model)
    for layer in _all_layers(model):
        layer.trainable = True
    for layer in _all_layers(backbone):
        layer.trainable = False


# Normalisation layers of every kind the backbones use: BatchNorm (MobileNet, InceptionV3, EfficientNet),
# LayerNorm (ConvNeXt), GroupNorm (the small network's input standardisation).
NORMALIZATION_LAYERS = (layers.BatchNormalization, layers.LayerNormalization, layers.GroupNormalization)
# Parts that `unfreeze_except_normalization` can keep frozen as well: ConvNeXt's per-channel layer-scale
# vectors (a Keras-internal `LayerScale` class, matched by name) and the head's BatchNorm.
EXTRA_FROZEN = ("layer_scale", "head_bn")


def _is_extra_frozen(layer, extra: tuple[str, ...]) -> bool:
    return (("layer_scale" in extra and type(layer).__name__ == "LayerScale")
            or ("head_bn" in extra and layer.name == "head_bn"))


def unfreeze_except_normalization(model: keras.Model, extra: tuple[str, ...] = ()) -> None:
    """Phase 2: everything trains except the backbone's normalisation layers, whatever their kind, whose
    ImageNet statistics and affine parameters small, augmented fine-tuning batches would wreck. ConvNeXt has
    no BatchNorm: freezing only BatchNorm would freeze nothing there.

    Args:
        extra: parts of `EXTRA_FROZEN` kept frozen too; the reference notebook kept ConvNeXt's layer scales
            and the head's BatchNorm frozen (`finetune_freeze=reference`).
    """
    unknown = set(extra) - set(EXTRA_FROZEN)
    if unknown:
        raise KitError(f"unfreeze_except_normalization: unknown parts {sorted(unknown)}; choose from {EXTRA_FROZEN}")
    for layer in _all_layers(model):
        layer.trainable = True
    for layer in _all_layers(get_backbone(model)):
        if isinstance(layer, NORMALIZATION_LAYERS) or _is_extra_frozen(layer, extra):
            layer.trainable = False
    for layer in model.layers:
        if _is_extra_frozen(layer, extra):
            layer.trainable = False


def count_params(model: keras.Model) -> int:
    return int(model.count_params())
