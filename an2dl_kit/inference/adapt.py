"""Test-time adaptation of BatchNorm statistics (Schneider et al., 2020): normalise with the test images' own.

A BatchNormalization layer predicts with the mean and variance it saw in training. On a shifted test set
(other stains, lamps, blur) its inputs move, and the trained statistics no longer centre and scale them;
re-estimating them on the test images undoes much of that shift without any label or training step.

Modes (`ADAPTATIONS`, the `bn_adapt` setting of the `inference` group):
- `none`: the statistics of training.
- `set`: every BatchNorm layer's statistics re-estimated on all the images being predicted (the whole
  validation set, the whole test set, each corrupted copy), then the usual prediction; fewer than
  `FULL_ADAPTATION_IMAGES` images are blended with the trained statistics in proportion to their number. The
  statistics pass goes through the model in batches of `STATISTICS_BATCH` images, each layer normalising every
  batch with the batch's own statistics while the layers' statistics over all batches are pooled: exact when
  the images fit one batch (the 480 test images of the stand-in data), within the batch-to-batch spread
  otherwise. They are taken on the plain images and serve every TTA view.
- `batch`: every prediction batch normalised with its own statistics (Schneider et al.'s N = batch size;
  PyTorch's `model.train()` at test time, without dropout). Predictions then depend on the batch size and
  on which images share a batch, so the Codabench `model.py` records the run's batch size.

Backbones without BatchNorm: ConvNeXt normalises with LayerNorm, which uses each image's own statistics at
training and test time alike, so there is nothing to re-estimate in it; the kit's classifier head still has
one BatchNormalization (after global pooling), and that is the only layer the setting changes there. A model
without any BatchNormalization predicts exactly as with `none` (`describe` says so in the run log).

Keras has no per-layer training switch (Schneider et al. put the BatchNorm modules alone in training mode),
and a `training=True` call would also drop units in Dropout. So for the duration of `adapted`, each
BatchNormalization instance's `call` is replaced by one that normalises with the statistics of its input
batch (and records them for `set`); the trained statistics are back in place when it ends.

Like `tta`, this module depends on NumPy and the kit's standard-library-only modules (Keras is imported in
the functions that need it): `codabench.py` copies it into the self-contained Codabench `model.py`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from an2dl_kit.registry import Registry

ADAPTATIONS: Registry[str] = Registry("BatchNorm adaptation", {
    "none": "the statistics of training",
    "set": "statistics re-estimated on every image predicted at once",
    "batch": "each prediction batch normalised with its own statistics",
})
# Images per batch of the `set` statistics pass: one batch holds a test set of this size exactly.
STATISTICS_BATCH = 512
# Below this many images, `set` blends the re-estimated statistics with the trained ones in proportion (n / this):
# a platform that calls `predict` on a few images at a time must not normalise each image by itself.
FULL_ADAPTATION_IMAGES = 128


def keras_models(model) -> list:
    """The Keras models behind `model`: itself, or the members of an in-run average (`runner.MemberAverage`)."""
    return list(getattr(model, "members", None) or [model])


def batchnorm_layers(model) -> list:
    """Every BatchNormalization layer of `model`, those of nested models (a backbone) and inside custom layers
    (the Mars U-Net's blocks) included: Keras' own walk over tracked sublayers."""
    import keras

    return [layer for keras_model in keras_models(model) for layer in keras_model._flatten_layers()
            if isinstance(layer, keras.layers.BatchNormalization)]


def describe(model, mode: str) -> str:
    """One line for the run log: which layers `mode` re-estimates."""
    ADAPTATIONS.check(mode)
    if mode == "none":
        return "BatchNorm statistics of training"
    count = len(batchnorm_layers(keras_models(model)[0]))
    if count == 0:
        return f"bn_adapt={mode}: the model has no BatchNormalization layer; predicting as with none"
    return f"bn_adapt={mode}: {ADAPTATIONS[mode]}, in {count} BatchNormalization layer(s) per model"


class _Pooled:
    """Per-channel sums over every recorded batch: count, sum of the means and of the second moments."""

    def __init__(self):
        self.count, self.first, self.second = 0.0, 0.0, 0.0

    def add(self, count: int, mean, variance) -> None:
        mean, variance = np.asarray(mean, np.float64), np.asarray(variance, np.float64)
        self.count += count
        self.first = self.first + count * mean
        self.second = self.second + count * (variance + mean * mean)

    def statistics(self) -> tuple[np.ndarray, np.ndarray]:
        mean = self.first / self.count
        return mean.astype(np.float32), np.maximum(self.second / self.count - mean * mean, 0.0).astype(np.float32)


def _batch_statistics_call(layer, pooled: _Pooled | None):
    """A `call` for `layer` that normalises with its input batch's statistics (and adds them to `pooled`)."""
    from keras import ops

    def call(inputs, training=None, mask=None):
        x = ops.cast(inputs, "float32")
        axis = layer.axis % len(x.shape)
        reduced = [a for a in range(len(x.shape)) if a != axis]
        mean, variance = ops.moments(x, axes=reduced)
        if pooled is not None:  # the eager statistics pass
            pooled.add(int(np.prod([x.shape[a] for a in reduced])), ops.convert_to_numpy(mean),
                       ops.convert_to_numpy(variance))
        outputs = ops.batch_normalization(x, mean, variance, axis=axis, epsilon=layer.epsilon,
                                          offset=layer.beta if layer.center else None,
                                          scale=layer.gamma if layer.scale else None)
        return ops.cast(outputs, layer.compute_dtype)

    return call


@contextmanager
def _batch_statistics(model, pooled: dict | None = None) -> Iterator[None]:
    """Every BatchNorm layer of `model` normalising with its batch's statistics for the duration; the
    compiled predict functions are dropped on entry and exit, so `predict` traces the calls in force."""
    layers = batchnorm_layers(model)
    for layer in layers:
        layer.call = _batch_statistics_call(layer, None if pooled is None else pooled.setdefault(id(layer), _Pooled()))
    _forget_predict_functions(model)
    try:
        yield
    finally:
        for layer in layers:
            del layer.call  # the class's own call again
        _forget_predict_functions(model)


def _forget_predict_functions(model) -> None:
    for keras_model in keras_models(model):
        if hasattr(keras_model, "predict_function"):
            keras_model.predict_function = None


def set_statistics(model, images: np.ndarray) -> None:
    """Replace every BatchNorm layer's moving statistics with those of `images` (module docstring, `set`);
    with fewer than `FULL_ADAPTATION_IMAGES` images, with their blend with the trained statistics, weighted
    by the share of that number the images make (Schneider et al.'s prior, as a floor on the sample)."""
    pooled: dict = {}
    with _batch_statistics(model, pooled):
        for keras_model in keras_models(model):
            for start in range(0, len(images), STATISTICS_BATCH):
                keras_model(np.asarray(images[start:start + STATISTICS_BATCH], np.float32), training=False)
    weight = min(len(images) / FULL_ADAPTATION_IMAGES, 1.0)
    for layer in batchnorm_layers(model):
        if id(layer) in pooled:
            mean, variance = pooled[id(layer)].statistics()
            layer.moving_mean.assign(weight * mean + (1 - weight) * np.asarray(layer.moving_mean))
            layer.moving_variance.assign(weight * variance + (1 - weight) * np.asarray(layer.moving_variance))


@contextmanager
def adapted(model, mode: str, images: np.ndarray | None = None) -> Iterator[None]:
    """`model` predicting with BatchNorm statistics adapted by `mode` for the duration of the block.

    Args:
        model: a Keras model, or an object whose `members` are Keras models (each adapted on its own).
        mode: a name of `ADAPTATIONS`: "none", "set" (re-estimated on `images`) or "batch".
        images: what "set" re-estimates on, as the model takes them (the plain images, not a TTA view).
    """
    ADAPTATIONS.check(mode)
    if mode == "none":
        yield
    elif mode == "batch":
        with _batch_statistics(model):
            yield
    else:
        layers = batchnorm_layers(model)
        trained = [(np.array(layer.moving_mean), np.array(layer.moving_variance)) for layer in layers]
        try:
            set_statistics(model, images)
            yield
        finally:
            for layer, (mean, variance) in zip(layers, trained, strict=True):
                layer.moving_mean.assign(mean)
                layer.moving_variance.assign(variance)
