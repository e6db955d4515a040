"""Leaderboard metrics in numpy: the Mars mIoU exactly as Keras computes it, and cells classification scores.

Mars: `keras.metrics.MeanIoU(num_classes=5, ignore_class=0)`. Pixels whose true label is 0 are dropped; a
confusion matrix is accumulated over the rest; IoU_c = TP_c / (TP_c + FP_c + FN_c); the mean runs over every
class whose union TP+FP+FN is non-empty. Class 0 is still a column: a background prediction on a labelled
pixel makes class 0's union non-empty with TP 0, so it adds a 0 term to the mean. Never predict background.
(Keras adds epsilon 1e-7 to both divisions; we do not, which changes the result by less than 1e-7 relative.)
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

from an2dl_kit.errors import SubmissionError
from an2dl_kit.task import BIG_ROCK, CELLS, MARS, TASKS

CHUNK = 1 << 22  # pixels per bincount call: bounded memory for the 82 M pixels of the course test set


def confusion_matrix(y_true, y_pred, num_classes: int) -> np.ndarray:
    """int64 (num_classes, num_classes): rows are true classes, columns predicted (Keras' layout).

    Pairs with a label outside 0..num_classes-1 on either side are skipped, as in Keras.
    """
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.size} values but y_pred has {y_pred.size}")
    cm = np.zeros(num_classes * num_classes, dtype=np.int64)
    for start in range(0, y_true.size, CHUNK):
        t = y_true[start : start + CHUNK].astype(np.int64)
        p = y_pred[start : start + CHUNK].astype(np.int64)
        valid = (t >= 0) & (t < num_classes) & (p >= 0) & (p < num_classes)
        cm += np.bincount(t[valid] * num_classes + p[valid], minlength=num_classes * num_classes)
    return cm.reshape(num_classes, num_classes)


def iou_from_confusion(cm: np.ndarray) -> np.ndarray:
    """Per-class IoU; NaN where the class's union is empty (absent from truth and prediction)."""
    tp = np.diag(cm).astype(np.float64)
    union = cm.sum(axis=0) + cm.sum(axis=1) - tp
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, tp / np.where(union > 0, union, 1), np.nan)


def mars_scores(y_true, y_pred) -> dict:
    """{"miou", "iou": {class name: IoU for 1..4, NaN if the class is absent from truth and prediction},
    "pixel_accuracy" (on labelled pixels), "background_predicted" (share of labelled pixels predicted 0),
    "confusion_matrix" (5x5, labelled pixels only)}."""
    num_classes = MARS.num_classes
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has shape {y_true.shape} but y_pred has {y_pred.shape}")
    t, p = y_true.reshape(-1), y_pred.reshape(-1)
    labelled = t != MARS.ignored_class
    return mars_scores_from_confusion(confusion_matrix(t[labelled], p[labelled], num_classes))


def mars_scores_from_confusion(cm) -> dict:
    """`mars_scores` from the confusion matrix of labelled pixels: confusion matrices of several parts of a set
    add up, so out-of-fold scores come from the folds' own."""
    num_classes = MARS.num_classes
    cm = np.asarray(cm, np.int64)
    iou = iou_from_confusion(cm)
    valid = ~np.isnan(iou)
    n_labelled = cm.sum()
    return {
        "miou": float(iou[valid].mean()) if valid.any() else 0.0,
        "iou": {MARS.class_names[c]: float(iou[c]) for c in range(1, num_classes)},
        "pixel_accuracy": float(np.trace(cm) / n_labelled) if n_labelled else 0.0,
        "background_predicted": float(cm[:, MARS.ignored_class].sum() / n_labelled) if n_labelled else 0.0,
        "confusion_matrix": cm,
    }


def cells_scores(y_true, y_pred) -> dict:
    """Accuracy; macro precision, recall and F1 as scikit-learn computes them (average over the classes
    present in y_true or y_pred, 0 where undefined); per-class F1; the 8x8 confusion matrix."""
    y_true, y_pred = np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1)
    return cells_scores_from_confusion(confusion_matrix(y_true, y_pred, CELLS.num_classes))


