"""Parameters and forward FLOPs per image of every cells backbone and of the Mars U-Nets.

Mars rows: the enhanced U-Net at the width of each profile (`kaggle`, `local`) and the plain 3-level U-Net
baseline (width 1.0) that `bench.mars_quality` trains beside it.

FLOPs: the analytic count of `an2dl_kit.models.flops` (convolutions and matrix products of the traced graph,
one multiply-accumulate = 2 FLOPs).

Run alone: `python -m bench.hardware_size`.
"""

from __future__ import annotations

from an2dl_kit.models.flops import forward_flops
from an2dl_kit.task import CELLS, MARS
from bench.common import Row, fmt, main, progress

PART = "size"
MARS_SHAPE = (*MARS.image_shape, 1)  # the grey tile with its channel axis, as the U-Net takes it
# The cells backbones of the reference solution's table, plus the kit's CPU network.
CELLS_BACKBONES = ("mobilenet", "inception_v3", "efficientnet", "convnext_base", "convnext_large", "small_cnn")


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
