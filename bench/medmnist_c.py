"""The published corrupted copy of the cells test set: MedMNIST-C's eleven BloodMNIST corruptions.

The corruptions and their five severities are the `medmnistc` package's own (`an2dl_kit.augment.medmnist_c`),
applied as the published test sets are made: at 224 px, each test image enlarged, corrupted and reduced back to
96 px. Written by other hands than the kit's training augmentation and its own copy (`bench.cells_corruptions`),
it is the benchmark the kit did not design.

Design: every test image once per corruption, its severity cycling 1..5 over the images (offset per
corruption), as the kit's copy does, rather than every image at every severity as the package's
`DatasetManager` does. Chosen by its cost on two cores: the copy is made once and cached (5,280 images took
100 s on the busy two-core machine; 26,400 would take five times that), but every trained model predicts it
with its eight TTA views once per BatchNorm adaptation scored: 42,240 forward passes instead of 211,200 per
model and mode, about 40 s instead of 3.5 minutes at the local model's 1,000 images per second on two busy
cores. Every corruption is still scored on all 480 test images (96 per corruption and severity, 1,056 per
severity, across corruptions).

Deterministic: image i under corruption k is seeded with (SEED, k, i), whatever the order or machine; the
copy is cached in the benchmark's output folder with the package version and the test set it was made from.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

SEED = 2024
CACHE = "test_medmnist_c.npz"


def corruption_names() -> tuple[str, ...]:
    """The package's BloodMNIST corruptions, in its order (a `KitError` without the package)."""
    from an2dl_kit.augment.medmnist_c import blood_corruptions

    return tuple(blood_corruptions())


def corrupted_copy(images: np.ndarray, labels: np.ndarray, seed: int = SEED) -> dict[str, np.ndarray]:
    """Every image once per corruption; severity cycles 1..5 over the images (offset per corruption)."""
    from an2dl_kit.augment.medmnist_c import SEVERITIES, corrupt

    out_images, out_labels, kinds, severities = [], [], [], []
    for k, name in enumerate(corruption_names()):
        for i, image in enumerate(images):
            severity = (i + k) % SEVERITIES + 1
            image_seed = int(np.random.SeedSequence([seed, k, i]).generate_state(1)[0])
            out_images.append(corrupt(image, name, severity, image_seed))
            out_labels.append(labels[i])
            kinds.append(k)
            severities.append(severity)
    return {"images": np.stack(out_images).astype(np.uint8), "labels": np.asarray(out_labels, np.int64),
            "corruption": np.asarray(kinds, np.int64), "severity": np.asarray(severities, np.int64)}


def package_version() -> str:
    import importlib.metadata

    return importlib.metadata.version("medmnistc")


def load_or_make(images: np.ndarray, labels: np.ndarray, out: Path) -> dict[str, np.ndarray] | None:
    """The copy of the clean test images, cached in `out`; None, with one printed line, without the package."""
    from an2dl_kit.augment.medmnist_c import missing

    problem = missing()
    if problem:
        print(f"cells_robustness: MedMNIST-C copy skipped: {problem}")
        return None
    from an2dl_kit.inference.probabilities import fingerprint

    cache, made_from = out / CACHE, {"version": package_version(), "source": fingerprint(images)}
    if cache.exists():
        with np.load(cache) as data:
            if all(str(data[key]) == value for key, value in made_from.items()):
                return {key: data[key] for key in ("images", "labels", "corruption", "severity")}
    start = time.monotonic()
    copy = corrupted_copy(images, labels)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(cache, **{key: np.array(value) for key, value in made_from.items()}, **copy)
    print(f"[bench] MedMNIST-C copy: {len(copy['images'])} images in {time.monotonic() - start:.0f} s -> {cache}",
          file=sys.stderr)
    return copy
