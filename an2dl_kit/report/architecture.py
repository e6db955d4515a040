"""The model of a run, read back from its saved file: forward FLOPs and the architecture as a table of blocks.

The kit names its layers `<block>_<part>` (enc1_res, enc1_se, head_dense_512...), so the layers that share the
part before the first underscore form one block of the table: the Mars U-Net becomes input, four
encoders, bridge, four decoders and head; a classifier becomes input, backbone, head and output.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Block:
    """Consecutive layers of one block: their name, layer types, the last one's output shape, parameters."""

    name: str
    layers: tuple[str, ...]
    output_shape: tuple
    params: int


@dataclass(frozen=True)
class ModelDescription:
    input_shape: tuple
    flops: int
    blocks: list[Block]


def blocks(model) -> list[Block]:
    """The model's top-level layers grouped into blocks by name prefix, in order of each block's first layer;
    a block's output shape is that of its last layer (a U-Net computes a decoder's skip branch before the
    bridge ends, so a block's layers need not be adjacent)."""
    grouped: dict[str, Block] = {}
    for layer in model.layers:
        name = layer.name.split("_")[0]
        kind, shape = type(layer).__name__, tuple(layer.output.shape[1:])
        last = grouped.get(name)
        if last is None:
            grouped[name] = Block(name, (kind,), shape, layer.count_params())
        else:
            kinds = last.layers if kind in last.layers else (*last.layers, kind)
            grouped[name] = Block(name, kinds, shape, last.params + layer.count_params())
    return list(grouped.values())


def describe(model_file: Path) -> ModelDescription:
    """Load the saved model (without its optimizer) and describe it; TensorFlow loads here."""
    from an2dl_kit.models.flops import forward_flops
    from an2dl_kit.models.mars import load_model  # registers the kit's layers and losses (Mars and cells)

    model = load_model(model_file)
    input_shape = tuple(model.input_shape[1:])
    return ModelDescription(input_shape, forward_flops(model, input_shape), blocks(model))
