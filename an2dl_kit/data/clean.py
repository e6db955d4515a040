"""Remove the contaminants of the course files by exact-duplicate hashing, with no hard-coded indices.

The course cells file ends with 1,800 copies of two meme images with assorted labels and holds a few exact
duplicates; the Mars file holds 110 "alien" images that all share one identical mask. Rules, applied in this
order (a row is counted under the first rule that removes it):

1. `repeated_image`: an image that occurs REPEAT_THRESHOLD or more times is not a sample: every copy goes.
2. `conflicting_labels`: an image that occurs with two different labels (cells) or masks (Mars) cannot be
   trusted either way: every copy goes.
3. `repeated_mask` (Mars): a detailed mask (two or more labelled classes 1..4) shared byte-for-byte by
   REPEAT_THRESHOLD or more different images. Simple masks repeat naturally: in the AI4Mars stand-in, masks of
   one terrain class plus a fixed unlabelled strip (rover body, image border) recur up to 20 times and the
   all-background mask 54 times; no mask with two labelled classes recurs at all.
4. `duplicate`: the remaining exact duplicates (same image, same label): the first copy stays.

Why REPEAT_THRESHOLD = 5: independently taken photographs never coincide byte for byte, so any exact repeat is
an artefact of how the file was assembled. Assembly accidents give pairs (the course cells file has 8
duplicated images, each twice) and, at worst, a handful of copies; the injected contaminants come in dozens
to thousands (the smallest group in the course files is 110). Five copies sits far above the accidents and far
below the smallest contaminant, and it is small enough that the tiny synthetic data can exercise the rule.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

from an2dl_kit.data.io import CellsData, MarsData
from an2dl_kit.task import MARS

REPEAT_THRESHOLD = 5

REASONS = {
    "repeated_image": f"an identical image occurs {REPEAT_THRESHOLD}+ times (foreign/meme image)",
    "conflicting_labels": "the same image occurs with different labels",
    "repeated_mask": f"a mask with 2+ terrain classes is shared by {REPEAT_THRESHOLD}+ images (aliens)",
    "duplicate": "exact duplicate of an earlier sample (first copy kept)",
}


@dataclass(frozen=True)
class CleaningReport:
    """`kept`: sorted indices (into the loaded arrays) of the rows kept; `removed`: rows removed per reason
    (keys of REASONS, only reasons that removed something)."""

    kept: np.ndarray
    removed: dict[str, int]
    removed_rows: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return len(self.kept) + sum(self.removed.values())

    def record(self, labels: np.ndarray, num_classes: int) -> dict:
        """What metrics.json keeps (`cleaning`): rows kept, rows removed per reason, and the class counts
        (images per class; pixels per class for masks) of the loaded `labels` and of the rows kept."""
        from an2dl_kit.data.split import class_counts

        return {"kept": len(self.kept), "removed": self.removed,
                "class_counts": {"raw": class_counts(labels, num_classes),
                                 "cleaned": class_counts(np.asarray(labels)[self.kept], num_classes)}}

    def lines(self) -> list[str]:
        lines = [f"kept {len(self.kept)} of {self.total} samples"]
        lines += [f"removed {n}: {REASONS[reason]}" for reason, n in self.removed.items()]
        return lines


def row_hashes(array: np.ndarray) -> np.ndarray:
    """One digest per row (bytes of the row), as an object array usable with np.unique."""
    array = np.ascontiguousarray(array)
    return np.array([hashlib.blake2b(row.tobytes(), digest_size=16).digest() for row in array], dtype=object)


def _group_ids(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Group index per row and the size of each group."""
    _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    return inverse.reshape(-1), counts


def _first_occurrence(keys: np.ndarray) -> np.ndarray:
    """True on the first row of every group of equal keys."""
    _, first = np.unique(keys, return_index=True)
    flags = np.zeros(len(keys), dtype=bool)
    flags[first] = True
    return flags


def _clean(image_keys: np.ndarray, label_keys: np.ndarray, masks: np.ndarray | None) -> CleaningReport:
    n = len(image_keys)
    removed_by: dict[str, np.ndarray] = {}
    alive = np.ones(n, dtype=bool)

    def drop(reason: str, rows: np.ndarray) -> None:
        rows = rows & alive
        if rows.any():
            removed_by[reason] = np.flatnonzero(rows)
            alive[rows] = False

    image_group, image_counts = _group_ids(image_keys)
    drop("repeated_image", image_counts[image_group] >= REPEAT_THRESHOLD)

    pair_keys = np.array([a + b for a, b in zip(image_keys, label_keys, strict=True)], dtype=object)
    labels_per_image = np.zeros(len(image_counts), dtype=np.int64)
    pair_first = _first_occurrence(pair_keys)
    np.add.at(labels_per_image, image_group[pair_first], 1)
    drop("conflicting_labels", labels_per_image[image_group] > 1)

    if masks is not None:
        flat = masks.reshape(n, -1)
        labelled_classes = sum((flat == c).any(axis=1).astype(int) for c in MARS.scored_classes)
        mask_group, mask_counts = _group_ids(label_keys)
        # Count distinct images per mask, so one image duplicated 5 times is not mistaken for aliens.
        images_per_mask = np.zeros(len(mask_counts), dtype=np.int64)
        np.add.at(images_per_mask, mask_group[pair_first], 1)
        drop("repeated_mask", (images_per_mask[mask_group] >= REPEAT_THRESHOLD) & (labelled_classes >= 2))

    drop("duplicate", ~pair_first)
    return CleaningReport(
        kept=np.flatnonzero(alive),
        removed={reason: len(rows) for reason, rows in removed_by.items()},
        removed_rows=removed_by,
    )


def clean_cells(data: CellsData) -> tuple[CellsData, CleaningReport]:
    """Drop meme images, images with conflicting labels and exact duplicates; see the module docstring."""
    labels = data.labels.astype(np.int64)
    label_keys = np.array([int(v).to_bytes(8, "little") for v in labels], dtype=object)
    report = _clean(row_hashes(data.images), label_keys, masks=None)
    return CellsData(images=data.images[report.kept], labels=data.labels[report.kept]), report


def clean_mars(data: MarsData) -> tuple[MarsData, CleaningReport]:
    """Drop alien tiles (a detailed mask shared by many), repeated or conflicting images and duplicates."""
    report = _clean(row_hashes(data.images), row_hashes(data.masks), masks=data.masks)
    cleaned = MarsData(images=data.images[report.kept], masks=data.masks[report.kept], test=data.test)
    return cleaned, report
