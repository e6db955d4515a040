"""Building blocks of the Mars segmenter, as serializable Keras layers.

Every block builds its sub-layers in `build` from the input shapes, so a `.keras` file reloads them with
their weights, and hands its own dtype policy to them, so the whole block follows a mixed-precision policy.
Learned fusion weights stay float32 variables and are cast to the compute dtype where they are used.

Blocks (shapes for channels-last inputs):
- `ConvNormAct`     (B,H,W,C) -> (B,H,W,filters): conv, batch norm, ReLU.
- `ResidualBlock`   (B,H,W,C) -> (B,H,W,filters): two conv-BN with a (projected) shortcut.
- `SqueezeExcite`   (B,H,W,C) -> (B,H,W,C): channel gates from global context.
- `ASPP`            (B,H,W,C) -> (B,H,W,filters): parallel dilated convs and image pooling.
- `MultiScaleASPP`  (B,H,W,C) -> (B,H,W,filters + filters//2 + filters//4): three ASPPs side by side.
- `AttentionGate`   [x (B,H,W,C), g (B,H/s,W/s,Cg)] -> (B,H,W,C): x weighted by attention from g.
- `WeightedFusion`  [a, b, ...] of one shape -> that shape: a learned convex combination.
- `FusionBlock`     [t_i (B,H/s_i,W/s_i,C_i)] -> (B,H,W,sum C_i): upsampled, weighted, concatenated.
- `FusionHead`      [t_i ...] -> (B,H,W,K) float32: `FusionBlock` + 1x1 softmax head, computed cheaply.

Upsampling is bilinear: besides being smoother, its GPU gradient is deterministic under TensorFlow's op
determinism (which the runtime enables with a seed), where nearest-neighbour's raises an error.
"""

from __future__ import annotations

import keras
from keras import layers, ops

PACKAGE = "an2dl"
# DeepLab's rates 6/12/18 reach past a 4x8 bridge map: those branches would mostly read zero padding.
SMALL_MAP_RATES = (1, 2, 3)


def _sublayer_kwargs(layer: layers.Layer, name: str) -> dict:
    return {"dtype": layer.dtype_policy, "name": name}


def _with_channels(shape, channels: int) -> tuple:
    return (*tuple(shape)[:-1], channels)


