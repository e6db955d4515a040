"""Segmentation losses for sparse Mars masks, and adaptive class weights.

The loss functions are pure: `fn(y_true, y_pred, class_weights, ignore_background) -> scalar`, with
`y_true` integer masks (B, H, W) and `y_pred` softmax probabilities (B, H, W, K). Class weights enter as
per-pixel weights (the weight of each pixel's true class) for the pixel losses, and as weights of the
per-class terms for the region losses; `model.fit(class_weight=...)` cannot do this for masks.

Leaving background out (`ignore_background=True`) gives background-labelled pixels zero weight in every
term and drops the background class from the region losses: background marks unlabelled pixels, which the
leaderboard ignores, so learning them only teaches the network to predict a class that scores nothing.

The functions are registered by name in `registries.LOSSES`. `SegmentationLoss` wraps any sum of them
(e.g. "cce+dice") for `model.compile`; its class weights live in a variable that `AdaptiveClassWeights`
rewrites after every epoch from the validation IoU.

One classification loss lives here too: `AugMixConsistency`, the cells task's cross-entropy with AugMix's
Jensen-Shannon consistency term.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from an2dl_kit.registries import LOSSES, loss_terms
from an2dl_kit.task import MARS

PACKAGE = "an2dl"
SMOOTH = 1.0          # Laplace smoothing of the region losses: an absent, unpredicted class scores 1
EPSILON = 1e-7        # probability clip inside logarithms
TVERSKY_ALPHA = 0.3   # false-positive weight
TVERSKY_BETA = 0.7    # false-negative weight: recall of the small classes matters more
FOCAL_GAMMA = 2.0


def _prepare(y_true, y_pred, class_weights, ignore_background):
    """Return one-hot truth, probabilities, per-pixel weights (B,H,W) and per-class weights (K,)."""
    num_classes = y_pred.shape[-1]
    y_pred = ops.cast(y_pred, "float32")
    labels = ops.cast(ops.reshape(y_true, ops.shape(y_pred)[:-1]), "int32")
    truth = ops.one_hot(labels, num_classes, dtype="float32")
    weights = ops.ones((num_classes,), "float32") if class_weights is None else \
        ops.cast(ops.convert_to_tensor(class_weights), "float32")
    if ignore_background:
        weights = weights * ops.cast(ops.arange(num_classes) != MARS.ignored_class, "float32")
    pixel_weights = ops.sum(truth * weights, axis=-1)
    return truth, y_pred, pixel_weights, weights


def _pixel_mean(values, pixel_weights):
    """The weighted mean over all pixels of the batch (0 when every weight is 0)."""
    return ops.divide_no_nan(ops.sum(values * pixel_weights), ops.sum(pixel_weights))


def _counted(pixel_weights, ignore_background):
    """1 for the pixels a region loss counts, 0 for the rest (B, H, W): all pixels unless background is left out."""
    return ops.cast(pixel_weights > 0, "float32") if ignore_background else ops.ones_like(pixel_weights)


def _region_stats(truth, y_pred, pixel_weights, ignore_background):
    """Soft intersection, predicted mass and true mass per class over the counted pixels."""
    mask = _counted(pixel_weights, ignore_background)[..., None]
    axes = tuple(range(len(y_pred.shape) - 1))
    intersection = ops.sum(truth * y_pred * mask, axis=axes)
    predicted = ops.sum(y_pred * mask, axis=axes)
    true = ops.sum(truth * mask, axis=axes)
    return intersection, predicted, true


def _class_mean(losses, weights):
    return ops.divide_no_nan(ops.sum(losses * weights), ops.sum(weights))


def weighted_cce(y_true, y_pred, class_weights=None, ignore_background=False):
    """Categorical cross-entropy, averaged over pixels weighted by their true class's weight."""
    truth, y_pred, pixel_weights, _ = _prepare(y_true, y_pred, class_weights, ignore_background)
    ce = -ops.sum(truth * ops.log(ops.clip(y_pred, EPSILON, 1.0)), axis=-1)
    return _pixel_mean(ce, pixel_weights)


def categorical_focal(y_true, y_pred, class_weights=None, ignore_background=False, gamma=FOCAL_GAMMA):
    """Focal loss (Lin et al., 2017): cross-entropy scaled by (1 - p_true)^gamma, class-weighted."""
    truth, y_pred, pixel_weights, _ = _prepare(y_true, y_pred, class_weights, ignore_background)
    p_true = ops.sum(truth * y_pred, axis=-1)
    focal = -((1.0 - p_true) ** gamma) * ops.log(ops.clip(p_true, EPSILON, 1.0))
    return _pixel_mean(focal, pixel_weights)