def cells_scores_from_confusion(cm) -> dict:
    """`cells_scores` from a confusion matrix (several parts' matrices add up, as for `mars_scores`)."""
    num_classes = CELLS.num_classes
    cm = np.asarray(cm, np.int64)
    tp = np.diag(cm).astype(np.float64)
    predicted, actual = cm.sum(axis=0), cm.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(predicted > 0, tp / np.maximum(predicted, 1), 0.0)
        recall = np.where(actual > 0, tp / np.maximum(actual, 1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    present = (predicted + actual) > 0
    return {
        "accuracy": float(tp.sum() / max(cm.sum(), 1)),
        "precision": float(precision[present].mean()) if present.any() else 0.0,
        "recall": float(recall[present].mean()) if present.any() else 0.0,
        "f1": float(f1[present].mean()) if present.any() else 0.0,
        "f1_per_class": {CELLS.class_names[c]: float(f1[c]) for c in range(num_classes)},
        "confusion_matrix": cm,
    }


def class_errors(cm: np.ndarray, class_id: int) -> dict:
    """Where one class goes wrong, from a confusion matrix (rows true, columns predicted): {"recall",
    "precision" (NaN where undefined), "missed_as": {predicted class: share of the class's missed pixels}}."""
    cm = np.asarray(cm, dtype=np.float64)
    hits, actual, predicted = cm[class_id, class_id], cm[class_id].sum(), cm[:, class_id].sum()
    missed = actual - hits
    return {"recall": float(hits / actual) if actual else np.nan,
            "precision": float(hits / predicted) if predicted else np.nan,
            "missed_as": {c: float(cm[class_id, c] / missed) if missed else 0.0
                          for c in range(len(cm)) if c != class_id}}


def format_class_errors(cm: np.ndarray, class_id: int, names: tuple[str, ...]) -> str:
    """`class_errors` in one line: "big rock: recall 0.36, precision 0.45; missed pixels predicted as ..."."""
    errors = class_errors(cm, class_id)
    shares = ", ".join(f"{names[c]} {share:.0%}" for c, share in errors["missed_as"].items() if share > 0)
    return (f"{names[class_id]}: recall {errors['recall']:.2f}, precision {errors['precision']:.2f}; "
            f"missed pixels predicted as {shares or 'nothing else'}")


# Task name -> (truth, predicted labels) -> scores: the one place a task picks its scorer.
SCORERS = {CELLS.name: cells_scores, MARS.name: mars_scores}
# Task name -> confusion matrix -> the same scores.
CONFUSION_SCORERS = {CELLS.name: cells_scores_from_confusion, MARS.name: mars_scores_from_confusion}


def format_scores(task: str, scores: dict) -> str:
    """Human-readable lines for `an2dl score` and reports."""
    if task == MARS.name:
        per_class = "  ".join(f"{name} {value:.4f}" for name, value in scores["iou"].items())
        return (
            f"mIoU {scores['miou']:.4f}  (MeanIoU(num_classes={MARS.num_classes}, "
            f"ignore_class={MARS.ignored_class}), the leaderboard metric)\n"
            f"IoU  {per_class}\n"
            f"pixel accuracy {scores['pixel_accuracy']:.4f} on labelled pixels; "
            f"background predicted on {scores['background_predicted']:.2%} of them\n"
            + format_class_errors(scores["confusion_matrix"], BIG_ROCK, MARS.class_names)
        )
    cm = scores["confusion_matrix"]
    width = max(len(str(cm.max())), 3)
    rows = [" " * 22 + " ".join(f"{c:>{width}}" for c in range(len(cm)))]
    rows += [f"{c} {CELLS.class_names[c]:<20}" + " ".join(f"{v:>{width}}" for v in cm[c]) for c in range(len(cm))]
    return (
        f"accuracy {scores['accuracy']:.4f}  macro precision {scores['precision']:.4f}  "
        f"recall {scores['recall']:.4f}  F1 {scores['f1']:.4f}\n"
        "confusion matrix (rows true, columns predicted):\n" + "\n".join(rows)
    )


def score_files(task: str, pred: str | os.PathLike, labels: str | os.PathLike) -> dict:
    """Validate a submission CSV against a `test_labels.npz` and score it."""
    from an2dl_kit.data.io import load_labels
    from an2dl_kit.submission import read_checked

    info = TASKS[task]
    truth = load_labels(labels)
    expected_rank = 1 + len(info.label_shape)
    if truth.ndim != expected_rank:
        raise SubmissionError(
            f"{labels}: 'labels' has rank {truth.ndim}, expected {expected_rank} for {task}"
        )
    predicted, _ = read_checked(pred, task, len(truth))
    if predicted.shape != truth.shape:
        raise SubmissionError(f"{pred}: predictions have shape {predicted.shape}, labels {truth.shape}")
    return SCORERS[task](truth, predicted)


def cli(args: argparse.Namespace) -> int:
    """`an2dl score --task cells|mars --pred CSV --labels NPZ`."""
    scores = score_files(args.task, Path(args.pred), Path(args.labels))
    print(format_scores(args.task, scores))
    return 0
