"""Mars terrain segmentation, end to end: data -> enhanced U-Net -> training -> TTA -> leaderboard CSV.

`run` is the one place that composes the steps (the Kaggle kernel, the CLI, `compare` and the benchmarks
all call it): find inputs -> load -> clean -> stratified split (big-rock tiles reach validation) ->
runtime -> model in the strategy scope -> one training phase with the leaderboard mIoU monitored, adaptive
class weights and a cosine learning rate that reaches its floor when the epochs or the time budget run out
-> plain and flip-TTA predictions on validation and test -> submission.csv, model.keras, history.csv,
metrics.json and the PNG plots.

Profiles:
- `kaggle`: the full-width network, the reference solution's long schedule.
- `local`: a narrower network that trains in 15 minutes on two CPU cores.
- `smoke`: seconds, for tests.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import keras
import numpy as np

from an2dl_kit.errors import KitError
from an2dl_kit.pipeline import Batches

TASK = "mars"
NUM_CLASSES = 5
BIG_ROCK = 4
MONITOR, MODE = "val_miou", "max"
SUBMISSION_CSV = "submission.csv"
METRICS_JSON = "metrics.json"
LEARNING_CURVES_PNG = "learning_curves.png"
IOU_PNG = "class_iou.png"
OVERLAY_PNG = "predictions.png"
COMPARE_STEM = "compare_losses"
DEFAULT_LOSSES = "cce,dice,tversky,focal"
OVERLAY_ROWS = 6
# Tiles per prediction chunk: bounds the memory of the probability maps (the course test set has 10,022).
PREDICT_CHUNK = 1024
LR_FLOOR = 0.02
# Class colours (RGB 0-1) for the overlays: background, soil, bedrock, sand, big rock.
COLOURS = np.array([[0, 0, 0], [0.85, 0.55, 0.25], [0.55, 0.55, 0.75], [0.95, 0.85, 0.3], [0.9, 0.1, 0.1]])
OVERLAY_ALPHA = 0.45


@dataclass(frozen=True)
class Profile:
    """Everything that defines a Mars run.

    Args:
        architecture: a key of `models.mars.ARCHITECTURES` ("enhanced" or the "plain" baseline).
        width: filter-count multiplier of the network.
        fused_head: fusion block and head computed as one `FusionHead` (same function, faster on CPU).
        dropout: spatial dropout in the deepest encoder blocks.
        loss: registered loss terms joined by "+" (see `losses.LOSSES`).
        ignore_background: leave background-labelled pixels out of the loss.
        never_background: predict (and score during training) the argmax over classes 1-4 only.
        adaptive_weights: rewrite the class weights after each epoch from validation IoU.
        adaptive_alpha: alpha of w_k = 1 / (IoU_k + alpha).
        adaptive_momentum: share of the previous weights kept at each update.
        big_rock_cap: big rock's weight is at most this multiple of the largest other weight.
        augment: a key of `augment.mars.PIPELINES`.
        augment_mode: "online" (new draws every batch) or "union" (originals + copies drawn once).
        repeats: passes over the training set per epoch ("union": the originals and repeats-1 copies).
        epoch_parts: split every pass into this many epochs (see `PassSlices`).
        oversample_big_rock: each tile holding big rock appears this many times in the training set.
        batch_size: per replica; the global batch grows with the replica count.
        val_fraction: stratified validation share.
        workers: loader threads.
        epochs: most epochs.
        learning_rate: AdamW's peak rate (scaled by sqrt(replicas)), decayed by cosine to LR_FLOOR of it.
        weight_decay: AdamW's decoupled weight decay.
        patience: early-stopping patience in epochs.
        budget_s: training time budget in seconds (None: no limit).
        seed: the run's seed (split, initialisation, augmentation).
        tta: TTA views (a key of `tta.VIEW_SETS` or comma-separated view names); undone on the maps.
        cleanup: majority-filter window for the submitted masks (0: off; "auto" below picks it).
        auto_cleanup: use the `cleanup` filter only if it does not lower validation mIoU.
        precision: "auto" or a Keras policy name.
        max_train: keep at most this many training tiles (None: all); for smoke runs.
        run_eagerly: skip graph tracing (about a minute for this network on a busy CPU); smoke runs only.
    """

    architecture: str
    width: float
    fused_head: bool
    dropout: float
    loss: str
    ignore_background: bool
    never_background: bool
    adaptive_weights: bool
    adaptive_alpha: float
    adaptive_momentum: float
    big_rock_cap: float
    augment: str
    augment_mode: str
    repeats: int
    epoch_parts: int
    oversample_big_rock: int
    batch_size: int
    val_fraction: float
    workers: int
    epochs: int
    learning_rate: float
    weight_decay: float
    patience: int
    budget_s: float | None
    seed: int
    tta: str
    cleanup: int
    auto_cleanup: bool
    precision: str = "auto"
    max_train: int | None = None
    run_eagerly: bool = False


_COMMON = dict(
    architecture="enhanced", dropout=0.1, loss="cce", ignore_background=True, never_background=True,
    adaptive_weights=True, adaptive_alpha=0.2, adaptive_momentum=0.5, big_rock_cap=2.0, augment="default",
    augment_mode="online", val_fraction=0.15, weight_decay=1e-4, seed=42, tta="identity,flip_lr",
    cleanup=5, auto_cleanup=True,
)
PROFILES: dict[str, Profile] = {
    "kaggle": Profile(**_COMMON, width=1.0, fused_head=False, repeats=1, epoch_parts=1, oversample_big_rock=3,
                      batch_size=32, workers=4, epochs=150, learning_rate=1e-3, patience=25, budget_s=10 * 3600),
    # A few passes fit in 15 minutes on two cores: small batches (more updates per pass), half-pass epochs
    # (finer budget stops and checkpoints), only the geometric augmentations (the photometric and distortion
    # ones pay off over long schedules only), and a Dice term, whose per-class balance lifts sand and big
    # rock sooner than cross-entropy alone (test mIoU 0.598 against 0.574 in one 15-minute run each).
    "local": Profile(**{**_COMMON, "augment": "light", "loss": "cce+dice"}, width=0.25, fused_head=True,
                     repeats=1, epoch_parts=2, oversample_big_rock=3, batch_size=8, workers=1, epochs=40,
                     learning_rate=2e-3, patience=40, budget_s=900.0),
    "smoke": Profile(**{**_COMMON, "augment": "light", "val_fraction": 0.25, "seed": 0}, width=0.125,
                     fused_head=True, repeats=1, epoch_parts=1, oversample_big_rock=1, batch_size=16, workers=1,
                     epochs=1, learning_rate=1e-3, patience=1, budget_s=120.0, max_train=16, run_eagerly=True),
}
AUGMENT_MODES = ("online", "union")
# Fields that do not change the training trajectory: a re-run that differs only in them (e.g. a second
# Kaggle session with less time left) resumes the interrupted training instead of starting over.
RESUME_IGNORES = ("budget_s", "workers", "tta", "cleanup", "auto_cleanup")


def resolve_profile(name: str, **overrides: Any) -> Profile:
    """PROFILES[name] with `overrides` (None values ignored); unknown names, fields and values are KitErrors."""
    from an2dl_kit.augment.mars import PIPELINES
    from an2dl_kit.losses import parse_loss
    from an2dl_kit.models.mars import ARCHITECTURES

    if name not in PROFILES:
        raise KitError(f"profile {name!r}: unknown; choose one of {', '.join(PROFILES)}")
    fields = {f.name for f in dataclasses.fields(Profile)}
    unknown = sorted(set(overrides) - fields)
    if unknown:
        raise KitError(f"mars profile override {', '.join(unknown)}: unknown field(s)")
    config = dataclasses.replace(PROFILES[name], **{k: v for k, v in overrides.items() if v is not None})
    try:
        parse_loss(config.loss)
    except ValueError as error:
        raise KitError(f"--loss {config.loss}: {error}") from None
    checks = (("architecture", ARCHITECTURES), ("augment", PIPELINES), ("augment_mode", AUGMENT_MODES))
    for field, allowed in checks:
        if getattr(config, field) not in allowed:
            raise KitError(f"mars {field} {getattr(config, field)!r}: unknown; choose from {', '.join(allowed)}")
    return config


def resume_signature(config: Profile) -> str:
    """The configuration a training backup must match to be resumed (see RESUME_IGNORES)."""
    return repr({k: v for k, v in dataclasses.asdict(config).items() if k not in RESUME_IGNORES})


# --- training pieces ------------------------------------------------------------------------------------------


def to_inputs(images: np.ndarray) -> np.ndarray:
    """Tiles (N, 64, 128) in 0-255 -> network inputs (N, 64, 128, 1) float32 in [0, 1]."""
    return (np.asarray(images, np.float32) / 255.0)[..., None]


class BudgetCosine(keras.callbacks.Callback):
    """Cosine learning-rate decay, batch by batch, to `floor` x the peak over the epochs that will run.

    A run ends after `epochs` or when the time budget stops it, whichever comes first. After every epoch
    this re-plans how many epochs fit in the time left, by the budget stop's own rule (the slowest epoch so
    far times `training.EPOCH_TIME_MARGIN`), so a budget-stopped run still ends its last epoch near the
    floor, where its best weights usually are. Progress never goes back, so the rate never rises again.

    Args:
        peak: the learning rate at the start.
        epochs: the most epochs.
        deadline: the run's `training.Deadline`.
        steps_per_epoch: batches per epoch.
        floor: the final rate as a fraction of `peak`.
    """

    def __init__(self, peak: float, epochs: int, deadline, steps_per_epoch: int, floor: float = LR_FLOOR):
        super().__init__()
        self.peak, self.epochs, self.deadline = peak, epochs, deadline
        self.steps_per_epoch = max(steps_per_epoch, 1)
        self.floor = floor
        self.planned = epochs
        self.progress = 0.0
        self.slowest = 0.0

    def rate(self, progress: float) -> float:
        return self.peak * (self.floor + (1 - self.floor) * 0.5 * (1 + np.cos(np.pi * min(progress, 1.0))))

    def on_epoch_begin(self, epoch, logs=None):
        self.epoch = epoch
        self.epoch_start = time.monotonic()

    def on_train_batch_begin(self, batch, logs=None):
        progress = (self.epoch + batch / self.steps_per_epoch) / max(self.planned, 1)
        self.progress = max(self.progress, progress)
        self.model.optimizer.learning_rate.assign(self.rate(self.progress))

    def on_epoch_end(self, epoch, logs=None):
        from an2dl_kit.training import EPOCH_TIME_MARGIN

        self.slowest = max(self.slowest, time.monotonic() - self.epoch_start)
        remaining = self.deadline.remaining()
        if np.isfinite(remaining):
            fits = int(max(remaining, 0.0) // (self.slowest * EPOCH_TIME_MARGIN))
            self.planned = min(self.epochs, epoch + 1 + fits)
        if logs is not None:
            logs["learning_rate"] = float(self.rate(self.progress))


class PassSlices(Batches):
    """`Batches` whose epoch is one of `parts` slices of a shuffled pass over the training set.

    Every tile still appears once per pass, but epochs are shorter: where a pass takes minutes (the `local`
    profile on a CPU) the budget stop, the best-model checkpoint, early stopping and the adaptive class
    weights all act `parts` times per pass, and a budget-stopped run loses at most a slice, not a pass.

    Args:
        parts: slices per pass (1: plain `Batches`).
        *args, **kwargs: as `pipeline.Batches`.
    """

    def __init__(self, *args, parts: int = 1, **kwargs):
        self.parts = max(int(parts), 1)  # read by _epoch_order, which Batches.__init__ calls
        super().__init__(*args, **kwargs)

    def _epoch_order(self) -> np.ndarray:
        pass_index, part = divmod(self.epoch, self.parts)
        order = np.tile(np.arange(len(self.x)), self.repeats)
        if self.shuffle:
            np.random.default_rng([self.seed, pass_index, 2**31]).shuffle(order)
        return np.array_split(order, self.parts)[part]


def training_batches(x: np.ndarray, y: np.ndarray, config: Profile, batch_size: int, min_batch: int = 1):
    """The training `Batches`: big-rock oversampling, then online augmentation or a union of copies."""
    from an2dl_kit.augment.mars import batch_transform, oversample, union_of_copies

    order = oversample(y, BIG_ROCK, config.oversample_big_rock)
    x, y = x[order], y[order]
    transform, repeats = batch_transform(config.augment), config.repeats
    if config.augment_mode == "union":
        x, y = union_of_copies(x, y, config.repeats - 1, config.augment, config.seed)
        transform, repeats = None, 1
    return PassSlices(x, y, batch_size=batch_size, transform=transform, seed=config.seed,
                      workers=config.workers, repeats=repeats, parts=config.epoch_parts, min_batch=min_batch)


def build_and_compile(config: Profile, runtime):
    """The model, compiled with AdamW, the configured loss and the leaderboard metrics; returns (model, loss)."""
    from an2dl_kit.keras_metrics import mars_metrics
    from an2dl_kit.losses import SegmentationLoss
    from an2dl_kit.models.mars import build_model

    model = build_model(config.architecture, width=config.width, dropout=config.dropout,
                        fused_head=config.fused_head)
    loss = SegmentationLoss(config.loss, ignore_background=config.ignore_background)
    model.compile(
        optimizer=keras.optimizers.AdamW(runtime.scaled_lr(config.learning_rate), weight_decay=config.weight_decay),
        loss=loss,
        metrics=mars_metrics(NUM_CLASSES, never_background=config.never_background),
        # XLA compilation costs minutes on CPU and slows these convolutions down there.
        jit_compile=False if runtime.kind == "cpu" or config.run_eagerly else "auto",
        run_eagerly=config.run_eagerly,
    )
    return model, loss


# --- inference ------------------------------------------------------------------------------------------------


def predict_maps(model, x: np.ndarray, views: tuple[str, ...], batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(identity-view probabilities, TTA mean probabilities) in one pass over the views; each view is
    undone on its probability maps before the mean."""
    from an2dl_kit.tta import predict_tta

    total, identity = None, None
    for view in views:
        probs = predict_tta(model, x, (view,), batch_size=batch_size, dense=True)
        identity = probs if view == "identity" else identity
        total = probs if total is None else total + probs
    if identity is None:
        identity = predict_tta(model, x, ("identity",), batch_size=batch_size, dense=True)
    return identity, total / len(views)


