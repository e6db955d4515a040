"""Every name -> builder table of the kit, in one TensorFlow-free place.

The names are known without importing TensorFlow, Keras or albumentations (the run configuration checks them
when a profile is resolved, also at bundle and push time); the builders are `"module:attribute"` references
imported on first `Registry.load`. To add a backbone, a loss or an augmentation pipeline, write it beside its
kin (`models/`, `losses.py`, `augment/`) and give it one line here. Profiles are registries too
(`tasks/cells_config.py`, `tasks/mars_config.py`); TTA view sets live in `inference/tta.py`, which is NumPy only.
"""

from __future__ import annotations

from dataclasses import dataclass

from an2dl_kit.registry import Registry


@dataclass(frozen=True)
class Backbone:
    """A cells backbone.

    Args:
        build: reference to `(input_shape, weights) -> keras.Model`, mapping 0-255 images to feature maps;
            `weights` is None, "imagenet" or a file path.
        min_size: the smallest input side the architecture accepts.
        imagenet: whether Keras publishes ImageNet weights for it.
        bn_momentum: momentum of the head's BatchNorm.
    """

    build: str
    min_size: int
    imagenet: bool = True
    bn_momentum: float = 0.99


BACKBONES: Registry[Backbone] = Registry("backbone", {
    "convnext_base": Backbone("an2dl_kit.models.cells:convnext_base", 32),
    "convnext_large": Backbone("an2dl_kit.models.cells:convnext_large", 32),
    "efficientnet": Backbone("an2dl_kit.models.cells:efficientnet_v2s", 32),
    "mobilenet": Backbone("an2dl_kit.models.cells:mobilenet_v2", 32),
    "inception_v3": Backbone("an2dl_kit.models.cells:inception_v3", 75),
    # Short from-scratch runs: BatchNorm statistics must follow the weights faster than the default allows.
    "small_cnn": Backbone("an2dl_kit.models.cells:small_cnn", 32, imagenet=False, bn_momentum=0.9),
})

# name -> builder(input_shape, num_classes, width, **options)
ARCHITECTURES: Registry[str] = Registry("architecture", {
    "enhanced": "an2dl_kit.models.mars:build_enhanced_unet",
    "plain": "an2dl_kit.models.mars:build_plain_unet",
})

# name -> fn(y_true, y_pred, class_weights, ignore_background) -> scalar; a run's loss joins names with "+".
LOSSES: Registry[str] = Registry("loss", {
    "cce": "an2dl_kit.losses:weighted_cce",
    "dice": "an2dl_kit.losses:dice",
    "tversky": "an2dl_kit.losses:tversky",
    "focal": "an2dl_kit.losses:categorical_focal",
    "lovasz": "an2dl_kit.losses:lovasz",
})

# name -> factory() -> albumentations.Compose (None: no augmentation)
CELLS_AUGMENTATIONS: Registry[str | None] = Registry("cells augmentation", {
    "none": None,
    "randaugment1": "an2dl_kit.augment.cells:randaugment1_pipeline",
    "randaugment2": "an2dl_kit.augment.cells:randaugment2_pipeline",
    "reference": "an2dl_kit.augment.cells:reference_pipeline",
    # About a third of the images colour-shifted and a third degraded: what a from-scratch CPU model absorbs in minutes.
    "robust": "an2dl_kit.augment.cells:robust_pipeline",
    # Most images shifted and degraded: for pretrained backbones with hours of GPU training.
    "robust_strong": "an2dl_kit.augment.cells:robust_strong_pipeline",
    # AugMix views; in training each image comes with two of them and the loss adds their consistency term.
    "augmix": "an2dl_kit.augment.augmix:augmix_pipeline",
    # MedMNIST-C's own training augmentation (the medmnistc package, not on Kaggle's image: make medmnistc).
    "medmnistc": "an2dl_kit.augment.medmnist_c:medmnistc_pipeline",
})
# Per-image colour normalisation at the model's input (`models.colour.ColourNormalization`; "none": no layer).
COLOUR_NORMALIZATIONS: Registry[None] = Registry("colour normalisation",
                                                 dict.fromkeys(("none", "grey_world", "opponent")))
MARS_AUGMENTATIONS: Registry[str | None] = Registry("mars augmentation", {
    "none": None,
    "light": "an2dl_kit.augment.mars:light_pipeline",
    "default": "an2dl_kit.augment.mars:default_pipeline",
    "scale": "an2dl_kit.augment.mars:scale_pipeline",
})


def loss_terms(spec: str) -> tuple[str, ...]:
    """Split a loss spec such as "cce+dice" into registered terms; an unknown term is a `KitError`."""
    terms = tuple(t.strip() for t in str(spec).split("+") if t.strip())
    return tuple(LOSSES.check(t) for t in terms) if terms else (LOSSES.check(str(spec)),)
