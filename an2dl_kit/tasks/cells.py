"""Blood-cell classification, end to end: data -> model -> training phases -> TTA -> leaderboard files.

`run` is the one place that composes the steps (the Kaggle kernel, the CLI and the benchmarks all call it):
find inputs -> load -> clean -> stratified split -> runtime -> model in the strategy scope -> phase 1
(backbone frozen; the only phase for a backbone trained from scratch) -> phase 2 (everything but BatchNorm)
-> plain and TTA predictions on validation (and test) -> submission.csv, submission.zip, model.keras,
history.csv, metrics.json and the PNG plots.

Profiles:
- `kaggle`: ConvNeXtBase with ImageNet weights, the reference solution's schedule (frozen phase then
  fine-tuning, batch 64, patience 10, AdamW + CosineDecayRestarts, 1,500-step first period), robustness
  augmentation with CutMix/MixUp, two augmented copies per epoch.
- `local`: a small CNN from scratch that trains in 10 minutes on two CPU cores.
- `smoke`: seconds, for tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from an2dl_kit.errors import KitError

TASK = "cells"
NUM_CLASSES = 8
MONITOR, MODE = "val_accuracy", "max"
LEARNING_CURVES_PNG = "learning_curves.png"
CONFUSION_PNG = "confusion_matrix.png"
PREVIEW_PNG = "augmentation_preview.png"
SUBMISSION_CSV = "submission.csv"
SUBMISSION_ZIP = "submission.zip"
METRICS_JSON = "metrics.json"
COMPARE_STEM = "compare_cells"
PREVIEW_IMAGES = 8
PREVIEW_COPIES = 8


@dataclass(frozen=True)
class Profile:
    """Everything that defines a cells run.

    Args:
        backbone: a key of `models.cells.BACKBONES`.
        weights: "imagenet", "none" or a local weights file.
        allow_random_fallback: train from random init when the weights cannot be had (else an error).
        image_size: resize inside the model to this side (None: the native 96).
        head_units: widths of the head's Dense stack.
        batch_size: per replica; the global batch grows with the replica count.
        val_fraction: stratified validation share.
        augment: a key of `augment.cells.PIPELINES`.
        repeats: augmented copies of the training set per epoch.
        cutmix_p, mixup_p: per-batch probabilities of CutMix and MixUp.
        workers: loader threads.
        epochs, learning_rate: phase 1 (the frozen-backbone phase, or the only phase from scratch).
        finetune_epochs, finetune_learning_rate: phase 2 (skipped from scratch or when 0).
        restart_epochs: the first CosineDecayRestarts period, in epochs (converted to steps).
        restart_t_mul: period growth factor after each restart.
        weight_decay: AdamW's decoupled weight decay.
        label_smoothing: of the categorical cross-entropy.
        patience: early-stopping patience in epochs.
        budget_s: training time budget in seconds for all phases (None: no limit).
        seed: the run's seed (split, initialisation, augmentation).
        tta: the TTA view set (a key of `tta.VIEW_SETS`) or comma-separated view names.
        warmup_epochs: a first from-scratch phase ramping the learning rate up linearly (0: none); with
            two or more, `fit_schedule_to_budget` can tell the start-up cost from the steady epoch time.
        fit_schedule_to_budget: after the warm-up, shrink the training phase's epochs (and its restart
            period with them) to what the time budget holds at the warm-up's pace, so the cosine schedule
            completes instead of being cut at a high learning rate on a slow or shared machine.
        precision: "auto" or a Keras policy name.
        max_train: keep at most this many training images (None: all); for smoke runs.
    """

    backbone: str
    weights: str
    allow_random_fallback: bool
    image_size: int | None
    head_units: tuple[int, ...]
    batch_size: int
    val_fraction: float
    augment: str
    repeats: int
    cutmix_p: float
    mixup_p: float
    workers: int
    epochs: int
    learning_rate: float
    finetune_epochs: int
    finetune_learning_rate: float
    restart_epochs: float
    restart_t_mul: float
    weight_decay: float
    label_smoothing: float
    patience: int
    budget_s: float | None
    seed: int
    tta: str
    warmup_epochs: int = 0
    fit_schedule_to_budget: bool = False
    precision: str = "auto"
    max_train: int | None = None


HEAD = (512, 256, 128, 64)
RESUME_IGNORES = ("budget_s", "workers", "tta")

PROFILES: dict[str, Profile] = {
    "kaggle": Profile(
        backbone="convnext_base", weights="imagenet", allow_random_fallback=False, image_size=None,
        head_units=HEAD, batch_size=64, val_fraction=0.1, augment="robust_strong", repeats=2, cutmix_p=0.25,
        mixup_p=0.25, workers=4, epochs=40, learning_rate=1e-4, finetune_epochs=40,
        finetune_learning_rate=1e-5, restart_epochs=4.0, restart_t_mul=2.0, weight_decay=1e-4,
        label_smoothing=0.1, patience=10, budget_s=10 * 3600, seed=42, tta="reference",
    ),
    "local": Profile(
        backbone="small_cnn", weights="none", allow_random_fallback=False, image_size=48,
        head_units=HEAD, batch_size=32, val_fraction=0.1, augment="robust", repeats=1, cutmix_p=0.0,
        mixup_p=0.0, workers=2, epochs=60, learning_rate=3e-3, finetune_epochs=0,
        finetune_learning_rate=0.0, restart_epochs=60.0, restart_t_mul=2.0, weight_decay=1e-4,
        label_smoothing=0.1, patience=60, budget_s=600.0, seed=42, tta="dihedral", warmup_epochs=2,
        fit_schedule_to_budget=True,
    ),
    "smoke": Profile(
        backbone="small_cnn", weights="none", allow_random_fallback=True, image_size=32,
        head_units=HEAD, batch_size=16, val_fraction=0.25, augment="robust", repeats=1, cutmix_p=0.5,
        mixup_p=0.5, workers=2, epochs=1, learning_rate=1e-3, finetune_epochs=0,
        finetune_learning_rate=0.0, restart_epochs=1.0, restart_t_mul=2.0, weight_decay=1e-4,
        label_smoothing=0.1, patience=1, budget_s=120.0, seed=0, tta="reference", max_train=64,
    ),
}


def resolve_profile(name: str, **overrides: Any) -> Profile:
    """PROFILES[name] with `overrides` (None values ignored); unknown names and fields are KitErrors."""
    if name not in PROFILES:
        raise KitError(f"profile {name!r}: unknown; choose one of {', '.join(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise KitError(f"cells profile override {', '.join(unknown)}: unknown field(s)")
    return dataclasses.replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})


# --- model, loss, metrics -----------------------------------------------------------------------------------


def make_metrics() -> list:
    """Accuracy, and precision/recall on the arg-max class (`top_k=1`): Keras' default 0.5 threshold on
    softmax outputs is what made the reference solution report recall 0.28 at accuracy 0.86. Macro F1 on
    the arg-max (threshold None)."""
    import keras

    return [
        keras.metrics.CategoricalAccuracy(name="accuracy"),
        keras.metrics.Precision(top_k=1, name="precision"),
        keras.metrics.Recall(top_k=1, name="recall"),
        keras.metrics.F1Score(average="macro", threshold=None, name="f1"),
    ]


def make_optimizer(learning_rate: float, steps_per_epoch: int, restart_epochs: float, t_mul: float,
                   weight_decay: float, warmup_epochs: float = 0.0):
    """AdamW on a cosine schedule with warm restarts whose first period is `restart_epochs` epochs; with
    `warmup_epochs`, instead a linear ramp from 0 to `learning_rate` over that many epochs."""
    import keras

    if warmup_epochs:
        schedule = keras.optimizers.schedules.CosineDecay(
            0.0, decay_steps=1, alpha=1.0, warmup_target=learning_rate,
            warmup_steps=max(1, round(warmup_epochs * steps_per_epoch)))
        return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)
    schedule = keras.optimizers.schedules.CosineDecayRestarts(
        initial_learning_rate=learning_rate,
        first_decay_steps=max(1, round(restart_epochs * steps_per_epoch)),
        t_mul=t_mul,
        m_mul=1.0,
        alpha=0.01,
    )
    return keras.optimizers.AdamW(learning_rate=schedule, weight_decay=weight_decay)


def compile_classifier(model, *, learning_rate: float, steps_per_epoch: int, profile: Profile,
                       jit_compile: bool | str = "auto", restart_epochs: float | None = None,
                       warmup_epochs: float = 0.0) -> None:
    """AdamW + cosine restarts, label-smoothed cross-entropy, the four metrics. `jit_compile=False` on CPU:
    XLA compilation costs tens of seconds there and buys no speed for these convolutions."""
    import keras

    model.compile(
        optimizer=make_optimizer(learning_rate, steps_per_epoch,
                                 profile.restart_epochs if restart_epochs is None else restart_epochs,
                                 profile.restart_t_mul, profile.weight_decay, warmup_epochs=warmup_epochs),
        loss=keras.losses.CategoricalCrossentropy(label_smoothing=profile.label_smoothing),
        metrics=make_metrics(),
        jit_compile=jit_compile,
    )


def class_weight_vector(labels: np.ndarray) -> np.ndarray:
    """sklearn's "balanced" class weights as a vector indexed by class."""
    from an2dl_kit.data.split import balanced_class_weights

    weights = balanced_class_weights(labels, NUM_CLASSES)
    return np.array([weights[c] for c in range(NUM_CLASSES)], np.float32)


