"""Size of the Mars networks: parameters and forward FLOPs per 64x128 tile.

FLOPs come from TensorFlow's graph profiler on the inference graph of one tile (a multiply-add counts as
two FLOPs). Rows: the full-size enhanced U-Net (the `kaggle` profile), the width the `local` profile
trains, and the plain 3-level U-Net baseline.

    .venv/bin/python -m bench.mars_size
"""

from __future__ import annotations

from bench.common import Row, fmt, main, progress

PART = "mars_size"


def forward_flops(model) -> int:
    """FLOPs of one forward pass on one tile, from the frozen inference graph."""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2
    from tensorflow.python.profiler import model_analyzer
    from tensorflow.python.profiler.option_builder import ProfileOptionBuilder

    tf.get_logger().setLevel("ERROR")  # the v1 profiler's deprecation notices
    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32)
    concrete = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    graph = convert_variables_to_constants_v2(concrete).graph
    options = ProfileOptionBuilder(ProfileOptionBuilder.float_operation()).with_empty_output().build()
    return int(model_analyzer.profile(graph, options=options).total_float_ops)


def rows() -> list[Row]:
    from an2dl_kit.models.mars import build_model
    from an2dl_kit.tasks.mars import PROFILES

    kaggle, local = PROFILES["kaggle"], PROFILES["local"]
    variants = (
        (f"enhanced U-Net, width {kaggle.width} (kaggle)", "enhanced", kaggle.width, kaggle.fused_head),
        (f"enhanced U-Net, width {local.width}, fused head (local)", "enhanced", local.width, local.fused_head),
        ("plain 3-level U-Net baseline, width 1.0", "plain", 1.0, False),
    )
    out = []
    for label, architecture, width, fused_head in variants:
        progress(f"building {label}")
        model = build_model(architecture, width=width, fused_head=fused_head)
        flops = forward_flops(model)
        out.append(Row(PART, f"{label}: parameters", fmt(model.count_params()), "parameters"))
        out.append(Row(PART, f"{label}: forward FLOPs per tile", fmt(flops / 1e9), "GFLOPs",
                       "64x128x1 tile, inference graph, multiply-add = 2 FLOPs"))
    return out


if __name__ == "__main__":
    raise SystemExit(main(rows))
