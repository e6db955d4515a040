"""Estimated epoch time and total run time of each task's `kaggle` profile on Kaggle's T4 x2.

Inputs: forward FLOPs of the profile's model (counted by `an2dl_kit.models.flops`), the profile's
epochs, batch size, repeats and TTA views, the course data sizes (REFERENCE.md: 11,959 cleaned cell
images; 2,505 cleaned Mars tiles, big rock in 63 of them; 10,022 Mars test tiles; the cells test set is
hidden on Codabench, so only validation is predicted), and two rates measured here: the augmentation
throughput per core of the profile's training transform and the TTA view-handling rate.

Assumptions (stated in the table too):
- T4 fp16 tensor-core peak 65 TFLOP/s; achievable 10% in training and 12% in inference. Anchor: NVIDIA's
  TensorFlow ResNet-50 v1.5 mixed-precision inference on one T4 runs 991 img/s at batch 64 (Deep Learning
  Examples), 991 x 8.2 GFLOP = 8.1 TFLOP/s = 12.5% of peak. Training adds weight-gradient convolutions and
  optimizer updates that are no more efficient, and 96x96 cells / 64x128 tiles leave late stages with
  3x3 to 4x8 maps that fill a GPU poorly, hence 10% (and a pessimistic 5% in the notes).
- Training costs 3x the forward FLOPs (forward, input-gradient and weight-gradient passes); a frozen
  backbone costs 1x (no gradient flows into it).
- MirroredStrategy all-reduces float32 gradients of the trainable weights every step over PCIe at an
  effective 5 GB/s (no NVLink between Kaggle's T4s), not overlapped with compute.
- 50 ms of per-step overhead (Python dispatch, kernel launches, cross-device synchronisation).
- Augmentation runs on 3 of the VM's 4 vCPUs (one drives the GPUs) at the per-core rate measured here,
  overlapped with GPU work by the loader threads: an epoch takes the longer of the two.
- Every configured epoch runs (early stopping only shortens it): an upper bound. Plus 5 minutes of fixed
  cost (imports, data loading, ImageNet weights, tracing, plots).

Run alone: `python -m bench.hardware_estimate`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from an2dl_kit.task import CELLS, MARS
from bench.common import Row, fmt, main, one_core, progress, target_note

PART = "estimate"
T4_PEAK = 65e12
TRAIN_FRACTION = 0.10
INFER_FRACTION = 0.12
PESSIMISTIC_FRACTION = 0.05
GPUS = 2
ALLREDUCE_BYTES_S = 5e9
STEP_OVERHEAD_S = 0.05
AUG_CORES = 3
FIXED_S = 300.0
TARGET_HOURS = 3.0
CELLS_IMAGES = 11_959
MARS_TILES = 2_505
MARS_BIG_ROCK_TILES = 63
MARS_TEST = 10_022


@dataclass(frozen=True)
class Phase:
    """One training phase: epochs of `images` images, each costing `flops` (forward x passes)."""

    name: str
    epochs: int
    images: int
    train_flops: float  # per image
    val_images: int
    val_flops: float  # per image
    trainable: int  # parameters whose gradients are all-reduced
    global_batch: int
    aug_rate: float  # images per second per core


def epoch_seconds(phase: Phase, fraction: float = TRAIN_FRACTION) -> dict[str, float]:
    """GPU, all-reduce, overhead and augmentation seconds of one epoch, and the epoch time."""
    steps = math.ceil(phase.images / phase.global_batch)
    gpu = (phase.images * phase.train_flops / (GPUS * T4_PEAK * fraction)
           + phase.val_images * phase.val_flops / (GPUS * T4_PEAK * INFER_FRACTION))
    allreduce = steps * phase.trainable * 4 / ALLREDUCE_BYTES_S
    overhead = (steps + math.ceil(phase.val_images / phase.global_batch)) * STEP_OVERHEAD_S
    augment = phase.images / (phase.aug_rate * AUG_CORES)
    return {"gpu": gpu, "allreduce": allreduce, "overhead": overhead, "augment": augment,
            "epoch": max(gpu + allreduce + overhead, augment)}


def tta_seconds(forward_passes: float, flops: float, handled: float, handling_rate: float) -> float:
    """Model time of `forward_passes` images on both GPUs plus NumPy view handling of `handled` images."""
    return forward_passes * flops / (GPUS * T4_PEAK * INFER_FRACTION) + handled / handling_rate


def tta_passes(images: int, views: tuple[str, ...]) -> int:
    """Forward passes of `tasks.runner.evaluate` over `images`: every view, plus a plain (identity) pass
    when the views lack one."""
    return images * (len(views) + ("identity" not in views))


def trainable_count(model) -> int:
    return int(sum(np.prod(w.shape) for w in model.trainable_weights))


def phase_rows(task: str, phases: list[Phase]) -> tuple[list[Row], float, float]:
    """Rows per phase; (training seconds, training seconds at the pessimistic fraction)."""
    out, total, pessimistic = [], 0.0, 0.0
    for phase in phases:
        parts = epoch_seconds(phase)
        bound = "augmentation" if parts["augment"] > parts["epoch"] - 1e-9 and parts["augment"] > parts["gpu"] \
            else "GPU"
        total += phase.epochs * parts["epoch"]
        pessimistic += phase.epochs * epoch_seconds(phase, PESSIMISTIC_FRACTION)["epoch"]
        out.append(Row(PART, f"{task} kaggle: {phase.name} epoch on T4 x2", fmt(parts["epoch"]), "s",
                       f"{phase.images:,} img x {fmt(phase.train_flops / 1e9)} GFLOP: GPU {fmt(parts['gpu'])} s "
                       f"+ all-reduce {fmt(parts['allreduce'])} s + step overhead {fmt(parts['overhead'])} s; "
                       f"augmentation {fmt(parts['augment'])} s on {AUG_CORES} vCPUs; {bound}-bound; "
                       f"x {phase.epochs} epochs = {fmt(phase.epochs * parts['epoch'] / 60)} min"))
    return out, total, pessimistic


def total_row(task: str, train_s: float, pessimistic_s: float, tta_s: float, budget_s: float | None) -> Row:
    hours = (train_s + tta_s + FIXED_S) / 3600
    slow = (pessimistic_s + tta_s + FIXED_S) / 3600
    budget = f"; the profile's budget ({fmt(budget_s / 3600)} h) would stop training first" \
        if budget_s is not None and train_s > budget_s else ""
    return Row(PART, f"{task} kaggle: total run on T4 x2 (TTA included)", fmt(hours), "h",
               f"{target_note(hours, TARGET_HOURS, higher_is_better=False)}; at {PESSIMISTIC_FRACTION:.0%} of "
               f"peak: {fmt(slow)} h{budget}; all epochs run (upper bound) + {FIXED_S / 60:.0f} min fixed")


def cells_rows() -> list[Row]:
    from an2dl_kit.augment.cells import CellsAugment
    from an2dl_kit.inference.tta import resolve_views
    from an2dl_kit.models.cells import build_classifier, freeze_backbone, unfreeze_except_normalization
    from an2dl_kit.models.flops import forward_flops
    from an2dl_kit.pipeline import Batches
    from an2dl_kit.tasks import resolve_config
    from bench.hardware_augment import batches_rate, cells_pool
    from bench.hardware_tta import view_handling_rate

    config = resolve_config(CELLS.name, "kaggle")
    m, t, a = config.model, config.training, config.augmentation
    progress(f"estimate: cells {m.backbone} FLOPs")
    model, _ = build_classifier(m.backbone, "none", image_size=m.image_size, head_units=m.head_units)
    flops = forward_flops(model, CELLS.image_shape)
    freeze_backbone(model)
    head_params = trainable_count(model)
    unfreeze_except_normalization(model)
    all_params = trainable_count(model)
    progress("estimate: cells augmentation rate of the kaggle transform")
    images, labels = cells_pool()
    transform = CellsAugment(a.augment, cutmix_p=a.cutmix_p, mixup_p=a.mixup_p)
    aug_rate = batches_rate(Batches(images, labels, batch_size=t.batch_size, transform=transform, seed=0,
                                    workers=1))
    progress("estimate: cells TTA view handling")
    handling = view_handling_rate(CELLS.name)

    n_val = round(CELLS_IMAGES * config.data.val_fraction)
    per_epoch = (CELLS_IMAGES - n_val) * a.repeats
    common = dict(images=per_epoch, val_images=n_val, val_flops=flops, global_batch=GPUS * t.batch_size,
                  aug_rate=aug_rate)
    phases = [Phase(f"head ({m.backbone} frozen)", t.epochs, train_flops=flops, trainable=head_params, **common)]
    if t.finetune_epochs:
        phases.append(Phase("fine-tune", t.finetune_epochs, train_flops=3 * flops, trainable=all_params, **common))
    rows, train_s, pessimistic_s = phase_rows(CELLS.name, phases)
    views = resolve_views(config.inference.tta)
    # validation only, every view (the test set is hidden on Codabench)
    tta_s = tta_seconds(tta_passes(n_val, views), flops, n_val, handling)
    rows.append(Row(PART, f"cells kaggle: TTA ({len(views)} views) on T4 x2", fmt(tta_s), "s",
                    f"{n_val:,} validation images x {len(views)} views (plain = identity view); "
                    f"view handling {fmt(handling)} img/s"))
    rows.append(total_row(CELLS.name, train_s, pessimistic_s, tta_s, config.run.budget_s))
    return rows


def mars_rows() -> list[Row]:
    from an2dl_kit.inference.tta import resolve_views
    from an2dl_kit.models.flops import forward_flops
    from an2dl_kit.models.mars import build_model
    from an2dl_kit.tasks import mars, resolve_config
    from bench.hardware_augment import batches_rate, mars_pool
    from bench.hardware_size import MARS_SHAPE
    from bench.hardware_tta import view_handling_rate

    config = resolve_config(MARS.name, "kaggle", {"workers": 1})  # its training Batches built on one thread
    m, t = config.model, config.training
    progress("estimate: mars U-Net FLOPs")
    model = build_model(m.architecture, width=m.width, dropout=m.dropout)
    flops = forward_flops(model, MARS_SHAPE)
    params = trainable_count(model)
    progress("estimate: mars augmentation rate of the kaggle pipeline")
    images, masks = mars_pool()
    aug_rate = batches_rate(mars.training_batches(images, masks, config, t.batch_size))
    progress("estimate: mars TTA view handling")
    handling = view_handling_rate(MARS.name)

    n_val = round(MARS_TILES * config.data.val_fraction)
    train_tiles = MARS_TILES - n_val
    rock_tiles = round(MARS_BIG_ROCK_TILES * train_tiles / MARS_TILES)
    per_epoch = (train_tiles + rock_tiles * (config.data.oversample_big_rock - 1)) * config.augmentation.repeats
    phase = Phase("train", t.epochs, per_epoch, 3 * flops, n_val, flops, params, GPUS * t.batch_size, aug_rate)
    rows, train_s, pessimistic_s = phase_rows(MARS.name, [phase])
    views = resolve_views(config.inference.tta)
    # validation once (the majority filter is chosen on its probabilities), then the test set, every view
    tta_s = tta_seconds(tta_passes(n_val + MARS_TEST, views), flops, n_val + MARS_TEST, handling)
    rows.append(Row(PART, f"mars kaggle: TTA ({len(views)} views) on T4 x2", fmt(tta_s), "s",
                    f"{MARS_TEST:,} test + {n_val} validation tiles x {len(views)} views; "
                    f"view handling {fmt(handling)} tiles/s"))
    rows.append(total_row(MARS.name, train_s, pessimistic_s, tta_s, config.run.budget_s))
    return rows


def assumption_row() -> Row:
    return Row(PART, "assumed T4 throughput (per GPU)", f"{fmt(T4_PEAK * TRAIN_FRACTION / 1e12)} / "
               f"{fmt(T4_PEAK * INFER_FRACTION / 1e12)}", "TFLOP/s train / infer",
               f"{TRAIN_FRACTION:.0%} / {INFER_FRACTION:.0%} of the 65 TFLOP/s fp16 peak; anchor: TF ResNet-50 AMP "
               f"inference on a T4, 991 img/s x 8.2 GFLOP = 12.5%; training 3x forward FLOPs; gradients "
               f"all-reduced at {ALLREDUCE_BYTES_S / 1e9:g} GB/s; {STEP_OVERHEAD_S * 1e3:.0f} ms/step overhead")


def rows() -> list[Row]:
    one_core()
    return [assumption_row(), *cells_rows(), *mars_rows()]


if __name__ == "__main__":
    raise SystemExit(main(rows))