def onehot(labels: np.ndarray) -> np.ndarray:
    return np.eye(NUM_CLASSES, dtype=np.float32)[np.asarray(labels).reshape(-1)]


# --- plots -----------------------------------------------------------------------------------------------


def plot_confusion(cm: np.ndarray, png: Path, title: str) -> Path:
    """Row-normalised confusion matrix with counts in the cells."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from an2dl_kit.data.io import CELLS_CLASSES
    from an2dl_kit.files import atomic_path

    cm = np.asarray(cm)
    rates = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(7.5, 6.5))
    ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for (i, j), count in np.ndenumerate(cm):
        ax.text(j, i, str(count), ha="center", va="center", color="white" if rates[i, j] > 0.5 else "black")
    ax.set_xticks(range(len(CELLS_CLASSES)), CELLS_CLASSES, rotation=45, ha="right")
    ax.set_yticks(range(len(CELLS_CLASSES)), CELLS_CLASSES)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    plt.close(fig)
    return png


def plot_augmentation_preview(images: np.ndarray, labels: np.ndarray, pipeline: str, png: Path,
                              seed: int = 0) -> Path:
    """One row per image: the original, then augmented copies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from an2dl_kit.augment.cells import preview
    from an2dl_kit.data.io import CELLS_CLASSES
    from an2dl_kit.files import atomic_path

    grid = preview(images, pipeline, copies=PREVIEW_COPIES, seed=seed)
    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.3 * cols, 1.3 * rows), squeeze=False)
    for (i, j), ax in np.ndenumerate(axes):
        ax.imshow(grid[i, j])
        ax.set_xticks([])
        ax.set_yticks([])
        if j == 0:
            ax.set_ylabel(CELLS_CLASSES[labels[i]], fontsize=7)
    axes[0, 0].set_title("original", fontsize=8)
    fig.suptitle(f"augmentation: {pipeline}", fontsize=9)
    fig.tight_layout()
    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return png


