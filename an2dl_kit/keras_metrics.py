"""The Mars leaderboard metric, tracked during training.

The leaderboard scores submitted label masks with the course's
`keras.metrics.MeanIoU(num_classes=5, ignore_class=0)`. These metrics first turn the softmax output into
the labels the kit submits (argmax over classes 1-4, see `postprocess.never_background`), then feed the
course metric, so the number in the training logs is the number `metrics.mars_scores` computes on the
submitted masks.
"""

from __future__ import annotations

import keras
from keras import ops

from an2dl_kit.task import MARS

PACKAGE = "an2dl"


def log_name(class_id: int) -> str:
    """A class's name as it appears in metric names and epoch-log keys ("big rock" -> "big_rock")."""
    return MARS.class_names[class_id].replace(" ", "_")


def predicted_labels(y_pred, never_background: bool = True):
    """Labels from probabilities (..., K): argmax over all classes, or over classes 1..K-1."""
    if never_background:
        return ops.argmax(y_pred[..., 1:], axis=-1) + 1
    return ops.argmax(y_pred, axis=-1)


def _strip_sparse_options(kwargs: dict) -> dict:
    """Drop the base class's sparse options from a saved config: these metrics fix them."""
    return {k: v for k, v in kwargs.items() if k not in ("sparse_y_true", "sparse_y_pred", "axis")}


@keras.saving.register_keras_serializable(package=PACKAGE)
class LeaderboardMeanIoU(keras.metrics.MeanIoU):
    """The course's MeanIoU(num_classes=5, ignore_class=0) on the labels the kit would submit.

    Args:
        num_classes: classes, background included.
        ignore_class: the class whose true pixels are left out (background, i.e. unlabelled).
        never_background: take the argmax over classes 1..K-1 (the kit's submissions never predict
            background); False for the plain argmax.
        name: the metric's name in the logs.
    """

    def __init__(self, num_classes: int = MARS.num_classes, ignore_class: int | None = MARS.ignored_class,
                 never_background: bool = True, name: str = "miou", **kwargs):
        super().__init__(num_classes=num_classes, ignore_class=ignore_class, name=name,
                         sparse_y_true=True, sparse_y_pred=True, **_strip_sparse_options(kwargs))
        self.never_background = bool(never_background)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, predicted_labels(y_pred, self.never_background), sample_weight)

    def get_config(self):
        return {**super().get_config(), "never_background": self.never_background}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ClassIoU(keras.metrics.IoU):
    """IoU of one class, on the same labels and the same ignored pixels as `LeaderboardMeanIoU`.

    Args:
        class_id: the class scored.
        num_classes: classes, background included.
        ignore_class: the class whose true pixels are left out.
        never_background: as in `LeaderboardMeanIoU`.
        name: the metric's name; default "iou_<class name>".
    """

    def __init__(self, class_id: int, num_classes: int = MARS.num_classes,
                 ignore_class: int | None = MARS.ignored_class, never_background: bool = True,
                 name: str | None = None, **kwargs):
        kwargs.pop("target_class_ids", None)
        super().__init__(num_classes=num_classes, target_class_ids=[int(class_id)], ignore_class=ignore_class,
                         name=name or f"iou_{log_name(class_id)}", sparse_y_true=True, sparse_y_pred=True,
                         **_strip_sparse_options(kwargs))
        self.class_id = int(class_id)
        self.never_background = bool(never_background)

    def update_state(self, y_true, y_pred, sample_weight=None):
        return super().update_state(y_true, predicted_labels(y_pred, self.never_background), sample_weight)

    def get_config(self):
        config = super().get_config()
        config.pop("target_class_ids", None)
        return {**config, "class_id": self.class_id, "never_background": self.never_background}


def mars_metrics(num_classes: int = MARS.num_classes, never_background: bool = True) -> list[keras.metrics.Metric]:
    """The leaderboard mIoU ("miou") and the IoU of every class but background ("iou_<name>")."""
    return [LeaderboardMeanIoU(num_classes, never_background=never_background)] + [
        ClassIoU(k, num_classes, never_background=never_background) for k in range(1, num_classes)]


def iou_log_keys(num_classes: int = MARS.num_classes, prefix: str = "val_") -> dict[int, str]:
    """{class index: epoch-log key} of the per-class metrics of `mars_metrics`."""
    return {k: f"{prefix}iou_{log_name(k)}" for k in range(1, num_classes)}
