"""Mars terrain segmentation: what the runner (`tasks/runner.py`) needs that the cells task does not.

One training phase of the enhanced U-Net from scratch, with the leaderboard mIoU monitored, big-rock
oversampling, online augmentation of image and mask together, adaptive class weights after every epoch and a
cosine learning rate planned against the time budget. Predictions never take the background class; a majority
filter is kept only if it does not lower validation mIoU. Outputs: submission.csv (the course's `y_to_df`
layout), per-class IoU bars, prediction overlays and an augmentation preview. Profiles: `tasks/mars_config.py`.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from an2dl_kit.pipeline import Batches
from an2dl_kit.task import BIG_ROCK, MARS
from an2dl_kit.tasks.runner import Loaded, Phase, Results, RunData, TaskHooks, TrainingPlan
from an2dl_kit.training import Schedule

SUBMISSION_CSV = "submission.csv"
IOU_PNG = "class_iou.png"
OVERLAY_PNG = "predictions.png"
PREVIEW_PNG = "augmentation_preview.png"
OVERLAY_ROWS = 6
PREVIEW_TILES = 4
PREVIEW_COPIES = 4


class PassSlices(Batches):
    """`Batches` whose epoch is one of `parts` slices of a shuffled pass over the training set.

    Epochs are shorter than a pass: where a pass takes minutes (the `local` profile on a CPU) the budget stop,
    the best-model checkpoint, early stopping and the adaptive class weights all act `parts` times per pass,
    and a budget-stopped run loses at most a slice, not a pass. Every slice holds len // parts tiles, so
    every epoch has as many batches as the stream's `steps_per_epoch` says; the len % parts tiles (fewer
    than `parts`) left at the end of a pass's shuffle sit that pass out.

    Args:
        parts: slices per pass (1: plain `Batches`).
        *args, **kwargs: as `pipeline.Batches`.
    """

    def __init__(self, *args, parts: int = 1, **kwargs):
        self.parts = max(int(parts), 1)  # read by epoch_order, which Batches.__init__ calls
        super().__init__(*args, **kwargs)
        if self.echo > 1 and self.parts > 1:
            raise ValueError("pass slices cannot echo: the epochs of an echo period hold different tiles")

    def epoch_order(self, epoch: int) -> np.ndarray:
        pass_index, part = divmod(epoch, self.parts)
        order = super().epoch_order(pass_index)
        size = len(order) // self.parts
        return order[part * size:(part + 1) * size]


def training_batches(x: np.ndarray, y: np.ndarray, config, batch_size: int, min_batch: int = 1) -> PassSlices:
    """The training `Batches`: big-rock oversampling, then online augmentation or a union of copies."""
    from an2dl_kit.augment.mars import batch_transform, oversample, union_of_copies

    a = config.augmentation
    order = oversample(y, BIG_ROCK, config.data.oversample_big_rock)
    x, y = x[order], y[order]
    transform, repeats = batch_transform(a.augment), a.repeats
    if a.augment_mode == "union":
        x, y = union_of_copies(x, y, a.repeats - 1, a.augment, config.training.seed)
        transform, repeats = None, 1
    return PassSlices(x, y, batch_size=batch_size, transform=transform, seed=config.training.seed,
                      workers=config.run.workers, repeats=repeats, parts=config.training.epoch_parts,
                      min_batch=min_batch)


def build_and_compile(config, runtime):
    """The model, compiled with AdamW (its rate set every batch by the `Schedule`), the configured loss and the
    leaderboard metrics; returns (model, loss). XLA as `runtime.execution_rule` decides (never eagerly)."""
    import keras

    from an2dl_kit.keras_metrics import mars_metrics
    from an2dl_kit.losses import SegmentationLoss
    from an2dl_kit.models.mars import build_model

    m, t = config.model, config.training
    model = build_model(m.architecture, width=m.width, dropout=m.dropout, fused_head=m.fused_head)
    loss = SegmentationLoss(t.loss, ignore_background=t.ignore_background)
    average = {"use_ema": True, "ema_momentum": t.ema_momentum} if t.ema_momentum else {}
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=0.0, weight_decay=t.weight_decay, **average),
        loss=loss,
        metrics=mars_metrics(MARS.num_classes, never_background=t.never_background),
        jit_compile=runtime.jit_compile and not config.run.run_eagerly,
        run_eagerly=config.run.run_eagerly,
    )
    return model, loss


class MarsHooks(TaskHooks):
    info = MARS
    dense = True

    def load(self, data: Path | None) -> Loaded:
        from an2dl_kit import runtime as rt
        from an2dl_kit.data.clean import clean_mars
        from an2dl_kit.data.discover import find_inputs
        from an2dl_kit.data.io import load_mars

        path = find_inputs(data).require(MARS.name)
        rt.log(f"mars: loading {path}")
        raw = load_mars(path)
        cleaned, report = clean_mars(raw)
        for line in report.lines():
            rt.log(f"mars: {line}")
        return Loaded(cleaned.images, cleaned.masks, cleaned.test, path, report.record(raw.masks, MARS.num_classes))

    def strata(self, labels: np.ndarray) -> np.ndarray:
        from an2dl_kit.data.split import mars_strata

        return mars_strata(labels)

    def to_inputs(self, images: np.ndarray) -> np.ndarray:
        """Tiles (N, 64, 128) in 0-255 -> network inputs (N, 64, 128, 1) float32 in [0, 1]."""
        return (np.asarray(images, np.float32) / 255.0)[..., None]

    def plan(self, config, runtime, data: RunData) -> TrainingPlan:
        from an2dl_kit.keras_metrics import iou_log_keys
        from an2dl_kit.losses import AdaptiveClassWeights

        t = config.training
        batch = runtime.global_batch(t.batch_size)
        train = training_batches(data.x_train, data.y_train, config, batch, min_batch=runtime.replicas)
        with runtime.scope():
            model, loss = build_and_compile(config, runtime)
        callbacks, adaptive = (), None
        if t.adaptive_weights:
            adaptive = AdaptiveClassWeights(loss, iou_log_keys(MARS.num_classes), alpha=t.adaptive_alpha,
                                            caps={BIG_ROCK: t.big_rock_cap}, momentum=t.adaptive_momentum)
            callbacks = (adaptive,)
        schedule = Schedule(runtime.scaled_lr(t.learning_rate), floor=t.lr_floor)
        # The model is compiled once, with the loss object the adaptive weights rewrite.
        phase = Phase("train", t.epochs, schedule, compile=lambda m: None, callbacks=callbacks)
        info = {"name": model.name, "params": int(model.count_params()), "architecture": config.model.architecture,
                "width": config.model.width}

        def details() -> dict:
            return {"class_weights": [float(w) for w in np.asarray(loss.class_weights)],
                    "class_weight_history": adaptive.history if adaptive else []}

        return TrainingPlan(model, train, (data.x_val, data.y_val), [phase], info, details=details,
                            batch_size=batch)

    def choose_postprocess(self, config, y_val: np.ndarray, probabilities: np.ndarray, plain: dict) -> dict:
        """The majority filter of `cleanup` size, kept only if it does not lower validation mIoU
        (unless `auto_cleanup` is off)."""
        from an2dl_kit import runtime as rt

        size = config.inference.cleanup
        if size <= 1:
            return {"majority_filter": 0}
        filtered = self.scores(y_val, self.to_labels(probabilities, config, {"majority_filter": size}))["miou"]
        used = not config.inference.auto_cleanup or filtered >= plain["miou"]
        rt.log(f"mars: majority filter {size}x{size}: validation mIoU {plain['miou']:.4f} -> {filtered:.4f}; "
               f"{'used' if used else 'not used'}")
        return {"majority_filter": size if used else 0, "validation_miou_filtered": filtered}

    def to_labels(self, probabilities: np.ndarray, config, postprocess) -> np.ndarray:
        from an2dl_kit.inference.postprocess import to_labels

        return to_labels(probabilities, postprocess.get("majority_filter", 0),
                         allow_background=not config.training.never_background)

    def scores(self, truth: np.ndarray, labels: np.ndarray) -> dict:
        from an2dl_kit.metrics import mars_scores

        return mars_scores(truth, labels)

    def write_outputs(self, out_dir: Path, config, data: RunData, results: Results) -> list[str]:
        from an2dl_kit import plots
        from an2dl_kit.submission import write_mars_csv

        write_mars_csv(out_dir / SUBMISSION_CSV, results.test_labels)
        bars = {"validation": results.validation, "validation + TTA": results.validation_tta}
        if results.test_tta is not None:
            bars["test + TTA"] = results.test_tta
        plots.class_iou(bars, out_dir / IOU_PNG)
        return [SUBMISSION_CSV, IOU_PNG] + write_examples(out_dir, config, data, results)

    def score_line(self, label: str, scores: dict) -> str:
        per_class = "  ".join(f"{name} {value:.3f}" for name, value in scores["iou"].items())
        return f"{label:<16} mIoU {scores['miou']:.4f}  accuracy {scores['pixel_accuracy']:.4f}  IoU {per_class}"


def write_examples(out_dir: Path, config, data: RunData, results: Results) -> list[str]:
    """Validation overlays (image | truth | prediction) and the augmentation preview (training tiles and
    augmented copies, masks drawn over them), with their pixels in `examples.npz` (what a report redraws)."""
    from an2dl_kit import plots
    from an2dl_kit.augment.mars import preview

    seed, pipeline = config.training.seed, config.augmentation.augment
    rows = plots.overlay_rows(data.y_val, OVERLAY_ROWS, seed)
    images = np.round(data.x_val[rows, ..., 0] * 255).astype(np.uint8)
    plots.overlays(images, data.y_val[rows], results.val_labels[rows], out_dir / OVERLAY_PNG)
    shown = plots.overlay_rows(data.y_train, PREVIEW_TILES, seed)
    tiles, masks = preview(data.x_train[shown], data.y_train[shown], pipeline, copies=PREVIEW_COPIES, seed=seed)
    tiles = np.round(np.clip(tiles, 0, 1) * 255).astype(np.uint8)
    plots.augmentation_preview(tiles, out_dir / PREVIEW_PNG, pipeline, masks=masks)
    plots.save_examples(out_dir / plots.EXAMPLES_NPZ, preview=tiles, preview_masks=masks,
                        preview_pipeline=np.array(pipeline), images=images, truth=data.y_val[rows],
                        predicted=results.val_labels[rows].astype(np.uint8))
    return [OVERLAY_PNG, PREVIEW_PNG, plots.EXAMPLES_NPZ]


HOOKS = MarsHooks()
