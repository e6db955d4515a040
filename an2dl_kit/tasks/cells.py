"""Blood-cell classification: what the runner (`tasks/runner.py`) needs that Mars does not.

Pretrained backbones train in two phases — the head on a frozen backbone, then fine-tuning with the backbone's
normalisation statistics kept — from scratch one phase (after an optional linear warm-up). AdamW with a cosine
schedule with warm restarts planned against the time budget, label-smoothed cross-entropy, balanced class
weights as per-sample weights (so MixUp/CutMix samples weigh by their mixed labels), accuracy, top-1 precision
and recall, macro F1. Outputs: submission.csv (when a test set exists), the Codabench submission.zip, the
validation confusion matrix and an augmentation preview. Profiles: `tasks/cells_config.py`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from an2dl_kit.task import CELLS
from an2dl_kit.tasks.runner import Loaded, Phase, Results, RunData, TaskHooks, TrainingPlan
from an2dl_kit.training import Schedule

SUBMISSION_CSV = "submission.csv"
SUBMISSION_ZIP = "submission.zip"
CONFUSION_PNG = "confusion_matrix.png"
PREVIEW_PNG = "augmentation_preview.png"
PREVIEW_IMAGES = 8
PREVIEW_COPIES = 8


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


def compile_classifier(model, config, runtime) -> None:
    """AdamW (its rate is set every batch by the phase's `Schedule`), label-smoothed cross-entropy (with AugMix's
    consistency term for `augment=augmix`), the four metrics. XLA as `runtime.execution_rule` decides (one GPU
    without determinism only)."""
    import keras

    from an2dl_kit.augment.cells import CONSISTENCY_PIPELINES, VIEWS_PER_IMAGE
    from an2dl_kit.losses import AugMixConsistency

    smoothing = config.training.label_smoothing
    loss = (AugMixConsistency(config.augmentation.jsd_weight, VIEWS_PER_IMAGE, smoothing)
            if config.augmentation.augment in CONSISTENCY_PIPELINES
            else keras.losses.CategoricalCrossentropy(label_smoothing=smoothing))
    model.compile(
        optimizer=keras.optimizers.AdamW(learning_rate=0.0, weight_decay=config.training.weight_decay),
        loss=loss,
        metrics=make_metrics(),
        jit_compile=runtime.jit_compile,
    )


def class_weight_vector(labels: np.ndarray) -> np.ndarray:
    """sklearn's "balanced" class weights as a vector indexed by class."""
    from an2dl_kit.data.split import balanced_class_weights

    weights = balanced_class_weights(labels, CELLS.num_classes)
    return np.array([weights[c] for c in range(CELLS.num_classes)], np.float32)


def training_batches(x: np.ndarray, y: np.ndarray, config, batch_size: int, min_batch: int = 1):
    """The training `pipeline.Batches`: the configured augmentation, its per-image stage echoed `echo`
    epochs, and class-weighted samples."""
    from an2dl_kit.augment.cells import CellsAugment
    from an2dl_kit.pipeline import Batches

    a = config.augmentation
    augment = CellsAugment(a.augment, class_weights=class_weight_vector(y), cutmix_p=a.cutmix_p,
                           mixup_p=a.mixup_p, mix_both=a.mix_both, group=min_batch)
    return Batches(x, y, batch_size=batch_size, transform=augment, echo=a.echo,
                   seed=config.training.seed, workers=config.run.workers, repeats=a.repeats, min_batch=min_batch)


def onehot(labels: np.ndarray) -> np.ndarray:
    return np.eye(CELLS.num_classes, dtype=np.float32)[np.asarray(labels).reshape(-1)]


