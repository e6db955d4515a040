"""Test-time augmentation for both tasks: named views, each an (apply, undo) pair on image batches.

A view transforms a batch of images (N, H, W[, C]) along its spatial axes 1 and 2. Classification
predicts every view and averages the class probabilities. Dense prediction (segmentation) also maps each
view's probability maps (N, H, W, K) back to the original geometry with `undo` before the mean; flips and
rotations by multiples of 90 degrees are undone exactly, shifts and small rotations up to the border pixels
they pushed out.

Predictions can adapt the model's BatchNorm statistics to the images predicted (`adapt`, the `bn_adapt`
setting): `inference.adapt`.

This module depends on NumPy and on standard-library-only modules of the kit (`errors`, `registry`, `adapt`):
`codabench.py` copies the sources, less their imports of each other, into the self-contained `model.py` of a
Codabench submission, so the TTA and adaptation that scored a run are the ones the submission runs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from an2dl_kit.errors import KitError
from an2dl_kit.inference.adapt import adapted
from an2dl_kit.registry import Registry

# Images per model.predict call group; bounds the memory of the transformed copies.
CHUNK = 1024
SHIFT_PX = 3
ROTATION_DEG = 10.0


@dataclass(frozen=True)
class View:
    """One test-time view: `apply` maps an image batch, `undo` maps a dense prediction back."""

    apply: Callable[[np.ndarray], np.ndarray]
    undo: Callable[[np.ndarray], np.ndarray]


def _identity(x: np.ndarray) -> np.ndarray:
    return x


def _flip_lr(x: np.ndarray) -> np.ndarray:
    return x[:, :, ::-1]


def _flip_ud(x: np.ndarray) -> np.ndarray:
    return x[:, ::-1]


def _rot90(k: int) -> Callable[[np.ndarray], np.ndarray]:
    def rotate(x: np.ndarray) -> np.ndarray:
        return np.rot90(x, k, axes=(1, 2))

    return rotate


def _transpose(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, 1, 2)


def _anti_transpose(x: np.ndarray) -> np.ndarray:
    """Mirror about the anti-diagonal: the eighth element of the dihedral group."""
    return np.swapaxes(x, 1, 2)[:, ::-1, ::-1]


def _shift(dy: int, dx: int) -> Callable[[np.ndarray], np.ndarray]:
    """Translate content by (dy, dx) pixels, repeating the edge pixels into the uncovered border."""

    def shift(x: np.ndarray) -> np.ndarray:
        height, width = x.shape[1:3]
        pad = [(0, 0), (abs(dy), abs(dy)), (abs(dx), abs(dx))] + [(0, 0)] * (x.ndim - 3)
        padded = np.pad(x, pad, mode="edge")
        top, left = abs(dy) - dy, abs(dx) - dx
        return padded[:, top:top + height, left:left + width]

    return shift


def _rotate(degrees: float) -> Callable[[np.ndarray], np.ndarray]:
    """Rotate content counter-clockwise about the image centre, bilinear, edge pixels repeated."""

    def rotate(x: np.ndarray) -> np.ndarray:
        height, width = x.shape[1:3]
        cos, sin = float(np.cos(np.deg2rad(degrees))), float(np.sin(np.deg2rad(degrees)))
        yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
        cy, cx = (height - 1) / 2.0, (width - 1) / 2.0
        # Inverse mapping: the source of each output pixel is the output position rotated by -theta
        # (rows grow downwards, so a counter-clockwise turn on screen has this sign pattern).
        sx = cos * (xx - cx) - sin * (yy - cy) + cx
        sy = sin * (xx - cx) + cos * (yy - cy) + cy
        sx, sy = np.clip(sx, 0, width - 1), np.clip(sy, 0, height - 1)
        fx, fy = np.floor(sx), np.floor(sy)
        wx, wy = sx - fx, sy - fy
        x0, y0 = fx.astype(np.int64), fy.astype(np.int64)
        x1, y1 = np.minimum(x0 + 1, width - 1), np.minimum(y0 + 1, height - 1)
        if x.ndim == 4:
            wx, wy = wx[..., None], wy[..., None]
        data = x.astype(np.float32, copy=False)
        top = data[:, y0, x0] * (1 - wx) + data[:, y0, x1] * wx
        bottom = data[:, y1, x0] * (1 - wx) + data[:, y1, x1] * wx
        return top * (1 - wy) + bottom * wy

    return rotate


VIEWS: Registry[View] = Registry("TTA view", {
    "identity": View(_identity, _identity),
    "flip_lr": View(_flip_lr, _flip_lr),
    "flip_ud": View(_flip_ud, _flip_ud),
    "rot90": View(_rot90(1), _rot90(3)),
    "rot180": View(_rot90(2), _rot90(2)),
    "rot270": View(_rot90(3), _rot90(1)),
    "transpose": View(_transpose, _transpose),
    "anti_transpose": View(_anti_transpose, _anti_transpose),
    "shift_right": View(_shift(0, SHIFT_PX), _shift(0, -SHIFT_PX)),
    "shift_left": View(_shift(0, -SHIFT_PX), _shift(0, SHIFT_PX)),
    "shift_down": View(_shift(SHIFT_PX, 0), _shift(-SHIFT_PX, 0)),
    "shift_up": View(_shift(-SHIFT_PX, 0), _shift(SHIFT_PX, 0)),
    "rotate_ccw": View(_rotate(ROTATION_DEG), _rotate(-ROTATION_DEG)),
    "rotate_cw": View(_rotate(-ROTATION_DEG), _rotate(ROTATION_DEG)),
})

# The reference solution's eight views.
REFERENCE_VIEWS = ("identity", "flip_lr", "shift_right", "shift_left", "shift_down", "shift_up",
                   "rotate_ccw", "rotate_cw")
# The dihedral group: exact symmetries of a cell image (and of any square image's labels).
DIHEDRAL_VIEWS = ("identity", "flip_lr", "flip_ud", "rot90", "rot180", "rot270", "transpose",
                  "anti_transpose")
# Views that keep a non-square (e.g. 64x128 Mars) image's shape and undo exactly.
DENSE_VIEWS = ("identity", "flip_lr", "flip_ud", "rot180")
VIEW_SETS: Registry[tuple[str, ...]] = Registry("TTA view set", {
    "none": ("identity",),
    "reference": REFERENCE_VIEWS,
    "dihedral": DIHEDRAL_VIEWS,
    "dihedral+shifts": DIHEDRAL_VIEWS + ("shift_right", "shift_left", "shift_down", "shift_up"),
    "dense": DENSE_VIEWS,
})


def resolve_views(views: str | Sequence[str]) -> tuple[str, ...]:
    """A view-set name (in `VIEW_SETS`), comma-separated view names or a sequence of them -> view names.

    Anything else is a one-line `KitError` listing the valid views and sets.
    """
    if isinstance(views, str):
        names = VIEW_SETS.get(views) or tuple(v.strip() for v in views.split(",") if v.strip())
    else:
        names = tuple(views)
    unknown = [name for name in names if name not in VIEWS]
    if unknown or not names:
        raise KitError(f"TTA views {views!r}: unknown {', '.join(map(str, unknown)) or 'empty'}; choose views "
                       f"from {', '.join(VIEWS.choices)} or a set from {', '.join(VIEW_SETS.choices)}")
    return names


def predict_tta(model, x: np.ndarray, views: str | Sequence[str] = REFERENCE_VIEWS, batch_size: int = 64,
                dense: bool = False, adapt: str = "none") -> np.ndarray:
    """Mean probability over `views`; with `dense`, each view's maps are undone first.

    Args:
        model: anything with `predict(x, batch_size=..., verbose=0)` returning probabilities.
        x: images (N, H, W[, C]) as the model takes them.
        views: a view-set name, a comma-separated string or a sequence of view names.
        batch_size: the model's inference batch size.
        dense: the model predicts per-pixel maps (N, H, W, K).
        adapt: BatchNorm statistics (`adapt.ADAPTATIONS`): "none", "set" (re-estimated on all of `x`) or
            "batch" (each prediction batch its own).

    Returns:
        float32 probabilities (N, K) or (N, H, W, K).
    """
    names = resolve_views(views)
    with adapted(model, adapt, x):
        return _predict_views(model, x, names, batch_size, dense)


def _predict_views(model, x: np.ndarray, names: tuple[str, ...], batch_size: int, dense: bool) -> np.ndarray:
    chunks = []
    for start in range(0, len(x), CHUNK):
        # Float input for every view, so the model sees one dtype (and traces its predict function once).
        chunk = np.asarray(x[start:start + CHUNK], dtype=np.float32)
        total = None
        for name in names:
            view = VIEWS[name]
            probs = np.asarray(model.predict(np.ascontiguousarray(view.apply(chunk)), batch_size=batch_size,
                                             verbose=0), dtype=np.float32)
            if dense:
                probs = view.undo(probs)
            total = probs if total is None else total + probs
        chunks.append(total / len(names))
    return np.concatenate(chunks).astype(np.float32)
