"""Augmentation throughput per core: each task pipeline against a naive per-sample Python loop.

Every pipeline is timed as training calls it: the task's batch transform on batches of the `kaggle`
profile's size, through `pipeline.Batches.__getitem__` (indexing, per-batch seeding, the albumentations
ops, batch mixing and one-hot labels included), on one thread with OpenCV and TensorFlow held to one
thread, in CPU time (so other jobs on a shared machine do not deflate it): images per second per core.
Inputs are synthetic images from `data.synth` (content matters to some ops, e.g. JPEG).

The naive baseline is the loop a notebook writes first: a Python loop calling Keras preprocessing layers
(RandomFlip, RandomRotation, RandomZoom, RandomContrast) eagerly on one image at a time. For a pipeline
below its target the note names the op that dominates its expected cost: every leaf op is timed alone and
weighted by how often the pipeline applies it (OneOf/SomeOf selection and probabilities).

Run alone: `python -m bench.hardware_augment`.
"""

from __future__ import annotations

import copy

import numpy as np

from an2dl_kit.task import CELLS, MARS
from bench.common import Row, fmt, main, one_core, progress, rate, target_note

PART = "augment"
CELLS_TARGET = 2000.0
MARS_TARGET = 3000.0
POOL = 256  # distinct images the batches cycle through
NAIVE_IMAGES = 24
OP_SAMPLES = 48  # images each leaf op is timed on


# --- inputs ---------------------------------------------------------------------------------------------


def cells_pool() -> tuple[np.ndarray, np.ndarray]:
    from an2dl_kit.data.synth import synth_cells

    data = synth_cells(POOL, seed=0)
    return data.images, data.labels


def mars_pool() -> tuple[np.ndarray, np.ndarray]:
    """Network inputs (N, 64, 128, 1) in [0, 1] and masks, as tasks/mars.py feeds its Batches."""
    from an2dl_kit.data.synth import synth_mars
    from an2dl_kit.tasks.mars import HOOKS

    data, _ = synth_mars(POOL, 1, seed=0)
    return HOOKS.to_inputs(data.images), data.masks


# --- timing -----------------------------------------------------------------------------------------------


def batches_rate(batches) -> float:
    """Images per CPU-second of a `Batches` building its batches (its transform included), one thread."""
    state = {"index": 0}

    def one_batch() -> int:
        index = state["index"] % batches.num_batches
        state["index"] += 1
        out = batches[index]
        return len(out[0])

    return rate(one_batch)


def naive_rate(images: np.ndarray, with_mask: bool = False) -> float:
    """A Python loop of eager Keras preprocessing layers, one image at a time."""
    import keras
    from keras import layers

    augment = keras.Sequential([layers.RandomFlip(), layers.RandomRotation(0.1), layers.RandomZoom(0.1),
                                layers.RandomContrast(0.2)])
    samples = images[:NAIVE_IMAGES].astype("float32")
    if samples.ndim == 3:  # grey tiles: a channel axis, and the mask rides along as a second channel
        samples = samples[..., None]
        if with_mask:
            samples = np.concatenate([samples, np.zeros_like(samples)], axis=-1)

    def loop() -> int:
        for image in samples:
            augment(image[None], training=True)
        return len(samples)

    return rate(loop)


# --- which op dominates -----------------------------------------------------------------------------------


def leaf_weights(transform, weight: float = 1.0, forced: bool = False) -> list[tuple[object, float]]:
    """(leaf op, expected applications per image) for an albumentations pipeline.

    Compose applies each child with its own p; OneOf picks one child in proportion to the children's p and
    forces it; SomeOf picks n children uniformly and applies each with its own p.
    """
    import albumentations as A
    from albumentations.core.composition import BaseCompose

    here = weight * (1.0 if forced else transform.p)
    if isinstance(transform, A.OneOf):
        ps = np.array([child.p for child in transform.transforms], float)
        return [pair for child, share in zip(transform.transforms, ps / ps.sum(), strict=True)
                for pair in leaf_weights(child, here * share, forced=True)]
    if isinstance(transform, A.SomeOf):
        pick = min(transform.n, len(transform.transforms)) / len(transform.transforms)
        return [pair for child in transform.transforms for pair in leaf_weights(child, here * pick)]
    if isinstance(transform, BaseCompose):
        return [pair for child in transform.transforms for pair in leaf_weights(child, here)]
    return [(transform, here)]