def validation_data(x: np.ndarray, y: np.ndarray, config, batch_size: int, replicas: int = 1):
    """What `fit` validates on: the images and one-hot labels, or for a consistency loss (AugMix) batches in
    its layout, each image repeated as its own views (consistency term 0, loss the plain cross-entropy),
    the images cut to a multiple of the replica count so that every replica gets whole triplets."""
    from an2dl_kit.augment.cells import CONSISTENCY_PIPELINES, VIEWS_PER_IMAGE

    if config.augmentation.augment not in CONSISTENCY_PIPELINES:
        return x.astype(np.float32), onehot(y)
    import tensorflow as tf

    keep = len(x) - len(x) % replicas
    data = tf.data.Dataset.from_tensor_slices((x[:keep].astype(np.float32), onehot(y[:keep]))).batch(batch_size)
    return data.map(lambda images, labels: (tf.repeat(images, VIEWS_PER_IMAGE, axis=0),
                                            tf.repeat(labels, VIEWS_PER_IMAGE, axis=0)))


def phases(config, runtime, pretrained: bool) -> list[Phase]:
    """Pretrained: the head on a frozen backbone, then fine-tuning with the normalisation layers (and the
    `finetune_freeze` extras) kept frozen. From scratch: an optional linear warm-up, then one phase training
    everything."""
    from an2dl_kit.models import cells as models
    from an2dl_kit.tasks.cells_config import FINETUNE_FREEZES

    t = config.training

    def schedule(peak: float, epochs: int, warmup: bool = False) -> Schedule:
        return Schedule(runtime.scaled_lr(peak), warmup=warmup, floor=t.lr_floor,
                        first_period=t.restart_epochs / epochs, t_mul=t.restart_t_mul)

    def compiler(prepare=None):
        def compile_phase(m):
            if prepare is not None:
                prepare(m)
            compile_classifier(m, config, runtime)
        return compile_phase

    if not pretrained:
        plan = []
        if t.warmup_epochs > 0:
            plan.append(Phase("warmup", t.warmup_epochs, schedule(t.learning_rate, t.warmup_epochs, True), compiler()))
        return plan + [Phase("train", t.epochs, schedule(t.learning_rate, t.epochs), compiler())]
    plan = [Phase("head", t.epochs, schedule(t.learning_rate, t.epochs), compiler(models.freeze_backbone))]
    if t.finetune_epochs > 0:
        plan.append(Phase("finetune", t.finetune_epochs, schedule(t.finetune_learning_rate, t.finetune_epochs),
                          compiler(lambda m: models.unfreeze_except_normalization(
                              m, FINETUNE_FREEZES[t.finetune_freeze]))))
    return plan