def dice(y_true, y_pred, class_weights=None, ignore_background=False, smooth=SMOOTH):
    """Soft Dice loss over the batch: weighted mean over classes of 1 - (2I + s) / (P + T + s)."""
    truth, y_pred, pixel_weights, weights = _prepare(y_true, y_pred, class_weights, ignore_background)
    intersection, predicted, true = _region_stats(truth, y_pred, pixel_weights, ignore_background)
    score = (2.0 * intersection + smooth) / (predicted + true + smooth)
    return _class_mean(1.0 - score, weights)


def tversky(y_true, y_pred, class_weights=None, ignore_background=False, alpha=TVERSKY_ALPHA,
            beta=TVERSKY_BETA, smooth=SMOOTH):
    """Tversky loss (Salehi et al., 2017): 1 - (I + s) / (I + alpha FP + beta FN + s), per class."""
    truth, y_pred, pixel_weights, weights = _prepare(y_true, y_pred, class_weights, ignore_background)
    intersection, predicted, true = _region_stats(truth, y_pred, pixel_weights, ignore_background)
    score = (intersection + smooth) / (
        intersection + alpha * (predicted - intersection) + beta * (true - intersection) + smooth)
    return _class_mean(1.0 - score, weights)


def _lovasz_gradient(truth_sorted):
    """The Lovász extension's gradient of the Jaccard loss, at pixels sorted by falling error (per class row)."""
    total = ops.sum(truth_sorted, axis=-1, keepdims=True)
    intersection = total - ops.cumsum(truth_sorted, axis=-1)
    union = total + ops.cumsum(1.0 - truth_sorted, axis=-1)
    jaccard = 1.0 - intersection / union
    return ops.concatenate([jaccard[:, :1], jaccard[:, 1:] - jaccard[:, :-1]], axis=-1)


def lovasz(y_true, y_pred, class_weights=None, ignore_background=False):
    """Lovász-softmax loss (Berman et al., 2018): the tight convex surrogate of 1 - IoU, per class over the batch.

    Equals 1 - IoU exactly on one-hot predictions, so it optimises the leaderboard metric itself; the mean runs
    over the classes present in the batch's counted pixels. Uncounted pixels get error 0 and no truth, which
    sorts them last and leaves the loss as if they were dropped (static shapes, no boolean masks).
    """
    truth, y_pred, pixel_weights, weights = _prepare(y_true, y_pred, class_weights, ignore_background)
    num_classes = y_pred.shape[-1]
    counted = ops.reshape(_counted(pixel_weights, ignore_background), (1, -1))
    truth = ops.transpose(ops.reshape(truth, (-1, num_classes))) * counted
    errors = ops.abs(truth - ops.transpose(ops.reshape(y_pred, (-1, num_classes)))) * counted
    order = ops.flip(ops.argsort(errors, axis=-1), axis=-1)
    gradient = ops.stop_gradient(_lovasz_gradient(ops.take_along_axis(truth, order, axis=-1)))
    losses = ops.sum(ops.take_along_axis(errors, order, axis=-1) * gradient, axis=-1)
    present = ops.cast(ops.sum(truth, axis=-1) > 0, "float32")
    return _class_mean(losses, weights * present)


def combined_loss(y_true, y_pred, terms=("cce",), class_weights=None, ignore_background=False):
    """The unweighted sum of the loss terms, named as in `registries.LOSSES`."""
    return sum(LOSSES.load(t)(y_true, y_pred, class_weights, ignore_background) for t in terms)


@keras.saving.register_keras_serializable(package=PACKAGE)
class SegmentationLoss(keras.losses.Loss):
    """A sum of segmentation losses with class weights that callbacks can change during training.

    Args:
        loss: terms of `registries.LOSSES` joined by "+", e.g. "cce", "focal", "cce+dice"; an unknown term
            is a `KitError`.
        class_weights: one weight per class (background included); None for all ones.
        ignore_background: give background-labelled pixels and the background class no weight.
        num_classes: the number of classes (the length of the weights).
    """

    def __init__(self, loss: str = "cce", class_weights=None, ignore_background: bool = True,
                 num_classes: int = MARS.num_classes, name: str | None = None, **kwargs):
        self.terms = loss_terms(loss)
        super().__init__(name=name or "_".join(self.terms), **kwargs)
        self.loss = loss
        self.ignore_background = bool(ignore_background)
        self.num_classes = int(num_classes)
        initial = np.ones(num_classes, "float32") if class_weights is None else \
            np.asarray(class_weights, "float32")
        if initial.shape != (num_classes,):
            raise ValueError(f"class_weights needs {num_classes} values, got {initial.shape}")
        self.class_weights = keras.Variable(initial, trainable=False, dtype="float32", name="class_weights")

    def call(self, y_true, y_pred):
        return combined_loss(y_true, y_pred, self.terms, self.class_weights, self.ignore_background)

    def get_config(self):
        return {**super().get_config(), "loss": self.loss,
                "class_weights": [float(w) for w in ops.convert_to_numpy(self.class_weights)],
                "ignore_background": self.ignore_background, "num_classes": self.num_classes}


