"""The kit's own corrupted copy of the cells test set: eight corruptions at five severities.

Every test image once per corruption (Gaussian blur, JPEG, pixelation, brightness, contrast, saturation,
stain-like and bubble-like artefacts), each copy at one of five severities, cycled so that every severity is
equally represented. Severities follow ImageNet-C (Hendrycks & Dietterich, 2019), with spatial parameters
scaled from 224 px to 96 px. Implemented with Pillow and NumPy, independently of the training augmentation
(albumentations and `augment.cells`): different code, shapes and parameter draws. Written by the same team as
the augmentation all the same, so `bench.cells_robustness` also scores a published suite beside it.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np

SEED = 2024
SEVERITIES = 5


# Each corruption: (image uint8 HxWx3, severity 1..5, rng) -> image uint8.


def _pil(image: np.ndarray):
    from PIL import Image

    return Image.fromarray(image)


def gaussian_blur(image, severity, rng):
    from PIL import ImageFilter

    sigma = (0.5, 0.9, 1.3, 1.7, 2.5)[severity - 1]
    return np.asarray(_pil(image).filter(ImageFilter.GaussianBlur(sigma)))


def jpeg(image, severity, rng):
    quality = (25, 18, 15, 10, 7)[severity - 1]
    buffer = io.BytesIO()
    _pil(image).save(buffer, format="JPEG", quality=quality)
    from PIL import Image

    return np.asarray(Image.open(buffer).convert("RGB"))


def pixelate(image, severity, rng):
    from PIL import Image

    factor = (0.6, 0.5, 0.4, 0.3, 0.25)[severity - 1]
    height, width = image.shape[:2]
    small = _pil(image).resize((int(width * factor), int(height * factor)), Image.Resampling.BOX)
    return np.asarray(small.resize((width, height), Image.Resampling.BOX))


def _hsv_edit(image: np.ndarray, edit: Callable[[np.ndarray], None]) -> np.ndarray:
    hsv = np.asarray(_pil(image).convert("HSV"), np.float32) / 255.0
    edit(hsv)
    from PIL import Image

    return np.asarray(Image.fromarray((np.clip(hsv, 0, 1) * 255).astype(np.uint8), "HSV").convert("RGB"))


def brightness(image, severity, rng):
    """ImageNet-C's V-channel shift, alternately brighter and darker."""
    shift = (0.1, 0.2, 0.3, 0.4, 0.5)[severity - 1] * (1 if rng.random() < 0.5 else -1)

    def edit(hsv):
        hsv[..., 2] += shift

    return _hsv_edit(image, edit)


def contrast(image, severity, rng):
    factor = (0.4, 0.3, 0.2, 0.1, 0.05)[severity - 1]
    pixels = image.astype(np.float32)
    mean = pixels.mean(axis=(0, 1), keepdims=True)
    return np.clip((pixels - mean) * factor + mean, 0, 255).astype(np.uint8)


def saturate(image, severity, rng):
    scale, offset = ((0.3, 0.0), (0.1, 0.0), (2.0, 0.0), (5.0, 0.1), (20.0, 0.2))[severity - 1]

    def edit(hsv):
        hsv[..., 1] = hsv[..., 1] * scale + offset

    return _hsv_edit(image, edit)


def _smooth_noise(shape: tuple[int, int], rng, scale: int) -> np.ndarray:
    """A smooth random field in [0, 1]: coarse uniform noise, bicubically enlarged."""
    from PIL import Image

    coarse = rng.random((max(2, shape[0] // scale), max(2, shape[1] // scale))).astype(np.float32)
    field = np.asarray(Image.fromarray(coarse, "F").resize(shape[::-1], Image.Resampling.BICUBIC))
    return (field - field.min()) / max(float(np.ptp(field)), 1e-6)


def stains(image, severity, rng):
    """Irregular dye splotches: thresholded smooth noise, tinted, over a growing share of the image."""
    coverage = (0.1, 0.18, 0.26, 0.34, 0.42)[severity - 1]
    strength = (0.3, 0.4, 0.5, 0.6, 0.7)[severity - 1]
    field = _smooth_noise(image.shape[:2], rng, scale=12)
    threshold = np.quantile(field, 1 - coverage)
    mask = np.clip((field - threshold) / 0.08, 0, 1)[..., None]
    dye = rng.choice(np.array([[130, 30, 120], [200, 60, 90], [90, 60, 30], [40, 60, 150]], np.float32))
    pixels = image.astype(np.float32)
    tinted = pixels * (dye / 255.0)
    return np.clip(pixels + strength * mask * (tinted - pixels), 0, 255).astype(np.uint8)


def bubbles(image, severity, rng):
    """Air bubbles: dark outlined circles with a pale, slightly transparent fill and a specular dot."""
    from PIL import Image, ImageDraw

    count = severity
    height, width = image.shape[:2]
    base = _pil(image).convert("RGBA")
    overlay = Image.new("RGBA", base.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    for _ in range(count):
        radius = rng.uniform(5, 10 + 4 * severity)
        cy, cx = rng.uniform(0, height), rng.uniform(0, width)
        box = (cx - radius, cy - radius, cx + radius, cy + radius)
        draw.ellipse(box, fill=(255, 255, 255, int(rng.uniform(30, 80))),
                     outline=(40, 40, 50, int(rng.uniform(140, 220))), width=int(rng.integers(1, 4)))
        spot = radius * 0.2
        draw.ellipse((cx - radius * 0.5 - spot, cy - radius * 0.5 - spot, cx - radius * 0.5 + spot,
                      cy - radius * 0.5 + spot), fill=(255, 255, 255, 160))
    return np.asarray(Image.alpha_composite(base, overlay).convert("RGB"))


CORRUPTIONS: dict[str, Callable] = {
    "gaussian_blur": gaussian_blur,
    "jpeg": jpeg,
    "pixelate": pixelate,
    "brightness": brightness,
    "contrast": contrast,
    "saturate": saturate,
    "stains": stains,
    "bubbles": bubbles,
}


def corrupted_copy(images: np.ndarray, labels: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """Every image once per corruption; severity cycles 1..5 over the images (offset per corruption)."""
    out_images, out_labels, kinds, severities = [], [], [], []
    for k, corrupt in enumerate(CORRUPTIONS.values()):
        for i, image in enumerate(images):
            severity = (i + k) % SEVERITIES + 1
            rng = np.random.default_rng([seed, k, i])
            out_images.append(corrupt(image, severity, rng))
            out_labels.append(labels[i])
            kinds.append(k)
            severities.append(severity)
    return {"images": np.stack(out_images).astype(np.uint8), "labels": np.asarray(out_labels, np.int64),
            "corruption": np.asarray(kinds, np.int64), "severity": np.asarray(severities, np.int64)}
