"""Parameters and forward FLOPs per image of every cells backbone and of the Mars U-Nets.

Mars rows: the enhanced U-Net at the width of each profile (`kaggle`, `local`) and the plain 3-level U-Net
baseline (width 1.0) that `bench.mars_quality` trains beside it.

FLOPs are an analytic count over the traced graph: the model's forward pass is traced to a TensorFlow
graph for one image, and every convolution, transposed convolution, depthwise convolution and matrix
product in it (nested functions included) is costed from its tensor shapes, one multiply-accumulate =
2 FLOPs. Element-wise work (activations, normalisation, pooling, resizing) is left out: it is a few percent
of the total and is memory-bound rather than FLOP-bound on a GPU. The count reproduces the published
multiply-accumulates of MobileNetV2 (0.30 G at 224 px), InceptionV3 (5.7 G at 299 px) and ConvNeXt-Base
(15.4 G at 224 px). TensorFlow's own profiler (`tf.compat.v1.profiler`) was not used: it skips grouped and
depthwise convolutions and the ops inside nested functions, and undercounts ConvNeXt and MobileNet.

Run alone: `python -m bench.hardware_size`.
"""

from __future__ import annotations

import math

from an2dl_kit.task import CELLS, MARS
from bench.common import Row, fmt, main, progress

PART = "size"
MARS_SHAPE = (*MARS.image_shape, 1)  # the grey tile with its channel axis, as the U-Net takes it
# The cells backbones of the reference solution's table, plus the kit's CPU network.
CELLS_BACKBONES = ("mobilenet", "inception_v3", "efficientnet", "convnext_base", "convnext_large", "small_cnn")


def _elements(shape) -> int:
    return math.prod(int(d) for d in shape)


def op_macs(op) -> int:
    """Multiply-accumulates of one graph op from its static shapes: Conv2D, DepthwiseConv2dNative,
    Conv2DBackpropInput, MatMul and BatchMatMulV2 are costed, every other op is 0."""
    kind = op.type
    if kind == "Conv2D":  # filter (kh, kw, in/groups, out): grouped convolutions included
        kh, kw, in_per_group, _ = op.inputs[1].shape
        return _elements(op.outputs[0].shape) * kh * kw * in_per_group
    if kind == "DepthwiseConv2dNative":
        kh, kw, _, _ = op.inputs[1].shape
        return _elements(op.outputs[0].shape) * kh * kw
    if kind == "Conv2DBackpropInput":  # a transposed convolution: every input value meets the whole kernel
        kh, kw, out_channels, _ = op.inputs[1].shape
        return _elements(op.inputs[2].shape) * kh * kw * out_channels
    if kind in ("MatMul", "BatchMatMulV2"):
        a = op.inputs[0].shape
        transposed = op.get_attr("transpose_a" if kind == "MatMul" else "adj_x")
        return _elements(op.outputs[0].shape) * int(a[-2] if transposed else a[-1])
    return 0


def _graph_macs(graph, seen: set[str]) -> int:
    total = 0
    for op in graph.get_operations():
        total += op_macs(op)
        if "f" not in op.node_def.attr:  # calls of nested functions (PartitionedCall and friends)
            continue
        name = op.get_attr("f").name
        function = graph._get_function(name)
        if name not in seen and function is not None:
            seen.add(name)
            total += _graph_macs(function.graph, seen)
    return total


def forward_flops(model, input_shape) -> int:
    """Forward FLOPs for one input of `input_shape` (without the batch axis), inference mode."""
    import tensorflow as tf

    traced = tf.function(lambda x: model(x, training=False))
    graph = traced.get_concrete_function(tf.TensorSpec((1, *input_shape), tf.float32)).graph
    return 2 * _graph_macs(graph, set())


def cells_model(backbone: str):
    from an2dl_kit.models.cells import build_classifier

    model, _ = build_classifier(backbone, weights="none", input_shape=CELLS.image_shape)
    return model


def mars_model(width: float, architecture: str = "enhanced"):
    from an2dl_kit.models.mars import build_model

    return build_model(architecture, width=width)


def mars_variants() -> list[tuple[str, str, float]]:
    """(row label, architecture, width): the enhanced U-Net of each Mars profile, then the plain baseline."""
    from an2dl_kit.tasks import resolve_config

    out = []
    for profile in ("kaggle", "local"):
        width = resolve_config(MARS.name, profile).model.width
        out.append((f"mars U-Net width {width:g} ({profile} profile)", "enhanced", width))
    return out + [("mars plain 3-level U-Net width 1 (baseline)", "plain", 1.0)]


def rows() -> list[Row]:
    import keras

    side = "x".join(str(d) for d in CELLS.image_shape[:2])
    out = []
    for backbone in CELLS_BACKBONES:
        progress(f"size: cells {backbone}")
        model = cells_model(backbone)
        flops = forward_flops(model, CELLS.image_shape)
        out.append(Row(PART, f"cells {backbone} ({side})", fmt(flops / 1e9), "GFLOP/image",
                       f"{fmt(model.count_params() / 1e6)} M params; weights none, with the kit's head"))
        keras.backend.clear_session()
    tile = "x".join(str(d) for d in MARS_SHAPE)
    for label, architecture, width in mars_variants():
        progress(f"size: {label}")
        model = mars_model(width, architecture)
        flops = forward_flops(model, MARS_SHAPE)
        out.append(Row(PART, label, fmt(flops / 1e9), "GFLOP/tile",
                       f"{fmt(model.count_params() / 1e6)} M params; {tile} tile"))
        keras.backend.clear_session()
    return out


if __name__ == "__main__":
    raise SystemExit(main(rows))
