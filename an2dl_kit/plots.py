"""Every figure the kit draws, saved one way (atomically, Agg backend, figure closed), in one of two styles.

`SCREEN` is what a run leaves in its folder (PNG, sized to be read on a monitor); `PRINT` is what `an2dl report`
writes into a report's `figures/` (PNG and PDF, one column of a two-column page wide, no text under 8 pt).
Colours are colour-blind safe (Okabe and Ito's palette) and a class has the same colour in every figure
(`CLASS_COLOURS`).

Shared: learning curves from history.csv, the class counts of a split, the scores of several runs, an
augmentation preview. Cells: the confusion matrix and example predictions. Mars: per-class IoU bars and image
| truth | prediction overlays. A run also keeps the pixels of its image figures in `examples.npz`
(`save_examples`), so a report can redraw them at print size without the data.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from an2dl_kit.files import atomic_path
from an2dl_kit.task import BIG_ROCK, CELLS, MARS

# Okabe & Ito (2008), "Color Universal Design": eight colours told apart with every common colour-vision
# deficiency. Lines and run bars take them in this order.
OKABE_ITO = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442", "#000000")
# One colour per class, in label order, used by every figure that colours classes.
CLASS_COLOURS = {
    CELLS.name: ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7", "#000000"),
    MARS.name: ("#999999", "#E69F00", "#0072B2", "#F0E442", "#CC79A7"),
}
# Class names short enough for the ticks of a one-column figure (the usual haematology abbreviations).
SHORT_NAMES = {CELLS.name: ("BAS", "EOS", "ERB", "IG", "LYM", "MON", "NEU", "PLT"), MARS.name: MARS.class_names}
# Hatches that tell the sets of one class apart (validation, + TTA, test...) where colour means the class.
HATCHES = ("", "///", "...", "xxx")
OVERLAY_ALPHA = 0.45
EXAMPLES_NPZ = "examples.npz"


def _rgb(hex_colour: str) -> list[float]:
    return [int(hex_colour[i:i + 2], 16) / 255 for i in (1, 3, 5)]


MARS_COLOURS = np.array([_rgb(c) for c in CLASS_COLOURS[MARS.name]])


@dataclass(frozen=True)
class Style:
    """How a figure is sized and saved.

    Args:
        width: figure width in inches; None keeps each figure's own screen size.
        font: size in points of every text (titles, labels, ticks, legends).
        small: size of annotations (cell counts, bar values).
        dpi: resolution of the PNG.
        formats: the files written: the path's PNG, and a PDF beside it where "pdf" is listed.
        bar_values: value labels on bars (a screen figure stands alone; a printed one sits beside its table).
    """

    width: float | None
    font: float
    small: float
    dpi: int
    formats: tuple[str, ...]
    bar_values: bool

    def size(self, screen: tuple[float, float], aspect: float) -> tuple[float, float]:
        """`screen` (inches) on a screen; at the print width, `aspect` (height / width) sets the height."""
        return screen if self.width is None else (self.width, round(self.width * aspect, 2))


SCREEN = Style(width=None, font=10, small=8, dpi=110, formats=("png",), bar_values=True)
PRINT = Style(width=3.3, font=8, small=8, dpi=300, formats=("png", "pdf"), bar_values=False)


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextlib.contextmanager
def drawing(style: Style) -> Iterator:
    """pyplot with the style's fonts, the palette and embedded TrueType fonts in PDFs (editable text)."""
    from cycler import cycler

    plt = _pyplot()
    sizes = {key: style.font for key in ("font.size", "axes.titlesize", "axes.labelsize", "xtick.labelsize",
                                         "ytick.labelsize", "legend.fontsize", "figure.titlesize")}
    with plt.rc_context({**sizes, "axes.prop_cycle": cycler(color=OKABE_ITO), "pdf.fonttype": 42,
                         "legend.title_fontsize": style.font}):
        yield plt


def save_figure(fig, png: Path, style: Style = SCREEN) -> Path:
    """Write `fig` to `png` (and its PDF twin when the style asks) atomically, and close it."""
    png = Path(png)
    for fmt in style.formats:
        with atomic_path(png.with_suffix(f".{fmt}")) as tmp:
            fig.savefig(tmp, format=fmt, dpi=style.dpi)
    _pyplot().close(fig)
    return png


def class_names(task: str, style: Style) -> tuple[str, ...]:
    """The task's class names, abbreviated in print."""
    from an2dl_kit.task import TASKS

    return TASKS[task].class_names if style.width is None else SHORT_NAMES[task]


