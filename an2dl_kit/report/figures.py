"""The report's figures, drawn at print size (`plots.PRINT`: one column wide, no text under 8 pt, PNG and PDF)
by the same functions that draw a run's screen figures, from what the runs recorded: metrics.json,
history.csv and examples.npz. A figure whose inputs a run lacks becomes a sentence saying so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from an2dl_kit import plots
from an2dl_kit.report.collect import Collection, Run
from an2dl_kit.report.document import Figure, Text, missing_figure, score_label
from an2dl_kit.task import TASKS
from an2dl_kit.training import HISTORY_FILE

FIGURES_DIR = "figures"
PREVIEW_COLUMNS = 6  # original + 5 augmented copies: tiles stay about half an inch wide in one column
EXAMPLES = 8
OVERLAY_ROWS = 4


def _png(out: Path, name: str) -> Path:
    return out / FIGURES_DIR / f"{name}.png"


def _examples(run: Run) -> dict | None:
    path = run.file(plots.EXAMPLES_NPZ)
    if path is None:
        return None
    with np.load(path, allow_pickle=False) as stored:
        return {key: stored[key] for key in stored.files}


def class_counts(run: Run, out: Path) -> Figure | Text:
    counts = run.metrics["cleaning"].get("class_counts", {})
    if not {"train", "validation"} <= set(counts):
        return missing_figure("class count", "the run's metrics.json has no class counts (an older kit wrote it)")
    task = run.metrics["task"]
    dense = bool(TASKS[task].label_shape)
    sets = {split: np.asarray(counts[split], float) for split in ("train", "validation")}
    if dense:
        sets = {split: 100 * values / max(values.sum(), 1) for split, values in sets.items()}
    png = plots.class_counts(task, sets, "pixels (%)" if dense else "images", _png(out, "class_counts"), plots.PRINT)
    return Figure("class_counts", f"{'Pixel share' if dense else 'Images'} per class in the training and "
                                  f"validation sets of {run.name}.", png)


def augmentation(run: Run, out: Path) -> Figure | Text:
    examples = _examples(run)
    if examples is None or "preview" not in examples:
        return missing_figure("augmentation", f"{run.name} has no {plots.EXAMPLES_NPZ} (an older kit wrote it)")
    task, pipeline = run.metrics["task"], str(examples["preview_pipeline"])
    grid = examples["preview"][:, :PREVIEW_COLUMNS]
    masks = examples["preview_masks"][:, :PREVIEW_COLUMNS] if "preview_masks" in examples else None
    names = ([plots.SHORT_NAMES[task][c] for c in examples["preview_labels"]] if "preview_labels" in examples
             else None)
    png = plots.augmentation_preview(grid, _png(out, "augmentation"), pipeline, plots.PRINT, row_names=names,
                                     masks=masks)
    return Figure("augmentation", f"Training images of {run.name} (first column) and copies through its "
                                  f"'{pipeline}' augmentation.", png)


def experiments(collection: Collection, out: Path) -> Figure | Text:
    label = score_label(collection.task)
    runs = {}
    for run in collection.runs:
        score, metrics, oof = run.score, run.metrics, run.oof
        test = metrics["test_tta"]
        runs[run.name] = {"validation": None if oof else metrics["validation"][score],
                          "validation + TTA": None if oof else metrics["validation_tta"][score],
                          "out of fold": oof["value"] if oof else None,
                          "test + TTA": None if test is None else test[score], "public": run.public}
    png = plots.run_scores(runs, label, _png(out, "experiments"), plots.PRINT)
    return Figure("experiments", f"{label} of every run (a missing bar: no score of that kind; a fold set's "
                                 "validation is out of fold).", png)


def learning_curves(run: Run, out: Path) -> Figure | Text:
    history = run.file(HISTORY_FILE)
    if history is None:
        return missing_figure("learning-curve", f"{run.name} has no {HISTORY_FILE}")
    png = plots.learning_curves(history, _png(out, "learning_curves"), plots.PRINT,
                                metrics=("loss", TASKS[run.metrics["task"]].score))
    member = "" if history.parent == run.folder else f" ({history.parent.name}, the first member)"
    return Figure("learning_curves", f"Loss and {score_label(run.metrics['task'])} per epoch of {run.name}"
                                     f"{member}; dotted lines separate the training phases.", png)


def per_class(run: Run, out: Path) -> Figure:
    """Cells: the validation+TTA confusion matrix. Mars: per-class IoU of validation, + TTA, and test. A fold
    set's: out of fold (its submitted predictions) and its fold ensemble's test."""
    metrics, oof = run.metrics, run.oof
    if metrics["task"] == "cells":
        matrix = (oof["scores"] if oof else metrics["validation_tta"])["confusion_matrix"]
        png = plots.confusion_matrix(matrix, _png(out, "confusion_matrix"), None, plots.PRINT)
        what = (f"Out-of-fold confusion matrix of {run.name} as submitted" if oof
                else f"Validation confusion matrix of {run.name} with TTA")
        return Figure("confusion_matrix", f"{what} (counts; colour: share of the true class).", png)
    sets = ({"out of fold": oof["scores"]} if oof else
            {"validation": metrics["validation"], "validation + TTA": metrics["validation_tta"]})
    if metrics["test_tta"] is not None:
        sets["test (fold ensemble)" if oof else "test + TTA"] = metrics["test_tta"]
    png = plots.class_iou(sets, _png(out, "class_iou"), plots.PRINT)
    return Figure("class_iou", f"Per-class IoU of {run.name} (background ignored, as on the leaderboard).", png)


def predictions(run: Run, out: Path) -> Figure | Text:
    examples = _examples(run)
    if examples is None or "predicted" not in examples:
        return missing_figure("example-prediction", f"{run.name} has no {plots.EXAMPLES_NPZ} (an older kit wrote it)")
    png = _png(out, "predictions")
    if run.metrics["task"] == "cells":
        plots.predictions_grid(examples["images"][:EXAMPLES], examples["truth"][:EXAMPLES],
                               examples["predicted"][:EXAMPLES], png, plots.PRINT)
        caption = "true → predicted class (wrong ones in bold)"
    else:
        plots.overlays(examples["images"][:OVERLAY_ROWS], examples["truth"][:OVERLAY_ROWS],
                       examples["predicted"][:OVERLAY_ROWS], png, plots.PRINT)
        caption = "image, true mask, predicted mask"
    return Figure("predictions", f"Validation examples of {run.name}: {caption}.", png)