def _preview_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """One image of each class first (as far as `count` allows), chosen by seed."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return np.array(picks[:count])


# --- the run -----------------------------------------------------------------------------------------------


def _scores(labels: np.ndarray, probabilities: np.ndarray) -> dict:
    from an2dl_kit.metrics import cells_scores

    return cells_scores(labels, probabilities.argmax(axis=-1))


def _test_labels(test_path: Path | None, n_test: int) -> np.ndarray | None:
    """Known test labels beside the test set (synthetic data and the shared stand-ins only)."""
    from an2dl_kit.data.io import LABELS_FILE, load_labels

    if test_path is None or not (test_path.parent / LABELS_FILE).exists():
        return None
    labels = load_labels(test_path.parent / LABELS_FILE).reshape(-1)
    return labels if len(labels) == n_test else None


@dataclass(frozen=True)
class PhasePlan:
    """One phase of a run: what trains ("head", "all" or "all_but_bn"), for how long, how fast."""

    name: str
    epochs: int
    learning_rate: float
    trainable: str
    warmup: bool = False


def _phases(profile: Profile, pretrained: bool) -> list[PhasePlan]:
    """Pretrained: the head on a frozen backbone, then fine-tuning without BatchNorm. From scratch: an
    optional warm-up, then one phase training everything."""
    if not pretrained:
        phases = []
        if profile.warmup_epochs > 0:
            phases.append(PhasePlan("warmup", profile.warmup_epochs, profile.learning_rate, "all", warmup=True))
        return phases + [PhasePlan("train", profile.epochs, profile.learning_rate, "all")]
    phases = [PhasePlan("head", profile.epochs, profile.learning_rate, "head")]
    if profile.finetune_epochs > 0:
        phases.append(PhasePlan("finetune", profile.finetune_epochs, profile.finetune_learning_rate,
                                "all_but_bn"))
    return phases


def fitted_epochs(planned: int, remaining_s: float, epoch_seconds: list[float]) -> int:
    """The epochs of `planned` that fit in `remaining_s`, at least one, judged from the epoch times of the
    previous phase: the last one is the steady pace, and the first one's excess over it (tracing, loader
    start-up) is paid again once by the new phase."""
    if not math.isfinite(remaining_s) or not epoch_seconds or epoch_seconds[-1] <= 0:
        return planned
    steady = epoch_seconds[-1]
    startup = max(0.0, epoch_seconds[0] - steady) if len(epoch_seconds) > 1 else 0.0
    return max(1, min(planned, int((remaining_s - startup) / steady)))


def _epoch_seconds(history_csv: Path, phase: str) -> list[float]:
    import pandas as pd

    if not history_csv.exists():
        return []
    table = pd.read_csv(history_csv)
    return table.loc[table["phase"] == phase, "seconds"].astype(float).tolist()


def run(data: Path | None, out_dir: Path, profile: str = "local", *, budget_s: float | None = None,
        seed: int | None = None, provenance: dict | None = None, **overrides) -> dict:
    """Train a cells classifier and write every output into `out_dir`; returns the metrics dict.

    Args:
        data: folder searched for the competition files (None: $AN2DL_INPUT or /kaggle/input).
        out_dir: output folder (created).
        profile: a key of `PROFILES`.
        budget_s: training time budget (default: the profile's).
        seed: overrides the profile's seed.
        provenance: recorded as is in metrics.json (commit, kernel version...).
        overrides: any `Profile` field, e.g. backbone="mobilenet", weights="none".
    """
    from an2dl_kit import runtime as rt
    from an2dl_kit.augment.cells import CellsAugment
    from an2dl_kit.codabench import write_submission_zip
    from an2dl_kit.data.clean import clean_cells
    from an2dl_kit.data.discover import find_inputs
    from an2dl_kit.data.io import load_cells_test, load_cells_train
    from an2dl_kit.data.split import stratified_split
    from an2dl_kit.files import write_json
    from an2dl_kit.models import cells as models
    from an2dl_kit.pipeline import Batches
    from an2dl_kit.submission import write_cells_csv
    from an2dl_kit.training import HISTORY_FILE, MODEL_FILE, Deadline, fit_phase, plot_learning_curves, run_record
    from an2dl_kit.tta import predict_tta, resolve_views

    started, cpu_started = time.monotonic(), time.process_time()
    config = resolve_profile(profile, budget_s=budget_s, seed=seed, **overrides)
    resolve_views(config.tta)  # a bad view name fails before training, not after
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    inputs = find_inputs(data)
    train_path = inputs.require(TASK)
    rt.log(f"cells: loading {train_path}")
    raw = load_cells_train(train_path)
    cleaned, report = clean_cells(raw)
    for line in report.lines():
        rt.log(f"cells: {line}")
    train_idx, val_idx = stratified_split(cleaned.labels, config.val_fraction, config.seed)
    if config.max_train is not None:
        train_idx = np.sort(np.random.default_rng(config.seed).permutation(train_idx)[:config.max_train])
    x_train, y_train = cleaned.images[train_idx], cleaned.labels[train_idx]
    x_val, y_val = cleaned.images[val_idx], cleaned.labels[val_idx]
    test = load_cells_test(inputs.cells_test) if inputs.cells_test is not None else None
    rt.log(f"cells: {len(x_train)} training, {len(x_val)} validation, "
           f"{0 if test is None else len(test)} test images")

    runtime = rt.setup_runtime(config.seed, config.precision)
    rt.log(f"cells: {runtime.describe()}")
    batch = runtime.global_batch(config.batch_size)
    weights = class_weight_vector(y_train)
    augment = CellsAugment(config.augment, class_weights=weights, cutmix_p=config.cutmix_p,
                           mixup_p=config.mixup_p)
    train = Batches(x_train, y_train, batch_size=batch, transform=augment, seed=config.seed,
                    workers=config.workers, repeats=config.repeats, min_batch=runtime.replicas)
    val = (x_val.astype(np.float32), onehot(y_val))

    with runtime.scope():
        model, weights_used = models.build_classifier(
            config.backbone, config.weights, image_size=config.image_size, head_units=config.head_units,
            allow_random_fallback=config.allow_random_fallback)
    pretrained = weights_used != "none"
    rt.log(f"cells: {model.name}, {models.count_params(model):,} parameters, weights {weights_used}")

    deadline = Deadline(config.budget_s)
    # Settings that do not change training are left out, so a second session with less time left resumes.
    signature = repr({k: v for k, v in dataclasses.asdict(config).items() if k not in RESUME_IGNORES})
    phases, best = [], None
    for plan in _phases(config, pretrained):
        epochs, restart_epochs = plan.epochs, config.restart_epochs
        if config.fit_schedule_to_budget and phases:
            epochs = fitted_epochs(plan.epochs, deadline.remaining(),
                                   _epoch_seconds(out_dir / HISTORY_FILE, phases[-1].name))
            restart_epochs = config.restart_epochs * epochs / plan.epochs
            rt.log(f"cells: {epochs} of {plan.epochs} epochs fit the remaining {deadline.remaining():.0f} s; "
                   f"first restart after {restart_epochs:.1f} epochs")
        if plan.trainable == "head":
            models.freeze_backbone(model)
        elif plan.trainable == "all_but_bn":
            models.unfreeze_except_batchnorm(model)
        with runtime.scope():
            compile_classifier(model, learning_rate=runtime.scaled_lr(plan.learning_rate),
                               steps_per_epoch=train.num_batches, profile=config,
                               jit_compile=False if runtime.kind == "cpu" else "auto",
                               restart_epochs=restart_epochs,
                               warmup_epochs=plan.epochs if plan.warmup else 0.0)
        result = fit_phase(model, train, val, name=plan.name, epochs=epochs, out_dir=out_dir, monitor=MONITOR,
                           mode=MODE, patience=config.patience, deadline=deadline, best=best,
                           signature=signature)
        phases.append(result)
        if math.isfinite(result.best_value) and (best is None or result.best_value > best):
            best = result.best_value
    train_seconds, train_cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started

    files = []
    model_path = out_dir / MODEL_FILE
    if not model_path.exists():
        model.save(model_path)

    rt.log(f"cells: predicting validation with TTA views {config.tta}")
    tta_start = time.monotonic()
    val_plain = predict_tta(model, x_val, views="none")
    val_tta = predict_tta(model, x_val, views=config.tta)
    validation, validation_tta = _scores(y_val, val_plain), _scores(y_val, val_tta)
    test_scores: dict[str, Any] = {}
    if test is not None:
        test_probs = predict_tta(model, test, views=config.tta)
        write_cells_csv(out_dir / SUBMISSION_CSV, test_probs.argmax(axis=-1))
        files.append(SUBMISSION_CSV)
        truth = _test_labels(inputs.cells_test, len(test))
        if truth is not None:
            test_scores["test"] = _scores(truth, predict_tta(model, test, views="none"))
            test_scores["test_tta"] = _scores(truth, test_probs)
    tta_seconds = time.monotonic() - tta_start

    write_submission_zip(model_path, out_dir / SUBMISSION_ZIP, resolve_views(config.tta))
    files += [SUBMISSION_ZIP, MODEL_FILE]
    if (out_dir / HISTORY_FILE).exists():
        plot_learning_curves(out_dir / HISTORY_FILE, out_dir / LEARNING_CURVES_PNG)
        files += [HISTORY_FILE, LEARNING_CURVES_PNG]
    plot_confusion(validation_tta["confusion_matrix"], out_dir / CONFUSION_PNG,
                   f"validation with TTA ({config.tta}): accuracy {validation_tta['accuracy']:.4f}")
    rows = _preview_rows(y_train, PREVIEW_IMAGES, config.seed)
    plot_augmentation_preview(x_train[rows], y_train[rows], config.augment, out_dir / PREVIEW_PNG, config.seed)
    files += [CONFUSION_PNG, PREVIEW_PNG, METRICS_JSON]

    metrics = {
        **run_record(task=TASK, profile=profile, config=config, runtime=runtime, provenance=provenance,
                     phases=phases, validation=validation, validation_tta=validation_tta, score="accuracy",
                     files=files, started=started),
        # CPU-seconds of all threads: on a shared machine the wall clock alone understates the compute used.
        "seconds": {"training": round(train_seconds, 2), "training_cpu": round(train_cpu_seconds, 2),
                    "predict_tta": round(tta_seconds, 2),
                    "phases": {p.name: p.seconds for p in phases}},
        "backbone": config.backbone,
        "weights_used": weights_used,
        "params": models.count_params(model),
        "tta_views": list(resolve_views(config.tta)),
        "class_weights": weights.tolist(),
        "cleaning": {"kept": len(report.kept), "removed": report.removed},
        "samples": {"train": len(x_train), "validation": len(x_val), "test": 0 if test is None else len(test)},
        **test_scores,
    }
    write_json(out_dir / METRICS_JSON, metrics)
    rt.log(f"cells: done in {metrics['seconds_total']:.0f} s")
    return metrics


# --- command line -----------------------------------------------------------------------------------------


def summary_lines(metrics: dict) -> list[str]:
    def line(label: str, scores: dict) -> str:
        return (f"{label:<16} accuracy {scores['accuracy']:.4f}  precision {scores['precision']:.4f}  "
                f"recall {scores['recall']:.4f}  F1 {scores['f1']:.4f}")

    lines = [line("validation", metrics["validation"]), line("validation+TTA", metrics["validation_tta"]),
             f"TTA gain {metrics['tta_gain']:+.4f} ({len(metrics['tta_views'])} views)"]
    if "test" in metrics:
        lines += [line("test", metrics["test"]), line("test+TTA", metrics["test_tta"])]
    return lines


def cli(args: argparse.Namespace) -> int:
    """`an2dl train cells --data DIR --out DIR --profile P [--budget S] [--seed N] [--backbone B]
    [--weights W]`."""
    metrics = run(args.data, args.out, args.profile, budget_s=args.budget, seed=args.seed,
                  backbone=getattr(args, "backbone", None), weights=getattr(args, "weights", None))
    for text in summary_lines(metrics):
        print(text)
    print(f"wrote to {args.out}: {', '.join(metrics['files'])}")
    return 0


def compare_row(metrics: dict) -> dict:
    row = {"backbone": metrics["backbone"], "weights": metrics["weights_used"]}
    for key in ("accuracy", "precision", "recall", "f1"):
        row[key] = metrics["validation"][key]
    row["accuracy_tta"] = metrics["validation_tta"]["accuracy"]
    if "test" in metrics:
        row["test_accuracy"] = metrics["test"]["accuracy"]
        row["test_accuracy_tta"] = metrics["test_tta"]["accuracy"]
    row["params"] = metrics["params"]
    row["train_seconds"] = metrics["seconds"]["training"]
    return row


def compare_cli(args: argparse.Namespace) -> int:
    """`an2dl compare cells --backbones a,b --profile P [--budget S]`: one run per backbone, same budget,
    then a Markdown + CSV table."""
    from an2dl_kit.files import write_table
    from an2dl_kit.models.cells import BACKBONES

    names = [name.strip() for name in (args.backbones or "").split(",") if name.strip()]
    if not names:
        raise KitError(f"--backbones: give a comma-separated list, e.g. {','.join(list(BACKBONES)[:2])}")
    for name in names:
        if name not in BACKBONES:
            raise KitError(f"--backbones {name}: unknown backbone; choose from {', '.join(BACKBONES)}")
    rows = []
    for name in names:
        # A backbone without published ImageNet weights trains from scratch even under `kaggle`.
        weights = None if BACKBONES[name].imagenet else "none"
        metrics = run(args.data, Path(args.out) / name, args.profile, budget_s=args.budget, backbone=name,
                      weights=weights)
        rows.append(compare_row(metrics))
    md, csv = write_table(rows, Path(args.out) / COMPARE_STEM)
    print(md.read_text(), end="")
    print(f"wrote {md} and {csv}")
    return 0