def learning_curves(history_csv: Path, png: Path, style: Style = SCREEN,
                    metrics: Sequence[str] | None = None) -> Path:
    """Every metric that has a validation twin (loss, accuracy, mIoU...; or only `metrics`) against the epoch
    count, with the phase boundaries dotted: side by side on a screen, stacked in print."""
    import pandas as pd

    table = pd.read_csv(history_csv)
    step = np.arange(len(table)) + 1
    metrics = [c for c in (metrics or table.columns) if c in table.columns and f"val_{c}" in table.columns]
    count = max(len(metrics), 1)
    with drawing(style) as plt:
        stacked = style.width is not None
        fig, axes = plt.subplots(count if stacked else 1, 1 if stacked else count, squeeze=False, sharex=stacked,
                                 figsize=style.size((4.5 * count, 3.6), 0.5 * count + 0.15))
        for index, (ax, metric) in enumerate(zip(axes.flat, metrics, strict=False)):
            ax.plot(step, table[metric], label="train", marker="." if len(table) < 10 else None)
            ax.plot(step, table[f"val_{metric}"], label="validation", marker="." if len(table) < 10 else None)
            for boundary in np.flatnonzero(table["phase"].ne(table["phase"].shift()).to_numpy())[1:]:
                ax.axvline(boundary + 0.5, color="grey", linestyle=":", linewidth=1)
            if stacked:
                ax.set_ylabel(metric)
            else:
                ax.set_title(metric)
            if index == 0 or not stacked:
                ax.legend()
        from matplotlib.ticker import MaxNLocator

        for ax in axes.flat:  # whole epochs, also for a run of one epoch
            ax.xaxis.set_major_locator(MaxNLocator(integer=True, min_n_ticks=1))
            ax.set_xlim(0.5, len(table) + 0.5)
        axes.flat[-1].set_xlabel("epoch (all phases)")
        if not stacked:
            for ax in axes.flat:
                ax.set_xlabel("epoch (all phases)")
        fig.tight_layout()
        return save_figure(fig, png, style)


def confusion_matrix(cm: np.ndarray, png: Path, title: str | None, style: Style = SCREEN) -> Path:
    """Row-normalised confusion matrix (colour-blind-safe sequential map) with counts in the cells."""
    cm = np.asarray(cm)
    names = class_names(CELLS.name, style)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    with drawing(style) as plt:
        fig, ax = plt.subplots(figsize=style.size((7.5, 6.5), 0.95))
        ax.imshow(rates, cmap="cividis", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(cm):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=style.small,
                    color="black" if rates[i, j] > 0.5 else "white")
        rotation = {"rotation": 45, "ha": "right"} if style.width is None else {}
        ax.set_xticks(range(len(names)), names, **rotation)
        ax.set_yticks(range(len(names)), names)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        return save_figure(fig, png, style)


def _tile_size(style: Style, shape: tuple[int, ...], columns: int, margin: float) -> tuple[float, float]:
    """(width, height) in inches of one image tile: 1.3 in of area per square tile on a screen, the print
    width shared by `columns` after a `margin` for row labels in print."""
    height, width = shape[:2]
    tile = 1.3 * (width / height) ** 0.5 if style.width is None else (style.width - margin) / columns
    return tile, tile * height / width


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1)
    alpha = np.where(mask[..., None] > 0, OVERLAY_ALPHA, 0.0)
    return grey * (1 - alpha) + MARS_COLOURS[mask] * alpha


def _grey(image: np.ndarray) -> np.ndarray:
    return np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1)


def _as_unit(images: np.ndarray) -> np.ndarray:
    """Images in [0, 1] for imshow, from 0-255 integers or floats already in [0, 1]."""
    images = np.asarray(images)
    return images / 255.0 if images.dtype == np.uint8 or images.max(initial=0) > 1.5 else images


def _no_ticks(ax) -> None:
    ax.set_xticks([])
    ax.set_yticks([])


def _mars_legend(fig, style: Style, columns: int = 4) -> None:
    from matplotlib.patches import Patch

    handles = [Patch(color=MARS_COLOURS[k], label=MARS.class_names[k]) for k in MARS.scored_classes]
    fig.legend(handles=handles, loc="lower center", ncol=columns, fontsize=style.small, frameon=False)