@keras.saving.register_keras_serializable(package=PACKAGE)
class ConvNormAct(layers.Layer):
    """Convolution without bias, batch normalisation, then ReLU.

    Args:
        filters: output channels.
        kernel_size: square kernel size.
        dilation_rate: dilation of the convolution.
        activation: activation after the normalisation; None for none.

    Shapes: (B, H, W, C) -> (B, H, W, filters).
    """

    def __init__(self, filters: int, kernel_size: int = 3, dilation_rate: int = 1,
                 activation: str | None = "relu", **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.dilation_rate = int(dilation_rate)
        self.activation = activation

    def build(self, input_shape):
        self.conv = layers.Conv2D(self.filters, self.kernel_size, padding="same",
                                  dilation_rate=self.dilation_rate, use_bias=False,
                                  kernel_initializer="he_normal", **_sublayer_kwargs(self, "conv"))
        self.conv.build(input_shape)
        self.norm = layers.BatchNormalization(**_sublayer_kwargs(self, "norm"))
        self.norm.build(_with_channels(input_shape, self.filters))
        self.act = layers.Activation(self.activation or "linear", **_sublayer_kwargs(self, "act"))

    def call(self, inputs, training=None):
        return self.act(self.norm(self.conv(inputs), training=training))

    def compute_output_shape(self, input_shape):
        return _with_channels(input_shape, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "dilation_rate": self.dilation_rate, "activation": self.activation}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ResidualBlock(layers.Layer):
    """Two 3x3 conv + batch-norm layers with an identity (or 1x1-projected) shortcut, then ReLU.

    He et al. (2016). The shortcut is projected by a 1x1 conv only when the channel count changes.

    Args:
        filters: output channels.
        kernel_size: kernel size of both convolutions.
        dropout: spatial dropout rate between the two convolutions (0 for none).

    Shapes: (B, H, W, C) -> (B, H, W, filters).
    """

    def __init__(self, filters: int, kernel_size: int = 3, dropout: float = 0.0, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.kernel_size = int(kernel_size)
        self.dropout = float(dropout)

    def build(self, input_shape):
        out_shape = _with_channels(input_shape, self.filters)
        self.conv1 = ConvNormAct(self.filters, self.kernel_size, **_sublayer_kwargs(self, "conv1"))
        self.conv1.build(input_shape)
        self.conv2 = ConvNormAct(self.filters, self.kernel_size, activation=None,
                                 **_sublayer_kwargs(self, "conv2"))
        self.conv2.build(out_shape)
        self.drop = layers.SpatialDropout2D(self.dropout, **_sublayer_kwargs(self, "drop"))
        self.shortcut = None
        if input_shape[-1] != self.filters:
            self.shortcut = ConvNormAct(self.filters, 1, activation=None, **_sublayer_kwargs(self, "shortcut"))
            self.shortcut.build(input_shape)

    def call(self, inputs, training=None):
        x = self.conv1(inputs, training=training)
        if self.dropout:
            x = self.drop(x, training=training)
        x = self.conv2(x, training=training)
        skip = inputs if self.shortcut is None else self.shortcut(inputs, training=training)
        return ops.relu(x + skip)

    def compute_output_shape(self, input_shape):
        return _with_channels(input_shape, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "kernel_size": self.kernel_size,
                "dropout": self.dropout}


@keras.saving.register_keras_serializable(package=PACKAGE)
class SqueezeExcite(layers.Layer):
    """Squeeze-and-excitation (Hu et al., 2018): per-channel sigmoid gates computed from the global mean.

    Args:
        ratio: channel reduction of the hidden layer.
        min_units: the fewest hidden units, so that narrow (width-scaled) blocks keep a useful bottleneck.

    Shapes: (B, H, W, C) -> (B, H, W, C).
    """

    def __init__(self, ratio: int = 8, min_units: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.ratio = int(ratio)
        self.min_units = int(min_units)

    def build(self, input_shape):
        channels = int(input_shape[-1])
        units = max(channels // self.ratio, self.min_units)
        self.reduce = layers.Dense(units, activation="relu", **_sublayer_kwargs(self, "reduce"))
        self.reduce.build((None, channels))
        self.expand = layers.Dense(channels, activation="sigmoid", **_sublayer_kwargs(self, "expand"))
        self.expand.build((None, units))

    def call(self, inputs):
        squeezed = ops.mean(inputs, axis=(1, 2))
        gates = self.expand(self.reduce(squeezed))
        return inputs * gates[:, None, None, :]

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self):
        return {**super().get_config(), "ratio": self.ratio, "min_units": self.min_units}


@keras.saving.register_keras_serializable(package=PACKAGE)
class ASPP(layers.Layer):
    """Atrous spatial pyramid pooling (Chen et al., DeepLab v3): context at several receptive fields.

    Branches: a 1x1 conv, one 3x3 conv per dilation rate, and global average pooling broadcast back over
    the map; they are concatenated and projected by a 1x1 conv. Every conv is conv-BN-ReLU.

    Args:
        filters: channels of every branch and of the output.
        rates: dilation rates of the 3x3 branches; keep them below the map size (1, 2, 3 for 4x8 maps).
        image_pooling: add the global-average-pooling branch.

    Shapes: (B, H, W, C) -> (B, H, W, filters).
    """

    def __init__(self, filters: int, rates=SMALL_MAP_RATES, image_pooling: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.rates = tuple(int(r) for r in rates)
        self.image_pooling = bool(image_pooling)

    def build(self, input_shape):
        self.branches = [ConvNormAct(self.filters, 1, **_sublayer_kwargs(self, "branch_1x1"))]
        self.branches += [ConvNormAct(self.filters, 3, dilation_rate=r, **_sublayer_kwargs(self, f"branch_r{r}"))
                          for r in self.rates]
        for branch in self.branches:
            branch.build(input_shape)
        n_branches = len(self.branches)
        self.pool_conv = None
        if self.image_pooling:
            self.pool_conv = ConvNormAct(self.filters, 1, **_sublayer_kwargs(self, "pool_conv"))
            self.pool_conv.build((None, 1, 1, input_shape[-1]))
            n_branches += 1
        self.project = ConvNormAct(self.filters, 1, **_sublayer_kwargs(self, "project"))
        self.project.build(_with_channels(input_shape, self.filters * n_branches))

    def call(self, inputs, training=None):
        outputs = [branch(inputs, training=training) for branch in self.branches]
        if self.pool_conv is not None:
            pooled = self.pool_conv(ops.mean(inputs, axis=(1, 2), keepdims=True), training=training)
            outputs.append(ops.broadcast_to(pooled, ops.shape(outputs[0])))
        return self.project(ops.concatenate(outputs, axis=-1), training=training)

    def compute_output_shape(self, input_shape):
        return _with_channels(input_shape, self.filters)

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "rates": list(self.rates),
                "image_pooling": self.image_pooling}


@keras.saving.register_keras_serializable(package=PACKAGE)
class MultiScaleASPP(layers.Layer):
    """Three ASPP modules of `filters`, `filters // 2` and `filters // 4` channels, concatenated.

    The reference solution's bridge: the narrower modules add cheap extra views of the same context.

    Args:
        filters: channels of the widest ASPP.
        rates: dilation rates shared by the three modules.

    Shapes: (B, H, W, C) -> (B, H, W, filters + filters // 2 + filters // 4).
    """

    def __init__(self, filters: int, rates=SMALL_MAP_RATES, **kwargs):
        super().__init__(**kwargs)
        self.filters = int(filters)
        self.rates = tuple(int(r) for r in rates)

    @property
    def widths(self) -> tuple[int, int, int]:
        return self.filters, max(self.filters // 2, 1), max(self.filters // 4, 1)

    def build(self, input_shape):
        self.aspps = [ASPP(width, self.rates, **_sublayer_kwargs(self, f"aspp_{width}"))
                        for width in self.widths]
        for module in self.aspps:
            module.build(input_shape)

    def call(self, inputs, training=None):
        return ops.concatenate([module(inputs, training=training) for module in self.aspps], axis=-1)

    def compute_output_shape(self, input_shape):
        return _with_channels(input_shape, sum(self.widths))

    def get_config(self):
        return {**super().get_config(), "filters": self.filters, "rates": list(self.rates)}


@keras.saving.register_keras_serializable(package=PACKAGE)
class AttentionGate(layers.Layer):
    """Additive attention gate (Oktay et al., 2018, "Attention U-Net").

    The skip features x are brought to the grid of the gating signal g by a strided conv, added to a 1x1
    projection of g, passed through ReLU and a 1x1 conv to one sigmoid map, which is upsampled back to x's
    grid and multiplies x. The gate lets the coarser, more semantic decoder state choose which skip pixels
    pass.

    Args:
        inter_channels: channels of the intermediate sum; None for half of x's channels.

    Shapes: [x (B, H, W, C), g (B, H/s, W/s, Cg)] with s a positive integer -> (B, H, W, C).
    """

    def __init__(self, inter_channels: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self.inter_channels = inter_channels

    def build(self, input_shape):
        x_shape, g_shape = input_shape
        stride_h, stride_w = x_shape[1] // g_shape[1], x_shape[2] // g_shape[2]
        if stride_h * g_shape[1] != x_shape[1] or stride_w * g_shape[2] != x_shape[2]:
            raise ValueError(f"gating grid {tuple(g_shape[1:3])} does not divide the skip grid {tuple(x_shape[1:3])}")
        self.strides = (stride_h, stride_w)
        inter = self.inter_channels or max(int(x_shape[-1]) // 2, 1)
        self.theta = layers.Conv2D(inter, self.strides, strides=self.strides, use_bias=False,
                                   **_sublayer_kwargs(self, "theta_x"))
        self.theta.build(x_shape)
        self.phi = layers.Conv2D(inter, 1, **_sublayer_kwargs(self, "phi_g"))
        self.phi.build(g_shape)
        self.psi = layers.Conv2D(1, 1, activation="sigmoid", **_sublayer_kwargs(self, "psi"))
        self.psi.build(_with_channels(g_shape, inter))
        self.upsample = layers.UpSampling2D(self.strides, interpolation="bilinear",
                                            **_sublayer_kwargs(self, "upsample"))

    def call(self, inputs):
        x, g = inputs
        attention = self.psi(ops.relu(self.theta(x) + self.phi(g)))
        if self.strides != (1, 1):
            attention = ops.cast(self.upsample(attention), x.dtype)
        return x * attention

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "inter_channels": self.inter_channels}


def _target_size(size, input_shape) -> tuple[int, int]:
    """The fusion grid: `size`, or the largest input grid."""
    if size is not None:
        return size
    return max(int(s[1]) for s in input_shape), max(int(s[2]) for s in input_shape)


def _normalised_weights(layer: layers.Layer, logits):
    """Softmax of the learned logits: non-negative, summing to one, and never stuck at zero like ReLU."""
    return ops.cast(ops.softmax(ops.cast(logits, "float32")), layer.compute_dtype)


@keras.saving.register_keras_serializable(package=PACKAGE)
class WeightedFusion(layers.Layer):
    """Learned convex combination of same-shaped inputs, sum_i w_i x_i with w = softmax(logits).

    Used to merge a gated skip connection with the upsampled decoder features. The weights start equal.

    Args:
        (no arguments beyond the standard layer keywords)

    Shapes: [x_1, ..., x_n], each (B, H, W, C) -> (B, H, W, C).
    """

    def build(self, input_shape):
        if len({tuple(s[1:]) for s in input_shape}) != 1:
            raise ValueError(f"WeightedFusion needs inputs of one shape, got {input_shape}")
        self.logits = self.add_weight(name="logits", shape=(len(input_shape),), initializer="zeros",
                                      dtype="float32")

    def call(self, inputs):
        weights = _normalised_weights(self, self.logits)
        return sum(weights[i] * x for i, x in enumerate(inputs))

    def fusion_weights(self):
        """The current normalised weights, as a NumPy array."""
        return ops.convert_to_numpy(ops.softmax(self.logits))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[0])


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusionBlock(layers.Layer):
    """Upsample every input to one resolution, scale each by a learned weight, and concatenate.

    The weights are n * softmax(logits) for n inputs, so they start at one (a plain concatenation) and the
    network learns which decoder depth to trust.

    Args:
        size: the target (height, width); None for the largest input's grid. Each input grid must divide it.
        interpolation: "bilinear" or "nearest".

    Shapes: [t_i (B, H/s_i, W/s_i, C_i)] -> (B, H, W, sum_i C_i).
    """

    def __init__(self, size=None, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.interpolation = interpolation

    def build(self, input_shape):
        height, width = _target_size(self.size, input_shape)
        self.upsamplers = []
        for i, shape in enumerate(input_shape):
            factor = (height // shape[1], width // shape[2])
            if factor[0] * shape[1] != height or factor[1] * shape[2] != width:
                raise ValueError(f"input {i} grid {tuple(shape[1:3])} does not divide {(height, width)}")
            self.upsamplers.append(None if factor == (1, 1) else layers.UpSampling2D(
                factor, interpolation=self.interpolation, **_sublayer_kwargs(self, f"upsample_{i}")))
        self.logits = self.add_weight(name="logits", shape=(len(input_shape),), initializer="zeros",
                                      dtype="float32")

    def call(self, inputs):
        weights = _normalised_weights(self, self.logits) * len(inputs)
        outputs = []
        for i, (x, upsample) in enumerate(zip(inputs, self.upsamplers, strict=True)):
            if upsample is not None:
                x = ops.cast(upsample(x), self.compute_dtype)
            outputs.append(weights[i] * x)
        return ops.concatenate(outputs, axis=-1)

    def fusion_weights(self):
        """The current weights (summing to the number of inputs), as a NumPy array."""
        return ops.convert_to_numpy(ops.softmax(self.logits)) * len(self.upsamplers)

    def compute_output_shape(self, input_shape):
        height, width = _target_size(self.size, input_shape)
        return (input_shape[0][0], height, width, sum(int(s[-1]) for s in input_shape))

    def get_config(self):
        return {**super().get_config(), "size": None if self.size is None else list(self.size),
                "interpolation": self.interpolation}


@keras.saving.register_keras_serializable(package=PACKAGE)
class FusionHead(layers.Layer):
    """`FusionBlock` followed by a 1x1 convolution and softmax, computed in the cheap order.

    A 1x1 convolution mixes channels and bilinear upsampling mixes pixels, both linearly, so they commute:
    projecting each decoder output to `num_classes` channels at its own resolution and summing the
    upsampled projections is the same function, with the same parameters, as projecting the full-resolution
    concatenation (sum_i C_i channels at H x W). It only skips building that tensor, which dominates the
    training time of narrow networks on a CPU.

    Args:
        num_classes: output channels.
        size: the target (height, width); None for the largest input's grid.
        interpolation: "bilinear" or "nearest".

    Shapes: [t_i (B, H/s_i, W/s_i, C_i)] -> (B, H, W, num_classes) probabilities, float32.
    """

    def __init__(self, num_classes: int, size=None, interpolation: str = "bilinear", **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.size = None if size is None else (int(size[0]), int(size[1]))
        self.interpolation = interpolation

    def build(self, input_shape):
        self.fusion = FusionBlock(self.size, self.interpolation, **_sublayer_kwargs(self, "fusion"))
        self.fusion.build(input_shape)
        channels = sum(int(s[-1]) for s in input_shape)
        # One kernel over the concatenated channels, exactly as the unfused head's.
        self.kernel = self.add_weight(name="kernel", shape=(1, 1, channels, self.num_classes),
                                      initializer="glorot_uniform")
        self.bias = self.add_weight(name="bias", shape=(self.num_classes,), initializer="zeros")

    def call(self, inputs):
        weights = _normalised_weights(self, self.fusion.logits) * len(inputs)
        kernel = ops.cast(self.kernel, self.compute_dtype)
        logits, start = None, 0
        for i, (x, upsample) in enumerate(zip(inputs, self.fusion.upsamplers, strict=True)):
            channels = x.shape[-1]
            projected = ops.conv(weights[i] * x, kernel[:, :, start:start + channels, :], padding="same")
            start += channels
            if upsample is not None:
                projected = upsample(projected)
            projected = ops.cast(projected, "float32")
            logits = projected if logits is None else logits + projected
        return ops.softmax(logits + ops.cast(self.bias, "float32"), axis=-1)

    def compute_output_shape(self, input_shape):
        height, width = _target_size(self.size, input_shape)
        return (input_shape[0][0], height, width, self.num_classes)

    def compute_output_spec(self, inputs):
        shape = self.compute_output_shape([tuple(x.shape) for x in inputs])
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "size": None if self.size is None else list(self.size), "interpolation": self.interpolation}
