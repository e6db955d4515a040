"""Forward FLOPs of a Keras model, counted analytically over its traced TensorFlow graph.

The model's forward pass is traced to a graph for one input, and every convolution, transposed convolution,
depthwise convolution and matrix product in it (nested functions included) is costed from its tensor shapes,
one multiply-accumulate = 2 FLOPs. Element-wise work (activations, normalisation, pooling, resizing) is left
out: it is a few percent of the total and is memory-bound rather than FLOP-bound on a GPU. The count
reproduces the published multiply-accumulates of MobileNetV2 (0.30 G at 224 px), InceptionV3 (5.7 G at
299 px) and ConvNeXt-Base (15.4 G at 224 px). TensorFlow's own profiler (`tf.compat.v1.profiler`) is not used:
it skips grouped and depthwise convolutions and the ops inside nested functions, and undercounts ConvNeXt and
MobileNet.

Used by `an2dl report` (the model section) and the size benchmarks (`bench/hardware_size.py`).
"""

from __future__ import annotations

import math


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