def adaptive_weights(iou, alpha: float = 0.2, caps: dict[int, float] | None = None) -> np.ndarray:
    """Class weights from per-class IoU: w_k = 1 / (IoU_k + alpha), divided by the largest, so in (0, 1].

    Args:
        iou: IoU per weighted class (any order; NaN for a class not seen, which keeps weight 1).
        alpha: smoothing; a smaller alpha pushes harder toward the worst class.
        caps: {position in `iou`: cap}; the class's raw weight is held to cap times the largest raw
            weight of the uncapped classes (the big-rock cap: a class near IoU 0 would otherwise take all
            the weight and starve the others).
    """
    iou = np.asarray(iou, dtype="float64")
    raw = 1.0 / (np.nan_to_num(iou, nan=0.0) + alpha)
    caps = caps or {}
    uncapped = [i for i in range(len(raw)) if i not in caps]
    if uncapped:
        ceiling = raw[uncapped].max()
        for i, cap in caps.items():
            raw[i] = min(raw[i], cap * ceiling)
    weights = raw / raw.max()
    weights[np.isnan(iou)] = 1.0
    return weights.astype("float32")


class AdaptiveClassWeights(keras.callbacks.Callback):
    """After every epoch, set the loss's class weights from the validation IoU of each class.

    Reads the per-class IoU from the epoch logs (e.g. "val_iou_soil"), so it costs no extra pass.

    Args:
        loss: the `SegmentationLoss` whose weights it rewrites.
        iou_keys: {class index: log key} of the classes to weigh (classes not listed keep their weight).
        alpha: see `adaptive_weights`.
        caps: {class index: cap}, see `adaptive_weights`.
        momentum: the share of the previous weight kept each epoch; damps oscillation between classes.
    """

    def __init__(self, loss: SegmentationLoss, iou_keys: dict[int, str], alpha: float = 0.2,
                 caps: dict[int, float] | None = None, momentum: float = 0.0):
        super().__init__()
        self.loss = loss
        self.iou_keys = dict(iou_keys)
        self.alpha = alpha
        self.caps = dict(caps or {})
        self.momentum = momentum
        self.history: list[list[float]] = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        classes = list(self.iou_keys)
        iou = [float(logs.get(self.iou_keys[k], np.nan)) for k in classes]
        caps = {classes.index(k): cap for k, cap in self.caps.items() if k in classes}
        new = adaptive_weights(iou, self.alpha, caps)
        weights = ops.convert_to_numpy(self.loss.class_weights).copy()
        weights[classes] = self.momentum * weights[classes] + (1.0 - self.momentum) * new
        self.loss.class_weights.assign(weights)
        self.history.append([float(w) for w in weights])
        logs.update({f"weight_{k}": float(weights[k]) for k in classes})


@keras.saving.register_keras_serializable(package=PACKAGE)
class AugMixConsistency(keras.losses.Loss):
    """Cross-entropy plus AugMix's Jensen-Shannon consistency term (Hendrycks et al., ICLR 2020).

    The batch holds `views` consecutive rows per image (the image, then its augmented views:
    `augment.cells.CellsAugment`): each row's loss is its label-smoothed cross-entropy, and the first row of
    each image also carries `weight` times the Jensen-Shannon divergence of the image's `views` predicted
    distributions, the mean KL divergence of each from their mixture. The sample weights say which rows'
    cross-entropy counts (the kit gives the views 0, as the paper trains cross-entropy on the plain images). A
    validation batch of the same layout with identical views has a zero consistency term: its loss is the
    plain cross-entropy.

    Args:
        weight: of the consistency term (the paper's lambda, 12).
        views: consecutive rows per image, the first the image itself.
        label_smoothing: of the cross-entropy.
    """

    def __init__(self, weight: float = 12.0, views: int = 3, label_smoothing: float = 0.0, name: str | None = None,
                 **kwargs):
        super().__init__(name=name or "augmix_consistency", **kwargs)
        self.weight, self.views, self.label_smoothing = float(weight), int(views), float(label_smoothing)

    def call(self, y_true, y_pred):
        y_pred = ops.cast(y_pred, "float32")
        entropy = keras.losses.categorical_crossentropy(ops.cast(y_true, "float32"), y_pred,
                                                        label_smoothing=self.label_smoothing)
        grouped = ops.reshape(ops.clip(y_pred, EPSILON, 1.0), (-1, self.views, y_pred.shape[-1]))
        mixture = ops.mean(grouped, axis=1, keepdims=True)
        divergence = ops.mean(ops.sum(grouped * (ops.log(grouped) - ops.log(mixture)), axis=-1), axis=1)
        first_rows = ops.concatenate([divergence[:, None], ops.zeros_like(grouped[:, 1:, 0])], axis=1)
        return entropy + self.weight * ops.reshape(first_rows, (-1,))

    def get_config(self):
        return {**super().get_config(), "weight": self.weight, "views": self.views,
                "label_smoothing": self.label_smoothing}
