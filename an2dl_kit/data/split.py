"""Seeded stratified train/validation split, stratified K-fold partition, balanced class weights (numpy only)."""

from __future__ import annotations

import numpy as np

from an2dl_kit.task import BIG_ROCK, MARS

# The terrain classes a tile without big rock is stratified by: every scored class but big rock.
TERRAIN = tuple(c for c in MARS.scored_classes if c != BIG_ROCK)


def stratified_split(labels: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Split row indices into (train, val), keeping each class's share in both parts.

    The validation size is round(N * val_fraction); per class it is n_c * val_fraction rounded by largest
    remainder (ties broken by the seed) so the parts add up to it, except that a class never gives up its
    last training sample. Both index arrays are sorted; the same (labels, val_fraction, seed) always gives
    the same split.
    """
    labels = np.asarray(labels).reshape(-1)
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    classes, counts = np.unique(labels, return_counts=True)
    quota = counts * val_fraction
    n_val = np.floor(quota).astype(int)
    remainder = int(round(len(labels) * val_fraction)) - n_val.sum()
    if remainder > 0:
        # Largest fractional part first; random jitter below 1e-9 only breaks exact ties.
        order = np.argsort(-(quota - n_val + rng.uniform(0, 1e-9, len(classes))), kind="stable")
        n_val[order[:remainder]] += 1
    n_val = np.minimum(n_val, np.maximum(counts - 1, 0))

    val_parts = []
    for cls, k in zip(classes, n_val, strict=True):
        members = np.flatnonzero(labels == cls)
        val_parts.append(rng.permutation(members)[:k])
    val = np.sort(np.concatenate(val_parts)) if val_parts else np.array([], dtype=np.int64)
    train = np.setdiff1d(np.arange(len(labels)), val, assume_unique=True)
    return train.astype(np.int64), val.astype(np.int64)


def kfold_assignment(labels: np.ndarray, folds: int, seed: int) -> np.ndarray:
    """The fold (0..folds-1) of every row: a stratified K-fold partition.

    Each class's rows are shuffled by the seed and dealt round-robin, the classes one after another, so every
    class's count in two folds differs by at most one and so do the folds' sizes. A class with fewer rows than
    folds is in some folds only. The same (labels, folds, seed) always gives the same partition; the training
    seed plays no part, so runs with other training seeds share it.
    """
    labels = np.asarray(labels).reshape(-1)
    if not 2 <= folds <= len(labels):
        raise ValueError(f"folds must be in [2, {len(labels)}] for {len(labels)} rows, got {folds}")
    rng = np.random.default_rng(seed)
    order = np.concatenate([rng.permutation(np.flatnonzero(labels == cls)) for cls in np.unique(labels)])
    assignment = np.empty(len(labels), np.int64)
    assignment[order] = np.arange(len(order)) % folds
    return assignment


def partition(labels: np.ndarray, *, folds: int, fold: int | None, val_fraction: float,
              seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(train, val, assignment) row indices of one run: `stratified_split` by `val_fraction` for `folds=1`
    (assignment 0 on validation rows, -1 elsewhere), else fold `fold` of `kfold_assignment` (assignment: every
    row's fold). Both index arrays are sorted."""
    if folds == 1:
        train, val = stratified_split(labels, val_fraction, seed)
        assignment = np.full(len(np.asarray(labels).reshape(-1)), -1, np.int64)
        assignment[val] = 0
        return train, val, assignment
    if fold is None or not 0 <= fold < folds:
        raise ValueError(f"fold must be in [0, {folds - 1}] for {folds} folds, got {fold}")
    assignment = kfold_assignment(labels, folds, seed)
    return np.flatnonzero(assignment != fold), np.flatnonzero(assignment == fold), assignment


def class_counts(labels: np.ndarray, num_classes: int) -> list[int]:
    """Samples per class, or pixels per class for masks (any shape), for class ids 0..num_classes-1."""
    return np.bincount(np.asarray(labels).reshape(-1).astype(np.int64), minlength=num_classes)[:num_classes].tolist()


def balanced_class_weights(labels: np.ndarray, num_classes: int) -> dict[int, float]:
    """scikit-learn's 'balanced' weights: n_samples / (n_present_classes * count_c), for every class id.

    Like scikit-learn, only the classes present count in n_classes. A class absent from `labels` still gets
    an entry, with weight 0.0, so the dict can be passed to Keras' `class_weight` (which needs every class
    id) and a class never seen contributes nothing. Works on any shape (Mars masks count pixels).
    """
    counts = np.asarray(class_counts(labels, num_classes))
    present = counts > 0
    weights = np.zeros(num_classes, dtype=np.float64)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return {int(c): float(w) for c, w in enumerate(weights)}


def mars_strata(masks: np.ndarray) -> np.ndarray:
    """One stratum per tile for `stratified_split`: big rock if it holds any (rare, 63 of 2,505 course tiles,
    so it must reach validation), else its most frequent `TERRAIN` class, else background (nothing labelled).
    """
    masks = np.asarray(masks).reshape(len(masks), -1)
    terrain = np.stack([(masks == c).sum(axis=1) for c in TERRAIN], axis=1)
    strata = np.where(terrain.sum(axis=1) > 0, np.asarray(TERRAIN)[np.argmax(terrain, axis=1)], MARS.ignored_class)
    return np.where((masks == BIG_ROCK).any(axis=1), BIG_ROCK, strata).astype(np.int64)
