"""Colour normalisation inside the model: each image's colour statistics set to fixed ones before the backbone.

Slides differ in stain strength, lamp and camera white balance, and the course's hidden test set was shifted
in colour and saturation. A per-image normalisation at the input takes those global shifts out of what the
network sees, for every image at training and test time alike (no statistics to re-estimate, nothing for the
Codabench `model.py` to do: the layer is part of the saved model).

Methods (`registries.COLOUR_NORMALIZATIONS`, the `colour_norm` model setting):
- `grey_world`: each channel scaled so that its image mean equals the image's grey level (the mean of the
  three channel means): the von Kries / grey-world white balance. It removes colour casts and stain tints,
  keeps brightness, contrast and saturation.
- `opponent`: in an orthonormal opponent colour space (luminance, red-green, yellow-blue), the luminance
  standardised to a fixed mean and spread, and the two chroma channels shifted to fixed means and scaled
  together (one factor for both, so hues keep their angles) to a fixed chroma spread; back to RGB. It removes
  brightness, contrast, colour casts and saturation changes, and with them whatever class evidence lay in an
  image's global colour statistics. The fixed statistics (`OPPONENT_TARGET`) are the per-image means over the
  cleaned training set of ../shared/data/cells, so the output stays in the range an ImageNet backbone expects.

The `small_cnn` backbone standardises each channel of each image anyway (its `image_standardise` layer), which
already removes per-channel brightness, contrast and casts: on it, `grey_world` changes little and `opponent`
adds the saturation (chroma spread) normalisation.

This module imports only Keras (and NumPy through it): `codabench.py` copies it into the self-contained
Codabench `model.py`, whose `load_model` must know the layer.
"""

from __future__ import annotations

import keras
from keras import ops

METHODS = ("grey_world", "opponent")
# Luminance mean and spread, red-green and yellow-blue means, chroma spread (0-255 scale, opponent space):
# the per-image means over the 2,400 cleaned training images of ../shared/data/cells.
OPPONENT_TARGET = (316.4, 80.1, 24.6, 6.3, 23.1)
# Columns: luminance, red-green, yellow-blue; orthonormal, so its transpose maps back to RGB.
OPPONENT_BASIS = ((3 ** -0.5, 2 ** -0.5, 6 ** -0.5),
                  (3 ** -0.5, -(2 ** -0.5), 6 ** -0.5),
                  (3 ** -0.5, 0.0, -2 * 6 ** -0.5))


@keras.saving.register_keras_serializable(package="an2dl")
class ColourNormalization(keras.layers.Layer):
    """Per-image colour normalisation of 0-255 RGB images (module docstring); output 0-255 RGB, float32.

    It always computes in float32 (its dtype policy is float32 whatever the global one): its per-image sums
    run over thousands of 0-255 values, beyond float16's range.

    Args:
        method: "grey_world" or "opponent".
        target: for "opponent", the output's luminance mean and spread, red-green and yellow-blue means and
            chroma spread (`OPPONENT_TARGET`).
        epsilon: added in quadrature to every spread and as a floor to every channel mean (0-255 units), so a
            nearly flat or nearly black image is not amplified into noise.
    """

    def __init__(self, method: str = "grey_world", target=OPPONENT_TARGET, epsilon: float = 4.0, **kwargs):
        kwargs["dtype"] = kwargs.get("dtype") or "float32"
        super().__init__(**kwargs)
        if method not in METHODS:
            raise ValueError(f"ColourNormalization method {method!r}: choose one of {', '.join(METHODS)}")
        if len(target) != 5:
            raise ValueError(f"ColourNormalization target needs 5 values, got {len(target)}")
        self.method, self.target, self.epsilon = method, tuple(float(t) for t in target), float(epsilon)

    def call(self, inputs):
        x = ops.cast(inputs, "float32")
        if self.method == "grey_world":
            means = ops.maximum(ops.mean(x, axis=(1, 2), keepdims=True), self.epsilon)
            normalised = x * ops.mean(means, axis=-1, keepdims=True) / means
        else:
            normalised = self._opponent(x)
        return ops.clip(normalised, 0.0, 255.0)

    def _opponent(self, x):
        basis = ops.convert_to_tensor(OPPONENT_BASIS, "float32")
        opponent = ops.matmul(x, basis)
        mean = ops.mean(opponent, axis=(1, 2), keepdims=True)
        variance = ops.var(opponent, axis=(1, 2), keepdims=True)
        squared = self.epsilon ** 2
        luminance_spread = ops.sqrt(variance[..., :1] + squared)
        chroma_spread = ops.sqrt(ops.mean(variance[..., 1:], axis=-1, keepdims=True) + squared)
        lum_mean, lum_spread, rg_mean, yb_mean, chroma_target = self.target
        centred = opponent - mean
        luminance = centred[..., :1] / luminance_spread * lum_spread + lum_mean
        chroma = centred[..., 1:] / chroma_spread * chroma_target + ops.convert_to_tensor((rg_mean, yb_mean), "float32")
        return ops.matmul(ops.concatenate([luminance, chroma], axis=-1), ops.transpose(basis))

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "method": self.method, "target": list(self.target), "epsilon": self.epsilon}
