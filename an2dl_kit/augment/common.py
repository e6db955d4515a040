"""Run an albumentations pipeline over a batch, reproducibly and safely from several threads."""

from __future__ import annotations

import threading
from collections.abc import Callable

import numpy as np

SEED_RANGE = 2**31 - 1


class SeededCompose:
    """A thread-safe, per-batch-seeded wrapper around an albumentations pipeline.

    Albumentations pipelines keep their random state inside the object, so sharing one between loader
    threads would make the augmentations depend on thread timing. Each thread gets its own copy from
    `factory`, reseeded from the batch's generator before every batch.

    Args:
        factory: builds the pipeline (an `A.Compose`); called once per thread.
    """

    def __init__(self, factory: Callable[[], object]):
        self.factory = factory
        self._local = threading.local()

    def _pipeline(self, rng: np.random.Generator):
        pipeline = getattr(self._local, "pipeline", None)
        if pipeline is None:
            pipeline = self._local.pipeline = self.factory()
        pipeline.set_random_seed(int(rng.integers(SEED_RANGE)))
        return pipeline

    def images(self, images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Augment each image of a batch (N, H, W[, C])."""
        pipeline = self._pipeline(rng)
        return np.stack([pipeline(image=image)["image"] for image in images])

    def pairs(self, images: np.ndarray, masks: np.ndarray,
              rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Augment images and their masks together (the same geometry for both)."""
        pipeline = self._pipeline(rng)
        out = [pipeline(image=image, mask=mask) for image, mask in zip(images, masks, strict=True)]
        return np.stack([o["image"] for o in out]), np.stack([o["mask"] for o in out])