def augmentation_preview(grid: np.ndarray, png: Path, pipeline: str, style: Style = SCREEN,
                         row_names: Sequence[str] | None = None, masks: np.ndarray | None = None) -> Path:
    """One row per image of `grid` (rows, copies, H, W[, C]): the original, then augmented copies; with
    `masks` (rows, copies, H, W) each copy's mask is drawn over it in the class colours (Mars)."""
    rows, cols = grid.shape[:2]
    grid = _as_unit(grid)
    margin = 0.45 if row_names is not None else 0.1
    tile_w, tile_h = _tile_size(style, grid.shape[2:], cols, margin)
    legend = 0.3 if masks is not None else 0.0
    with drawing(style) as plt:
        fig, axes = plt.subplots(rows, cols, squeeze=False,
                                 figsize=(tile_w * cols + margin, tile_h * rows + 0.35 + legend))
        for (i, j), ax in np.ndenumerate(axes):
            image = grid[i, j]
            ax.imshow(_overlay(image, masks[i, j]) if masks is not None
                      else (_grey(image) if image.ndim == 2 else image), interpolation="nearest")
            _no_ticks(ax)
            if j == 0 and row_names is not None:
                ax.set_ylabel(row_names[i], fontsize=style.small)
        axes[0, 0].set_title("original", fontsize=style.small)
        fig.suptitle(f"augmentation: {pipeline}", fontsize=style.font)
        if masks is not None:
            _mars_legend(fig, style)
        fig.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.2, rect=(0, legend / (tile_h * rows + 0.35 + legend), 1, 1))
        return save_figure(fig, png, style)


def _class_bars(ax, names: Sequence[str], colours: Sequence[str], sets: Mapping[str, Sequence[float]],
                style: Style, fmt: str = "%.2f") -> None:
    """Grouped bars: one group per class in the class's colour, one bar per named set told apart by hatching,
    with a grey legend of the hatches."""
    from matplotlib.patches import Patch

    width = 0.8 / len(sets)
    for i, values in enumerate(sets.values()):
        offsets = np.arange(len(names)) + (i - (len(sets) - 1) / 2) * width
        bars = ax.bar(offsets, np.nan_to_num(np.asarray(values, dtype=float)), width, color=colours,
                      hatch=HATCHES[i % len(HATCHES)], edgecolor="black", linewidth=0.5)
        if style.bar_values:
            ax.bar_label(bars, fmt=fmt, fontsize=style.small)
    ax.set_xticks(np.arange(len(names)), names)
    if len(sets) > 1:  # above the axes: bars of any height stay visible
        ax.legend(handles=[Patch(facecolor="white", edgecolor="black", hatch=HATCHES[i % len(HATCHES)],
                                 label=label) for i, label in enumerate(sets)], frameon=False, loc="lower left",
                  bbox_to_anchor=(0, 1), ncol=2 if len(sets) > 2 else len(sets), borderaxespad=0.2)


def class_iou(named_scores: dict[str, dict], png: Path, style: Style = SCREEN) -> Path:
    """Grouped bars: IoU of each scored class in its colour, one bar per named set of Mars scores (hatched),
    and the mIoU in grey."""
    names = list(next(iter(named_scores.values()))["iou"])
    colours = [CLASS_COLOURS[MARS.name][MARS.class_names.index(n)] for n in names] + ["#999999"]
    sets = {label: [scores["iou"][n] for n in names] + [scores["miou"]] for label, scores in named_scores.items()}
    with drawing(style) as plt:
        fig, ax = plt.subplots(figsize=style.size((7.5, 3.8), 0.62))
        _class_bars(ax, names + ["mIoU"], colours, sets, style)
        ax.set_ylim(0, 1.05)
        ax.set_ylabel("IoU")
        if style.width is None:
            ax.set_title("per-class IoU (leaderboard MeanIoU, background ignored)")
        fig.tight_layout()
        return save_figure(fig, png, style)


def class_counts(task: str, counts: Mapping[str, Sequence[float]], ylabel: str, png: Path,
                 style: Style = SCREEN) -> Path:
    """Grouped bars: each class in its colour, one hatched bar per named split (train, validation...)."""
    with drawing(style) as plt:
        fig, ax = plt.subplots(figsize=style.size((7.5, 3.8), 0.62))
        _class_bars(ax, class_names(task, style), CLASS_COLOURS[task], counts, style, fmt="%g")
        ax.set_ylabel(ylabel)
        fig.tight_layout()
        return save_figure(fig, png, style)


