"""From Mars probability maps to the label masks that are submitted.

`never_background` takes the argmax over classes 1-4: background-labelled pixels are ignored by the
leaderboard, so a background prediction can only add a zero-IoU term for class 0 on a labelled pixel.
`majority_filter` is the optional morphological clean-up (the reference solution refined borders with cv2):
each pixel takes the class most frequent in its k x k neighbourhood, which removes specks smaller than
about half the window and smooths ragged borders, without inventing a class that is not nearby.
"""

from __future__ import annotations

import numpy as np

from an2dl_kit.task import MARS


def never_background(probabilities: np.ndarray) -> np.ndarray:
    """uint8 labels (..., H, W) from probabilities (..., H, W, K), never choosing class 0."""
    return (np.argmax(probabilities[..., 1:], axis=-1) + 1).astype(np.uint8)


def plain_argmax(probabilities: np.ndarray) -> np.ndarray:
    """uint8 labels (..., H, W) from probabilities (..., H, W, K), any class allowed."""
    return np.argmax(probabilities, axis=-1).astype(np.uint8)


def majority_filter(labels: np.ndarray, size: int = 5, num_classes: int = MARS.num_classes) -> np.ndarray:
    """Replace each label by the most frequent label in its size x size window (ties: the lower class).

    Args:
        labels: uint8 masks (N, H, W) or (H, W).
        size: odd window size; 1 returns the labels unchanged.
        num_classes: labels are in 0..num_classes-1.
    """
    import cv2

    if size <= 1:
        return labels
    single = labels.ndim == 2
    masks = labels[None] if single else labels
    out = np.empty_like(masks)
    for i, mask in enumerate(masks):
        votes = np.stack([cv2.boxFilter((mask == k).astype(np.float32), -1, (size, size), normalize=False,
                                        borderType=cv2.BORDER_REFLECT_101) for k in range(num_classes)])
        out[i] = np.argmax(votes, axis=0)
    return out[0] if single else out


def to_labels(probabilities: np.ndarray, cleanup: int = 0, allow_background: bool = False) -> np.ndarray:
    """Submitted labels: argmax (over 1-4 unless `allow_background`), then an optional majority filter.

    The filter never brings background back: a background-free input has no class-0 votes.
    """
    labels = plain_argmax(probabilities) if allow_background else never_background(probabilities)
    return majority_filter(labels, cleanup, probabilities.shape[-1])
