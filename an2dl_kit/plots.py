"""Every figure a run leaves behind, saved one way (atomically, Agg backend, figure closed).

Shared: learning curves from history.csv. Cells: the confusion matrix and an augmentation preview. Mars:
per-class IoU bars and image | truth | prediction overlays.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from an2dl_kit.files import atomic_path
from an2dl_kit.task import BIG_ROCK, CELLS, MARS

# Class colours (RGB 0-1) for the Mars overlays: background, soil, bedrock, sand, big rock.
MARS_COLOURS = np.array([[0, 0, 0], [0.85, 0.55, 0.25], [0.55, 0.55, 0.75], [0.95, 0.85, 0.3], [0.9, 0.1, 0.1]])
OVERLAY_ALPHA = 0.45


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, png: Path, dpi: int = 110) -> Path:
    """Write `fig` to `png` atomically (a reader never sees half a file) and close it."""
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _pyplot().close(fig)
    return Path(png)


def learning_curves(history_csv: Path, png: Path) -> Path:
    """Every metric that has a validation twin (loss, accuracy, mIoU...) against the epoch count, with the
    phase boundaries dotted."""
    import pandas as pd

    plt = _pyplot()
    table = pd.read_csv(history_csv)
    table["step"] = np.arange(len(table))
    metrics = [c for c in table.columns if f"val_{c}" in table.columns]
    fig, axes = plt.subplots(1, max(len(metrics), 1), figsize=(4.5 * max(len(metrics), 1), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=False):
        ax.plot(table["step"] + 1, table[metric], label="train")
        ax.plot(table["step"] + 1, table[f"val_{metric}"], label="validation")
        for boundary in np.flatnonzero(table["phase"].ne(table["phase"].shift()).to_numpy())[1:]:
            ax.axvline(boundary + 0.5, color="grey", linestyle=":", linewidth=1)
        ax.set_title(metric)
        ax.set_xlabel("epoch (all phases)")
        ax.legend()
    fig.tight_layout()
    return save_figure(fig, png)


def confusion_matrix(cm: np.ndarray, png: Path, title: str) -> Path:
    """Row-normalised confusion matrix with counts in the cells."""
    plt = _pyplot()
    cm = np.asarray(cm)
    names = CELLS.class_names
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, png)


def augmentation_preview(grid: np.ndarray, labels: np.ndarray, pipeline: str, png: Path) -> Path:
    """One row per image of `grid` (rows, copies, H, W, C): the original, then augmented copies."""
    plt = _pyplot()
    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows), squeeze=False)
    for (i, j), ax in np.ndenumerate(axes):
        ax.imshow(grid[i, j])
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel(CELLS.class_names[labels[i]], fontsize=7)
    axes[0, 0].set_title("original", fontsize=8)
    fig.suptitle(f"augmentation: {pipeline}", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png, dpi=90)


def class_iou(named_scores: dict[str, dict], png: Path) -> Path:
    """Grouped bars: IoU of each class (and the mIoU) for each named set of Mars scores."""
    plt = _pyplot()
    names = list(next(iter(named_scores.values()))["iou"]) + ["mIoU"]
    width = 0.8 / len(named_scores)
    fig, ax = plt.subplots(figsize=(7.5, 3.8))
    for i, (label, scores) in enumerate(named_scores.items()):
        values = [scores["iou"][n] for n in names[:-1]] + [scores["miou"]]
        bars = ax.bar(np.arange(len(names)) + (i - (len(named_scores) - 1) / 2) * width,
                      np.nan_to_num(values), width, label=label)
        ax.bar_label(bars, fmt="%.2f", fontsize=7)
    ax.set_xticks(np.arange(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("IoU")
    ax.set_title("per-class IoU (leaderboard MeanIoU, background ignored)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, png)


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1)
    alpha = np.where(mask[..., None] > 0, OVERLAY_ALPHA, 0.0)
    return grey * (1 - alpha) + MARS_COLOURS[mask] * alpha


def overlay_rows(masks: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Tiles to show: big-rock tiles first (up to a third of the rows), the rest drawn by seed."""
    rng = np.random.default_rng(seed)
    rare = np.flatnonzero((masks == BIG_ROCK).any(axis=(1, 2)))
    picks = list(rng.permutation(rare)[:max(count // 3, 1)])
    rest = rng.permutation(np.setdiff1d(np.arange(len(masks)), picks))
    return np.array((picks + list(rest))[:count], dtype=np.int64)


def overlays(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, png: Path) -> Path:
    """Rows of image | truth | prediction, class colours over the grey tile (background uncoloured)."""
    from matplotlib.patches import Patch

    plt = _pyplot()
    fig, axes = plt.subplots(len(images), 3, figsize=(9, 1.6 * len(images) + 0.6), squeeze=False)
    for i, (image, mask, pred) in enumerate(zip(images, truth, predicted, strict=True)):
        panels = (np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1), _overlay(image, mask),
                  _overlay(image, pred))
        for ax, panel in zip(axes[i], panels, strict=True):
            ax.imshow(panel, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
    for ax, title in zip(axes[0], ("image", "truth", "prediction"), strict=True):
        ax.set_title(title, fontsize=9)
    handles = [Patch(color=MARS_COLOURS[k], label=MARS.class_names[k]) for k in MARS.scored_classes]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return save_figure(fig, png, dpi=90)