class CellsHooks(TaskHooks):
    info = CELLS
    dense = False

    def load(self, data: Path | None) -> Loaded:
        from an2dl_kit import runtime as rt
        from an2dl_kit.data.clean import clean_cells
        from an2dl_kit.data.discover import find_inputs
        from an2dl_kit.data.io import load_cells_test, load_cells_train

        inputs = find_inputs(data)
        train_path = inputs.require(CELLS.name)
        rt.log(f"cells: loading {train_path}")
        raw = load_cells_train(train_path)
        cleaned, report = clean_cells(raw)
        for line in report.lines():
            rt.log(f"cells: {line}")
        test = load_cells_test(inputs.cells_test) if inputs.cells_test is not None else None
        return Loaded(cleaned.images, cleaned.labels, test, inputs.cells_test,
                      report.record(raw.labels, CELLS.num_classes))

    def plan(self, config, runtime, data: RunData) -> TrainingPlan:
        from an2dl_kit.models import cells as models

        batch = runtime.global_batch(config.training.batch_size)
        train = training_batches(data.x_train, data.y_train, config, batch, min_batch=runtime.replicas)
        m = config.model
        with runtime.scope():
            model, weights_used = models.build_classifier(
                m.backbone, m.weights, image_size=m.image_size, head_units=m.head_units,
                allow_random_fallback=m.allow_random_fallback, colour_norm=m.colour_norm)
        info = {"name": model.name, "params": models.count_params(model), "backbone": m.backbone,
                "weights_used": weights_used}
        val = validation_data(data.x_val, data.y_val, config, batch, runtime.replicas)
        return TrainingPlan(model, train, val, phases(config, runtime, weights_used != "none"), info,
                            details=lambda: {"class_weights": train.transform.class_weights.tolist()},
                            batch_size=batch)

    def shifted_validation(self, config, data: RunData,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str] | None:
        """`tta_select_copies` copies of the validation images through the `tta_select_shift` augmentation."""
        from an2dl_kit.augment.cells import image_augmenter

        pipeline, copies = config.inference.tta_select_shift, config.inference.tta_select_copies
        if pipeline == "none":
            return None
        augment = image_augmenter(pipeline)
        images = np.concatenate([augment(data.x_val, rng) for _ in range(copies)])
        what = f"their {pipeline} copy" if copies == 1 else f"{copies} {pipeline} copies of them"
        return images, np.concatenate([data.y_val] * copies), what

    def to_labels(self, probabilities: np.ndarray, config, postprocess) -> np.ndarray:
        return probabilities.argmax(axis=-1)

    def scores(self, truth: np.ndarray, labels: np.ndarray) -> dict:
        from an2dl_kit.metrics import cells_scores

        return cells_scores(truth.reshape(-1), labels)

    def write_outputs(self, out_dir: Path, config, data: RunData, results: Results) -> list[str]:
        from an2dl_kit import plots
        from an2dl_kit.inference.codabench import Member, write_submission_zip
        from an2dl_kit.submission import write_cells_csv

        files = []
        if results.test_labels is not None:
            write_cells_csv(out_dir / SUBMISSION_CSV, results.test_labels)
            files.append(SUBMISSION_CSV)
        members = [Member(out_dir / name, results.views, adapt=config.inference.bn_adapt,
                          batch_size=results.batch_size) for name in results.model_files]
        write_submission_zip(out_dir / SUBMISSION_ZIP, members)
        accuracy = results.validation_tta["accuracy"]
        plots.confusion_matrix(results.validation_tta["confusion_matrix"], out_dir / CONFUSION_PNG,
                               f"validation with TTA ({config.inference.tta}): accuracy {accuracy:.4f}")
        return files + [SUBMISSION_ZIP, CONFUSION_PNG] + write_examples(out_dir, config, data, results)

    def score_line(self, label: str, scores: dict[str, Any]) -> str:
        return (f"{label:<16} accuracy {scores['accuracy']:.4f}  precision {scores['precision']:.4f}  "
                f"recall {scores['recall']:.4f}  F1 {scores['f1']:.4f}")


def write_examples(out_dir: Path, config, data: RunData, results: Results) -> list[str]:
    """The augmentation preview (one training image per class, then augmented copies) and its pixels, with
    one validation image per class and its prediction, in `examples.npz` (what a report redraws)."""
    from an2dl_kit import plots
    from an2dl_kit.augment.cells import preview

    seed, pipeline = config.training.seed, config.augmentation.augment
    rows = preview_rows(data.y_train, PREVIEW_IMAGES, seed)
    grid = preview(data.x_train[rows], pipeline, copies=PREVIEW_COPIES, seed=seed)
    names = [CELLS.class_names[c] for c in data.y_train[rows]]
    plots.augmentation_preview(grid, out_dir / PREVIEW_PNG, pipeline, row_names=names)
    shown = preview_rows(data.y_val, PREVIEW_IMAGES, seed)
    plots.save_examples(out_dir / plots.EXAMPLES_NPZ, preview=grid, preview_labels=data.y_train[rows],
                        preview_pipeline=np.array(pipeline), images=data.x_val[shown], truth=data.y_val[shown],
                        predicted=results.val_labels[shown])
    return [PREVIEW_PNG, plots.EXAMPLES_NPZ]


def preview_rows(labels: np.ndarray, count: int, seed: int) -> np.ndarray:
    """One image of each class first (as far as `count` allows), chosen by seed."""
    rng = np.random.default_rng(seed)
    picks = [rng.choice(np.flatnonzero(labels == c)) for c in np.unique(labels)]
    return np.array(picks[:count])


HOOKS = CellsHooks()