def run_scores(runs: Mapping[str, Mapping[str, float | None]], xlabel: str, png: Path,
               style: Style = SCREEN) -> Path:
    """Horizontal grouped bars: for each run (top to bottom) its named scores (validation, + TTA, test...);
    a missing score draws no bar, a score no run has no legend entry."""
    labels = list(dict.fromkeys(key for scores in runs.values() for key, value in scores.items()
                                if value is not None))
    names = list(runs)
    width = 0.8 / max(len(labels), 1)
    legend = 0.2 * -(-len(labels) // 2) + 0.1  # inches: two entries a row, above the axes
    with drawing(style) as plt:
        fig, ax = plt.subplots(figsize=style.size((7.5, 0.5 * len(names) + 1.2 + legend),
                                                  (0.28 * len(names) * len(labels) ** 0.5 + 0.6 + legend) / 3.3))
        for i, label in enumerate(labels):
            values = [runs[name].get(label) for name in names]
            offsets = np.arange(len(names)) + (i - (len(labels) - 1) / 2) * width
            shown = [k for k, v in enumerate(values) if v is not None]
            bars = ax.barh(offsets[shown], [values[k] for k in shown], width, label=label,
                           color=OKABE_ITO[i % len(OKABE_ITO)])
            if style.bar_values:
                ax.bar_label(bars, fmt="%.3f", fontsize=style.small)
        ax.set_yticks(np.arange(len(names)), names)
        ax.invert_yaxis()  # the first run on top, and in each run the first score on top
        ax.set_xlabel(xlabel)
        # Across the whole figure, not the axes: long run names push the axes right.
        fig.legend(*ax.get_legend_handles_labels(), frameon=False, loc="upper center", ncol=min(len(labels), 2))
        fig.tight_layout(rect=(0, 0, 1, 1 - legend / fig.get_size_inches()[1]))
        return save_figure(fig, png, style)


def predictions_grid(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, png: Path,
                     style: Style = SCREEN, columns: int = 4) -> Path:
    """Cells: example images titled "true → predicted" (short names in print); wrong ones in bold."""
    names = class_names(CELLS.name, style)
    rows = -(-len(images) // columns)
    tile_w, tile_h = _tile_size(style, images.shape[1:], columns, 0.1)
    with drawing(style) as plt:
        fig, axes = plt.subplots(rows, columns, squeeze=False, figsize=(tile_w * columns + 0.1, (tile_h + 0.3) * rows))
        for ax in axes.flat:
            ax.axis("off")
        for ax, image, true, pred in zip(axes.flat, _as_unit(images), truth, predicted, strict=False):
            ax.imshow(image, interpolation="nearest")
            ax.set_title(f"{names[true]} → {names[pred]}", fontsize=style.small,
                         fontweight="normal" if true == pred else "bold")
        fig.tight_layout(pad=0.3)
        return save_figure(fig, png, style)


def overlay_rows(masks: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Tiles to show: big-rock tiles first (up to a third of the rows), the rest drawn by seed."""
    rng = np.random.default_rng(seed)
    rare = np.flatnonzero((masks == BIG_ROCK).any(axis=(1, 2)))
    picks = list(rng.permutation(rare)[:max(count // 3, 1)])
    rest = rng.permutation(np.setdiff1d(np.arange(len(masks)), picks))
    return np.array((picks + list(rest))[:count], dtype=np.int64)


def overlays(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, png: Path,
             style: Style = SCREEN) -> Path:
    """Rows of image | truth | prediction, class colours over the grey tile (background uncoloured)."""
    images = _as_unit(images)
    tile_w, tile_h = _tile_size(style, images.shape[1:], 3, 0.1)
    height = tile_h * len(images) + 0.6
    with drawing(style) as plt:
        fig, axes = plt.subplots(len(images), 3, squeeze=False, figsize=(tile_w * 3 + 0.1, height))
        for i, (image, mask, pred) in enumerate(zip(images, truth, predicted, strict=True)):
            for ax, panel in zip(axes[i], (_grey(image), _overlay(image, mask), _overlay(image, pred)), strict=True):
                ax.imshow(panel, interpolation="nearest")
                _no_ticks(ax)
        for ax, title in zip(axes[0], ("image", "truth", "prediction"), strict=True):
            ax.set_title(title, fontsize=style.font)
        _mars_legend(fig, style)
        fig.tight_layout(pad=0.3, rect=(0, 0.3 / height, 1, 1))
        return save_figure(fig, png, style)


def save_examples(path: Path, **arrays: np.ndarray) -> Path:
    """The pixels and labels of a run's image figures (augmentation preview, example predictions) as one
    compressed npz, written atomically: what `an2dl report` redraws at print size."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez_compressed(handle, **arrays)
    return Path(path)