def predict_labels(model, x: np.ndarray, views: tuple[str, ...], cleanup: int, never_background: bool,
                   batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(plain labels, TTA labels), chunk by chunk so that the course's 10,022 test tiles never hold all
    their probability maps in memory at once."""
    from an2dl_kit.postprocess import to_labels

    plain, merged = [], []
    for start in range(0, len(x), PREDICT_CHUNK):
        identity, mean = predict_maps(model, x[start:start + PREDICT_CHUNK], views, batch_size)
        plain.append(to_labels(identity, cleanup, allow_background=not never_background))
        merged.append(to_labels(mean, cleanup, allow_background=not never_background))
    return np.concatenate(plain), np.concatenate(merged)


# --- plots ---------------------------------------------------------------------------------------------------


def _save(fig, png: Path, dpi: int = 110) -> Path:
    import matplotlib.pyplot as plt

    from an2dl_kit.files import atomic_path

    with atomic_path(png) as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    plt.close(fig)
    return png


def plot_class_iou(named_scores: dict[str, dict], png: Path) -> Path:
    """Grouped bars: IoU of each class (and the mIoU) for each named set of scores."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    return _save(fig, png)


def _overlay(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    grey = np.repeat(np.clip(image, 0, 1)[..., None], 3, axis=-1)
    coloured = COLOURS[mask]
    alpha = np.where(mask[..., None] > 0, OVERLAY_ALPHA, 0.0)
    return grey * (1 - alpha) + coloured * alpha


def overlay_rows(masks: np.ndarray, count: int, seed: int) -> np.ndarray:
    """Tiles to show: big-rock tiles first (up to a third of the rows), the rest drawn by seed."""
    rng = np.random.default_rng(seed)
    rare = np.flatnonzero((masks == BIG_ROCK).any(axis=(1, 2)))
    picks = list(rng.permutation(rare)[:max(count // 3, 1)])
    rest = rng.permutation(np.setdiff1d(np.arange(len(masks)), picks))
    return np.array((picks + list(rest))[:count], dtype=np.int64)


def plot_overlays(images: np.ndarray, truth: np.ndarray, predicted: np.ndarray, png: Path) -> Path:
    """Rows of image | truth | prediction, class colours over the grey tile (background uncoloured)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from an2dl_kit.data.io import MARS_CLASSES

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
    handles = [Patch(color=COLOURS[k], label=MARS_CLASSES[k]) for k in range(1, NUM_CLASSES)]
    fig.legend(handles=handles, loc="lower center", ncol=4, fontsize=8)
    fig.tight_layout(rect=(0, 0.05, 1, 1))
    return _save(fig, png, dpi=90)


# --- the run -------------------------------------------------------------------------------------------------


def _test_labels(mars_path: Path, n_test: int) -> np.ndarray | None:
    """Known test labels beside the competition file (synthetic data and the shared stand-ins only)."""
    from an2dl_kit.data.io import LABELS_FILE, load_labels

    path = mars_path.parent / LABELS_FILE
    if not path.exists():
        return None
    labels = load_labels(path)
    return labels if labels.shape == (n_test, *labels.shape[1:]) and labels.ndim == 3 else None


def run(data: Path | None, out_dir: Path, profile: str = "local", *, budget_s: float | None = None,
        seed: int | None = None, provenance: dict | None = None, **overrides) -> dict:
    """Train a Mars segmenter and write every output into `out_dir`; returns the metrics dict.

    Args:
        data: folder searched for mars_for_students.npz (None: $AN2DL_INPUT or /kaggle/input).
        out_dir: output folder (created).
        profile: a key of `PROFILES`.
        budget_s: training time budget (default: the profile's).
        seed: overrides the profile's seed.
        provenance: recorded as is in metrics.json (commit, kernel version...).
        overrides: any `Profile` field, e.g. loss="cce+dice", width=0.5.
    """
    from an2dl_kit import runtime as rt
    from an2dl_kit.data.clean import clean_mars
    from an2dl_kit.data.discover import find_inputs
    from an2dl_kit.data.io import load_mars
    from an2dl_kit.data.split import mars_strata, stratified_split
    from an2dl_kit.files import write_json
    from an2dl_kit.keras_metrics import iou_log_keys
    from an2dl_kit.losses import AdaptiveClassWeights
    from an2dl_kit.metrics import mars_scores
    from an2dl_kit.postprocess import to_labels
    from an2dl_kit.submission import write_mars_csv
    from an2dl_kit.training import HISTORY_FILE, MODEL_FILE, Deadline, fit_phase, plot_learning_curves, run_record
    from an2dl_kit.tta import resolve_views

    started, cpu_started = time.monotonic(), time.process_time()
    config = resolve_profile(profile, budget_s=budget_s, seed=seed, **overrides)
    views = resolve_views(config.tta)  # a bad view name fails before training, not after
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    mars_path = find_inputs(data).require(TASK)
    rt.log(f"mars: loading {mars_path}")
    cleaned, report = clean_mars(load_mars(mars_path))
    for line in report.lines():
        rt.log(f"mars: {line}")
    train_idx, val_idx = stratified_split(mars_strata(cleaned.masks), config.val_fraction, config.seed)
    if config.max_train is not None:
        train_idx = np.sort(np.random.default_rng(config.seed).permutation(train_idx)[:config.max_train])
    x_train, y_train = to_inputs(cleaned.images[train_idx]), cleaned.masks[train_idx]
    x_val, y_val = to_inputs(cleaned.images[val_idx]), cleaned.masks[val_idx]
    x_test = to_inputs(cleaned.test)
    rt.log(f"mars: {len(x_train)} training, {len(x_val)} validation, {len(x_test)} test tiles")

    runtime = rt.setup_runtime(config.seed, config.precision)
    rt.log(f"mars: {runtime.describe()}")
    batch = runtime.global_batch(config.batch_size)
    train = training_batches(x_train, y_train, config, batch, min_batch=runtime.replicas)
    val = Batches(x_val, y_val, batch_size=batch, shuffle=False)
    with runtime.scope():
        model, loss = build_and_compile(config, runtime)
    params = model.count_params()
    rt.log(f"mars: {model.name} width {config.width}, {params:,} parameters, loss {config.loss}"
           f"{' (background ignored)' if config.ignore_background else ''}")

    deadline = Deadline(config.budget_s)
    callbacks = [BudgetCosine(runtime.scaled_lr(config.learning_rate), config.epochs, deadline, train.num_batches)]
    adaptive = None
    if config.adaptive_weights:
        adaptive = AdaptiveClassWeights(loss, iou_log_keys(NUM_CLASSES), alpha=config.adaptive_alpha,
                                        caps={BIG_ROCK: config.big_rock_cap}, momentum=config.adaptive_momentum)
        callbacks.append(adaptive)
    phase = fit_phase(model, train, val, name="train", epochs=config.epochs, out_dir=out_dir, monitor=MONITOR,
                      mode=MODE, patience=config.patience, deadline=deadline,
                      signature=resume_signature(config), callbacks=tuple(callbacks))
    train_seconds, train_cpu_seconds = time.monotonic() - started, time.process_time() - cpu_started
    # On a shared machine the wall-clock budget buys less than its nominal CPU time; record both.
    load = dict(zip(("1min", "5min", "15min"), np.round(os.getloadavg(), 2).tolist(), strict=True))
    model_path = out_dir / MODEL_FILE
    if not model_path.exists():
        model.save(model_path)

    rt.log(f"mars: predicting validation and test with TTA views {', '.join(views)}")
    predict_start = time.monotonic()
    labels = dict(allow_background=not config.never_background)
    val_identity, val_mean = predict_maps(model, x_val, views, batch)
    val_plain, val_tta = to_labels(val_identity, **labels), to_labels(val_mean, **labels)
    validation, validation_tta = mars_scores(y_val, val_plain), mars_scores(y_val, val_tta)
    cleanup, extra_scores = 0, {}
    if config.cleanup > 1:
        validation_cleanup = mars_scores(y_val, to_labels(val_mean, config.cleanup, **labels))
        extra_scores["validation_tta_cleanup"] = validation_cleanup
        if not config.auto_cleanup or validation_cleanup["miou"] >= validation_tta["miou"]:
            cleanup = config.cleanup
        rt.log(f"mars: majority filter {config.cleanup}x{config.cleanup}: validation mIoU "
               f"{validation_tta['miou']:.4f} -> {validation_cleanup['miou']:.4f}; "
               f"{'used' if cleanup else 'not used'}")
    test_plain, test_tta = predict_labels(model, x_test, views, cleanup, config.never_background, batch)
    predict_seconds = time.monotonic() - predict_start

    files = [SUBMISSION_CSV, MODEL_FILE]
    write_mars_csv(out_dir / SUBMISSION_CSV, test_tta)
    truth = _test_labels(mars_path, len(x_test))
    if truth is not None:
        extra_scores.update(test=mars_scores(truth, test_plain), test_tta=mars_scores(truth, test_tta))

    if (out_dir / HISTORY_FILE).exists():
        plot_learning_curves(out_dir / HISTORY_FILE, out_dir / LEARNING_CURVES_PNG)
        files += [HISTORY_FILE, LEARNING_CURVES_PNG]
    bars = {"validation": validation, "validation + TTA": validation_tta}
    bars.update({"test + TTA": extra_scores["test_tta"]} if "test_tta" in extra_scores else {})
    plot_class_iou(bars, out_dir / IOU_PNG)
    rows = overlay_rows(y_val, OVERLAY_ROWS, config.seed)
    plot_overlays(x_val[rows, ..., 0], y_val[rows], val_tta[rows], out_dir / OVERLAY_PNG)
    files += [IOU_PNG, OVERLAY_PNG, METRICS_JSON]

    metrics = {
        **run_record(task=TASK, profile=profile, config=config, runtime=runtime, provenance=provenance,
                     phases=[phase], validation=validation, validation_tta=validation_tta, score="miou",
                     files=files, started=started),
        # "train" runs from the start (loading and building included); the phase's own fit time is in phases.
        "seconds": {"train": round(train_seconds, 2), "train_cpu": round(train_cpu_seconds, 2),
                    "predict_tta": round(predict_seconds, 2)},
        "machine": {"cpu_count": os.cpu_count(), "load_average_after_training": load},
        "architecture": config.architecture,
        "params": params,
        "tta_views": list(views),
        "cleanup": cleanup,
        "class_weights": [float(w) for w in np.asarray(loss.class_weights)],
        "class_weight_history": adaptive.history if adaptive else [],
        "cleaning": {"kept": len(report.kept), "removed": report.removed},
        "samples": {"train": len(x_train), "validation": len(x_val), "test": len(x_test)},
        **extra_scores,
    }
    write_json(out_dir / METRICS_JSON, metrics)
    rt.log(f"mars: done in {metrics['seconds_total']:.0f} s")
    return metrics


# --- command line ---------------------------------------------------------------------------------------------


def _score_line(label: str, scores: dict) -> str:
    per_class = "  ".join(f"{name} {value:.3f}" for name, value in scores["iou"].items())
    return f"{label:<16} mIoU {scores['miou']:.4f}  accuracy {scores['pixel_accuracy']:.4f}  IoU {per_class}"


def summary_lines(metrics: dict) -> list[str]:
    lines = [_score_line("validation", metrics["validation"]),
             _score_line("validation+TTA", metrics["validation_tta"]),
             f"TTA gain {metrics['tta_gain']:+.4f} ({len(metrics['tta_views'])} views); "
             f"majority filter {metrics['cleanup'] or 'off'}"]
    if "test" in metrics:
        lines += [_score_line("test", metrics["test"]), _score_line("test+TTA", metrics["test_tta"])]
    return lines


def cli(args: argparse.Namespace) -> int:
    """`an2dl train mars --data DIR --out DIR --profile P [--budget S] [--seed N] [--loss L]`."""
    metrics = run(args.data, args.out, args.profile, budget_s=args.budget, seed=args.seed,
                  loss=getattr(args, "loss", None))
    for text in summary_lines(metrics):
        print(text)
    print(f"wrote to {args.out}: {', '.join(metrics['files'])}")
    return 0


def compare_row(name: str, metrics: dict) -> dict:
    """One row of the loss table: validation (with TTA) mIoU, accuracy, per-class IoU, time."""
    scores = metrics["validation_tta"]
    row = {"loss": name, "miou": scores["miou"], "accuracy": scores["pixel_accuracy"]}
    row.update({f"iou_{k.replace(' ', '_')}": v for k, v in scores["iou"].items()})
    if "test_tta" in metrics:
        row["test_miou"] = metrics["test_tta"]["miou"]
    row["epochs"] = metrics["phases"][0]["epochs_run"]
    row["train_seconds"] = metrics["seconds"]["train"]
    return row


def compare_cli(args: argparse.Namespace) -> int:
    """`an2dl compare mars --losses cce,dice,tversky,focal --profile P [--budget S]`: one run per loss with
    the same budget and seed, then a Markdown + CSV table (the reference report's Table 2)."""
    from an2dl_kit.files import write_table
    from an2dl_kit.losses import parse_loss

    names = [name.strip() for name in (args.losses or DEFAULT_LOSSES).split(",") if name.strip()]
    for name in names:
        try:
            parse_loss(name)
        except ValueError as error:
            raise KitError(f"--losses {name}: {error}") from None
    rows = []
    for name in names:
        metrics = run(args.data, Path(args.out) / name.replace("+", "_"), args.profile, budget_s=args.budget,
                      loss=name)
        rows.append(compare_row(name, metrics))
    md, csv = write_table(rows, Path(args.out) / COMPARE_STEM)
    print(md.read_text(), end="")
    print(f"wrote {md} and {csv}")
    return 0