def op_seconds(op, images: np.ndarray, masks: np.ndarray | None = None) -> float:
    """Seconds per image of one op applied with p=1."""
    import albumentations as A

    op = copy.deepcopy(op)
    op.p = 1.0
    pipeline = A.Compose([op])
    pipeline.set_random_seed(0)
    samples = images[:OP_SAMPLES]

    def loop() -> int:
        for i, image in enumerate(samples):
            if masks is None:
                pipeline(image=image)
            else:
                pipeline(image=image, mask=masks[i])
        return len(samples)

    return 1.0 / rate(loop, min_seconds=0.2, warmup=0)


def dominant_op(factory, images: np.ndarray, masks: np.ndarray | None = None) -> str:
    """'Stains 41% (640/s alone)': the op with the largest share of the pipeline's expected time."""
    costs = {}
    for op, weight in leaf_weights(factory()):
        name = type(op).__name__
        seconds = op_seconds(op, images, masks)
        total, _ = costs.get(name, (0.0, seconds))
        costs[name] = (total + weight * seconds, seconds)
    name, (cost, seconds) = max(costs.items(), key=lambda kv: kv[1][0])
    share = cost / sum(c for c, _ in costs.values())
    return f"dominant op {name}: {share:.0%} of expected time ({fmt(1 / seconds)} img/s alone)"


# --- the rows ---------------------------------------------------------------------------------------------


def cells_rows() -> list[Row]:
    from an2dl_kit.augment.cells import CellsAugment
    from an2dl_kit.pipeline import Batches
    from an2dl_kit.registries import CELLS_AUGMENTATIONS
    from an2dl_kit.tasks import resolve_config

    images, labels = cells_pool()
    kaggle = resolve_config(CELLS.name, "kaggle")
    augment = kaggle.augmentation
    progress("augment: cells naive loop")
    naive = naive_rate(images)
    out = [Row(PART, "cells naive loop (Keras layers, per sample)", fmt(naive), "img/s/core",
               "flip+rotation+zoom+contrast, eager, one image per call")]
    cases = [
        ("cells 1-op (randaugment1)", "randaugment1", 0.0, 0.0),
        ("cells 2-op (randaugment2)", "randaugment2", 0.0, 0.0),
        ("cells robustness (robust)", "robust", 0.0, 0.0),
        (f"cells kaggle transform ({augment.augment} + CutMix/MixUp)", augment.augment, augment.cutmix_p,
         augment.mixup_p),
    ]
    for item, pipeline, cutmix_p, mixup_p in cases:
        progress(f"augment: {item}")
        transform = CellsAugment(pipeline, cutmix_p=cutmix_p, mixup_p=mixup_p)
        value = batches_rate(Batches(images, labels, batch_size=kaggle.training.batch_size, transform=transform,
                                     seed=0, workers=1))
        note = f"{value / naive:.0f}x naive; {target_note(value, CELLS_TARGET)}"
        if value < CELLS_TARGET:  # the per-image pipeline; CutMix/MixUp act once per batch
            note += "; " + dominant_op(CELLS_AUGMENTATIONS.load(pipeline), images)
        out.append(Row(PART, item, fmt(value), "img/s/core", note))
    return out


def mars_rows() -> list[Row]:
    from an2dl_kit.registries import MARS_AUGMENTATIONS
    from an2dl_kit.tasks import mars, resolve_config

    images, masks = mars_pool()
    kaggle = resolve_config(MARS.name, "kaggle", {"workers": 1})  # the training Batches, built on one thread
    augment = kaggle.augmentation
    progress("augment: mars naive loop")
    naive = naive_rate(images[..., 0] * 255.0, with_mask=True)
    out = [Row(PART, "mars naive loop (Keras layers, per sample)", fmt(naive), "tiles/s/core",
               "image+mask stacked as two channels, eager, one tile per call")]
    progress("augment: mars train pipeline")
    # The task's own training Batches (big-rock oversampling, online augmentation).
    batches = mars.training_batches(images, masks, kaggle, kaggle.training.batch_size)
    value = batches_rate(batches)
    note = f"{value / naive:.0f}x naive; {target_note(value, MARS_TARGET)}"
    if value < MARS_TARGET:
        note += "; " + dominant_op(MARS_AUGMENTATIONS.load(augment.augment), images, masks)
    out.append(Row(PART, f"mars train pipeline ({augment.augment}, {augment.augment_mode})", fmt(value),
                   "tiles/s/core", note))
    return out


def rows() -> list[Row]:
    one_core()
    return cells_rows() + mars_rows()


if __name__ == "__main__":
    raise SystemExit(main(rows))
