"""AugMix (Hendrycks et al., ICLR 2020): random chains of simple operations, mixed, then blended with the image.

Each AugMix view of an image mixes `WIDTH` chains of 1 to 3 operations drawn from `OPERATIONS` (weights from a
Dirichlet(1) draw) and blends that mixture with the image itself (weight from Beta(1, 1)). The operations are
the paper's: autocontrast, equalise, posterise, rotate, solarise, shear and translate, at its severity 3 of
10. The paper left brightness, contrast, colour and sharpness out because they overlap its test corruptions
(ImageNet-C); they overlap MedMNIST-C's brightness, contrast and saturation as well, so they stay out here.
One difference: geometric operations reflect the border (as the kit's other geometry does) instead of
filling it black, which would paint corners no slide has.

The augmentation alone is the `augmix` pipeline of `registries.CELLS_AUGMENTATIONS`; in training, the kit feeds
each image with two AugMix views of it, and the loss adds their Jensen-Shannon consistency term
(`augment.cells.CellsAugment`, `losses.AugMixConsistency`).

OpenCV look-up tables and warps on each 96 px image: about 0.8 ms of CPU per view, 2 ms per training image
with its two views and the batched geometry (against 0.4 ms for `robust`), on this project's two-core machine.
"""

from __future__ import annotations

from typing import Any

import albumentations as A
import cv2
import numpy as np

SEVERITY = 3.0
WIDTH = 3
DEPTH = (1, 3)
ALPHA = 1.0
MAX_ROTATION, MAX_SHEAR, MAX_TRANSLATE = 30.0, 0.3, 1 / 3  # at level 10; the last a fraction of the side


def _level(rng: np.random.Generator) -> float:
    """An operation's strength in (0.1, SEVERITY) of 10, as the paper draws it."""
    return float(rng.uniform(0.1, SEVERITY))


def _lut(image: np.ndarray, tables: np.ndarray) -> np.ndarray:
    """Apply one 256-entry table per channel."""
    return np.stack([cv2.LUT(image[..., c], tables[c]) for c in range(image.shape[-1])], axis=-1)


def autocontrast(image, rng):
    low, high = image.min(axis=(0, 1)).astype(np.float32), image.max(axis=(0, 1)).astype(np.float32)
    scale = 255.0 / np.maximum(high - low, 1.0)
    values = np.arange(256, dtype=np.float32)
    tables = np.clip((values[None] - low[:, None]) * scale[:, None], 0, 255)
    return _lut(image, np.where((high > low)[:, None], tables, values[None]).astype(np.uint8))


def equalize(image, rng):
    return np.stack([cv2.equalizeHist(np.ascontiguousarray(image[..., c])) for c in range(image.shape[-1])], -1)


def posterize(image, rng):
    bits = 4 - int(_level(rng) * 4 / 10)
    return image & np.uint8((0xFF << (8 - bits)) & 0xFF)


def solarize(image, rng):
    threshold = 256 - int(_level(rng) * 256 / 10)
    return np.where(image >= threshold, 255 - image, image).astype(np.uint8)


def _warp(image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    height, width = image.shape[:2]
    return cv2.warpAffine(image, matrix, (width, height), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REFLECT_101).reshape(image.shape)


def _signed(rng: np.random.Generator, magnitude: float) -> float:
    return magnitude if rng.random() < 0.5 else -magnitude


def rotate(image, rng):
    height, width = image.shape[:2]
    angle = _signed(rng, _level(rng) * MAX_ROTATION / 10)
    return _warp(image, cv2.getRotationMatrix2D(((width - 1) / 2, (height - 1) / 2), angle, 1.0))


def _shear(axis: int):
    def shear(image, rng):
        amount = _signed(rng, _level(rng) * MAX_SHEAR / 10)
        matrix = np.float32([[1, amount, 0], [0, 1, 0]]) if axis == 1 else np.float32([[1, 0, 0], [amount, 1, 0]])
        return _warp(image, matrix)
    return shear


def _translate(axis: int):
    def translate(image, rng):
        pixels = _signed(rng, _level(rng) * MAX_TRANSLATE * image.shape[1 - axis] / 10)
        return _warp(image, np.float32([[1, 0, pixels if axis == 1 else 0], [0, 1, pixels if axis == 0 else 0]]))
    return translate


OPERATIONS = (autocontrast, equalize, posterize, rotate, solarize, _shear(1), _shear(0), _translate(1),
              _translate(0))


def augmix(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One AugMix view of `image` (H, W, C) uint8 (module docstring), uint8."""
    weights = rng.dirichlet([ALPHA] * WIDTH).astype(np.float32)
    mixed = np.zeros(image.shape, np.float32)
    for weight in weights:
        chain = image
        for _ in range(int(rng.integers(DEPTH[0], DEPTH[1] + 1))):
            chain = OPERATIONS[int(rng.integers(len(OPERATIONS)))](chain, rng)
        mixed += weight * chain
    blend = np.float32(rng.beta(ALPHA, ALPHA))
    return np.clip(np.rint(blend * image + (1 - blend) * mixed), 0, 255).astype(np.uint8)


class AugMix(A.ImageOnlyTransform):
    """One AugMix view per image (module docstring), seeded by the pipeline's generator.

    Args:
        p: probability of applying the transform.
    """

    def __init__(self, p: float = 1.0):
        super().__init__(p=p)

    def get_params_dependent_on_data(self, params: dict[str, Any], data: dict[str, Any]) -> dict[str, Any]:
        return {"seed": int(self.random_generator.integers(2**31 - 1))}

    def apply(self, img: np.ndarray, seed: int = 0, **params: Any) -> np.ndarray:
        return augmix(img, np.random.default_rng(seed))

    def get_transform_init_args_names(self) -> tuple[str, ...]:
        return ()


def augmix_pipeline() -> A.Compose:
    """The `augmix` augmentation: one AugMix view, between the kit's batched geometry."""
    return A.Compose([AugMix(p=1.0)], strict=True)
