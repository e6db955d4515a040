"""Deterministic synthetic stand-ins for both competitions' files, generated in seconds.

Cells: 96x96 RGB crops of one stained cell on a pink smear with red blood cells. The 8 classes differ the way
the real ones do (size, nucleus shape and lobes, cytoplasm colour, granules), with stain, size, position and
noise variation and overlapping size ranges, so a small CNN learns them well but not instantly. Class shares
follow BloodMNIST.

Mars: 64x128 grayscale tiles of textured terrain regions: soil (mid grey, fine grain), bedrock (dark plates
with cracks), sand (bright ripples), rare big rocks (dark shaded blobs), and background (class 0: a smooth sky
strip, or an unlabelled patch whose pixels show terrain but carry no label, as in crowd-labelled data).

Contaminants (optional) mimic the course files: cells get two foreign images repeated with assorted labels,
a few exact duplicates and one image with conflicting labels; Mars gets ~4% alien tiles sharing one mask.
They are shuffled in (the course appends its memes at the end) so cleaning cannot lean on position.
`synth_cells_truth` / `synth_mars_truth` say which rows cleaning must remove.
"""

from __future__ import annotations

import argparse
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from an2dl_kit.data.clean import REPEAT_THRESHOLD
from an2dl_kit.data.io import CellsData, MarsData
from an2dl_kit.files import atomic_path
from an2dl_kit.registry import Registry
from an2dl_kit.task import BIG_ROCK, CELLS, LABELS_FILE, MARS

# BloodMNIST class shares (basophil ... platelet).
CELLS_SHARES = np.array([1218, 3117, 1551, 2895, 1214, 1420, 3329, 2348], dtype=np.float64)
STREAM_CELLS_TRAIN, STREAM_CELLS_TEST, STREAM_MARS, STREAM_CONTAMINANTS = 0, 1, 2, 3
ALIEN_SHARE = 0.04
BIG_ROCK_TILE_SHARE = 0.06


@dataclass(frozen=True)
class Size:
    cells_train: int
    cells_test: int
    mars_train: int
    mars_test: int


SIZES: Registry[Size] = Registry("synthetic size", {"tiny": Size(40, 16, 32, 8), "demo": Size(1200, 240, 600, 120)})


@dataclass(frozen=True)
class CellStyle:
    radius: tuple[float, float]  # cell radius range, px
    cytoplasm: tuple[int, int, int]
    nucleus: tuple[int, int, int]
    lobes: tuple[int, int]  # number of nucleus lobes (range)
    lobe_size: float  # lobe radius / cell radius
    lobe_ring: float  # lobe centre distance / cell radius
    granules: float  # granule density in the cytoplasm
    granule_colour: tuple[int, int, int]


# Shape and colour cues per class; size ranges overlap (lymphocyte/erythroblast, monocyte/granulocyte).
CELL_STYLES = (
    CellStyle((19, 25), (125, 85, 165), (70, 30, 110), (1, 1), 0.55, 0.10, 0.45, (55, 20, 90)),  # basophil
    CellStyle(
        (21, 27), (235, 160, 130), (105, 45, 140), (2, 2), 0.32, 0.42, 0.35, (215, 95, 60)
    ),  # eosinophil
    CellStyle((13, 18), (205, 165, 185), (55, 20, 75), (1, 1), 0.62, 0.05, 0.0, (0, 0, 0)),  # erythroblast
    CellStyle(
        (24, 30), (190, 170, 215), (120, 70, 165), (1, 1), 0.66, 0.18, 0.05, (150, 110, 190)
    ),  # imm. gran.
    CellStyle((14, 19), (165, 180, 230), (85, 40, 130), (1, 1), 0.80, 0.06, 0.0, (0, 0, 0)),  # lymphocyte
    CellStyle(
        (25, 31), (185, 185, 215), (130, 90, 170), (2, 2), 0.46, 0.22, 0.08, (235, 235, 245)
    ),  # monocyte
    CellStyle(
        (21, 26), (228, 198, 212), (100, 40, 140), (3, 4), 0.22, 0.45, 0.15, (200, 160, 190)
    ),  # neutrophil
    CellStyle((3, 6), (160, 105, 195), (120, 70, 170), (1, 4), 1.0, 0.0, 0.0, (0, 0, 0)),  # platelet
)
PLATELET = CELLS.class_names.index("platelet")
BACKGROUND = (226, 200, 206)
RED_CELL = (222, 150, 155)


# --- cells -------------------------------------------------------------------------------------------------

_YY, _XX = np.mgrid[0 : CELLS.image_shape[0], 0 : CELLS.image_shape[1]].astype(np.float32)


def _disc(cy: float, cx: float, r: float, aspect: float = 1.0, angle: float = 0.0, edge: float = 1.2):
    """Soft-edged ellipse: (alpha in 0..1 over its bounding window, window slices)."""
    pad = r + 2 * edge
    y0, y1 = int(max(cy - pad, 0)), int(min(cy + pad + 1, CELLS.image_shape[0]))
    x0, x1 = int(max(cx - pad, 0)), int(min(cx + pad + 1, CELLS.image_shape[1]))
    window = (slice(y0, max(y0, y1)), slice(x0, max(x0, x1)))
    dy, dx = _YY[window] - cy, _XX[window] - cx
    c, s = np.cos(angle), np.sin(angle)
    u, v = c * dx + s * dy, (-s * dx + c * dy) / aspect
    return np.clip((r - np.sqrt(u * u + v * v)) / edge + 0.5, 0.0, 1.0), window


def _full(disc) -> np.ndarray:
    alpha, window = disc
    full = np.zeros(CELLS.image_shape[:2], dtype=np.float32)
    full[window] = alpha
    return full


def _paint(image: np.ndarray, disc, colour: np.ndarray, scale: np.ndarray | float = 1.0) -> None:
    """Blend `colour` into `image` over the disc's window, with opacity alpha * scale."""
    alpha, window = disc
    if isinstance(scale, np.ndarray):
        scale = scale[window]
    a = (alpha * scale)[..., None]
    patch = image[window]
    patch *= 1.0 - a
    patch += a * colour


def _granules(rng: np.random.Generator, density: float) -> np.ndarray:
    """2x2-pixel speckles, the texture cue of granulocytes."""
    coarse = (rng.random((CELLS.image_shape[0] // 2, CELLS.image_shape[1] // 2)) < density).astype(np.float32)
    return np.kron(coarse, np.ones((2, 2), dtype=np.float32))


def _draw_cell(rng: np.random.Generator, label: int) -> np.ndarray:
    style = CELL_STYLES[label]
    stain = rng.normal(1.0, 0.09, 3)  # per-slide colour cast
    image = np.empty(CELLS.image_shape, dtype=np.float32)
    image[:] = np.asarray(BACKGROUND) * stain * rng.uniform(0.93, 1.05)
    for _ in range(rng.integers(1, 5)):  # red blood cells around, often cut by the border
        cy, cx = rng.uniform(-5, 101, 2)
        r = rng.uniform(11, 16)
        _paint(
            image,
            _disc(cy, cx, r, rng.uniform(0.85, 1.0), rng.uniform(0, np.pi)),
            np.asarray(RED_CELL) * stain,
        )
        _paint(image, _disc(cy, cx, r * 0.45), np.asarray(BACKGROUND) * stain, 0.5)

    cy, cx = 48 + rng.normal(0, 3, 2)
    if label == PLATELET:
        for _ in range(rng.integers(style.lobes[0], style.lobes[1] + 1)):
            py, px = cy + rng.normal(0, 6), cx + rng.normal(0, 6)
            r = rng.uniform(*style.radius)
            _paint(
                image,
                _disc(py, px, r, rng.uniform(0.6, 1), rng.uniform(0, np.pi)),
                np.asarray(style.nucleus) * stain,
            )
        return image

    r = rng.uniform(*style.radius)
    aspect, angle = rng.uniform(0.82, 1.0), rng.uniform(0, np.pi)
    body = _disc(cy, cx, r, aspect, angle)
    _paint(image, body, np.asarray(style.cytoplasm) * stain * rng.uniform(0.92, 1.08))
    body_alpha = _full(body)
    if style.granules:
        _paint(image, body, np.asarray(style.granule_colour) * stain, 0.8 * _granules(rng, style.granules))
    n_lobes = rng.integers(style.lobes[0], style.lobes[1] + 1)
    start = rng.uniform(0, 2 * np.pi)
    for k in range(n_lobes):
        theta = start + 2 * np.pi * k / n_lobes + rng.normal(0, 0.25)
        ring = r * style.lobe_ring * rng.uniform(0.8, 1.2)
        lobe = _disc(
            cy + ring * np.sin(theta),
            cx + ring * np.cos(theta),
            r * style.lobe_size * rng.uniform(0.9, 1.1),
            rng.uniform(0.7, 1.0),
            rng.uniform(0, np.pi),
        )
        _paint(image, lobe, np.asarray(style.nucleus) * stain * rng.uniform(0.85, 1.15), body_alpha)
    return image


def _cells_images(rng: np.random.Generator, labels: np.ndarray) -> np.ndarray:
    images = np.empty((len(labels), *CELLS.image_shape), dtype=np.float32)
    for i, label in enumerate(labels):
        images[i] = _draw_cell(rng, int(label))
    sigma = rng.uniform(3, 9, (len(labels), 1, 1, 1)).astype(np.float32)  # sensor noise per image
    images += rng.standard_normal(images.shape, dtype=np.float32) * sigma
    np.rint(images, out=images)
    np.clip(images, 0, 255, out=images)
    return images.astype(np.uint8)


def _cells_labels(rng: np.random.Generator, n: int) -> np.ndarray:
    """Every class at least once (when n >= 8), the rest drawn with BloodMNIST shares, shuffled."""
    base = np.arange(min(n, len(CELL_STYLES)))
    rest = rng.choice(len(CELL_STYLES), n - len(base), p=CELLS_SHARES / CELLS_SHARES.sum())
    return rng.permutation(np.concatenate([base, rest])).astype(np.int64)


def _meme_ogre() -> np.ndarray:
    """A green cartoon face: nothing like a blood cell (the course's Shrek)."""
    image = np.empty(CELLS.image_shape, dtype=np.float32)
    image[:] = (40, 90, 160)
    _paint(image, _disc(52, 48, 34, 0.9), np.array((120, 170, 60)))
    for ex in (36, 60):
        _paint(image, _disc(42, ex, 6), np.array((250, 250, 250)))
        _paint(image, _disc(42, ex, 3), np.array((60, 40, 20)))
    _paint(image, _disc(66, 48, 12, 0.35), np.array((90, 40, 30)))
    return np.rint(image).astype(np.uint8)


def _meme_singer() -> np.ndarray:
    """Stripes and a face-coloured oval (the course's Rick Astley)."""
    stripes = ((_XX // 8) % 2)[..., None] * np.array((180, 60, 40)) + 30
    image = stripes.astype(np.float32)
    _paint(image, _disc(44, 48, 22, 0.8), np.array((235, 190, 160)))
    _paint(image, _disc(26, 48, 20, 0.6), np.array((200, 120, 50)))
    return np.rint(image).astype(np.uint8)


def _cells_contaminated(n: int, seed: int) -> tuple[CellsData, dict[str, np.ndarray]]:
    """Genuine rows plus contaminants, shuffled; returns the data and the rows cleaning must remove."""
    genuine = synth_cells(n, seed)
    rng = np.random.default_rng([seed, STREAM_CONTAMINANTS])
    n_classes = len(CELL_STYLES)
    ogre_per_class = max(2, n // 60)
    singer_copies = max(REPEAT_THRESHOLD, n // 100)
    n_duplicates = max(2, n // 400)

    picks = rng.choice(n, n_duplicates + 1, replace=False)
    dup_rows, conflict_row = picks[:-1], picks[-1]
    conflict_label = (genuine.labels[conflict_row] + rng.integers(1, n_classes)) % n_classes
    images = [
        genuine.images,
        genuine.images[dup_rows],
        genuine.images[[conflict_row]],
        np.repeat(_meme_ogre()[None], ogre_per_class * n_classes, 0),
        np.repeat(_meme_singer()[None], singer_copies, 0),
    ]
    labels = [
        genuine.labels,
        genuine.labels[dup_rows],
        [conflict_label],
        np.repeat(np.arange(n_classes), ogre_per_class),
        rng.integers(0, n_classes, singer_copies),
    ]
    # Kind of every row before shuffling: 0 genuine, 1 duplicate copy, 2 conflicting copy, 3 meme.
    kind = np.concatenate(
        [np.zeros(n), np.ones(n_duplicates), [2], np.full(ogre_per_class * n_classes + singer_copies, 3)]
    ).astype(int)

    order = rng.permutation(len(kind))
    position = np.empty_like(order)
    position[order] = np.arange(len(order))
    data = CellsData(
        images=np.concatenate(images)[order], labels=np.concatenate(labels).astype(np.int64)[order]
    )

    # A duplicate pair loses whichever copy comes later; the conflicting pair loses both.
    dup_copy = position[np.flatnonzero(kind == 1)]
    dup_orig = position[dup_rows]
    truth = {
        "repeated_image": np.sort(position[kind == 3]),
        "conflicting_labels": np.sort(position[[conflict_row, np.flatnonzero(kind == 2)[0]]]),
        "duplicate": np.sort(np.maximum(dup_copy, dup_orig)),
    }
    return data, truth


def synth_cells(n: int, seed: int = 0, contaminants: bool = False) -> CellsData:
    """`n` genuine labelled cells (plus contaminants when asked; see `synth_cells_truth`)."""
    if contaminants:
        return _cells_contaminated(n, seed)[0]
    rng = np.random.default_rng([seed, STREAM_CELLS_TRAIN])
    labels = _cells_labels(rng, n)
    return CellsData(images=_cells_images(rng, labels), labels=labels)


def synth_cells_truth(n: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of `synth_cells(n, seed, contaminants=True)` that cleaning must remove, by reason."""
    return _cells_contaminated(n, seed)[1]


def synth_cells_test(n: int, seed: int = 0) -> CellsData:
    """A labelled test set from an independent random stream."""
    rng = np.random.default_rng([seed, STREAM_CELLS_TEST])
    labels = _cells_labels(rng, n)
    return CellsData(images=_cells_images(rng, labels), labels=labels)


# --- mars --------------------------------------------------------------------------------------------------

_MY, _MX = np.mgrid[0 : MARS.image_shape[0], 0 : MARS.image_shape[1]].astype(np.float32)


def _smooth(rng: np.random.Generator, cell: int) -> np.ndarray:
    """Bilinearly upsampled Gaussian noise with features about `cell` px wide (unit variance-ish)."""
    h, w = MARS.image_shape
    grid = rng.standard_normal((h // cell + 2, w // cell + 2)).astype(np.float32)
    y, x = np.arange(h, dtype=np.float32) / cell, np.arange(w, dtype=np.float32) / cell
    y0, x0 = y.astype(int), x.astype(int)
    fy, fx = (y - y0)[:, None], (x - x0)[None, :]
    top = grid[y0][:, x0] * (1 - fx) + grid[y0][:, x0 + 1] * fx
    bottom = grid[y0 + 1][:, x0] * (1 - fx) + grid[y0 + 1][:, x0 + 1] * fx
    return top * (1 - fy) + bottom * fy


def _texture(rng: np.random.Generator, label: int) -> np.ndarray:
    fine = rng.standard_normal(MARS.image_shape).astype(np.float32)
    if label == 1:  # soil: mid grey, fine grain
        return 115 + 11 * fine + 8 * _smooth(rng, 8)
    if label == 2:  # bedrock: dark plates with darker cracks
        cracks = (np.abs(_smooth(rng, 12)) < 0.12) * -35.0
        return 88 + 22 * _smooth(rng, 16) + 5 * fine + cracks
    # sand: bright ripples
    theta, wavelength = rng.uniform(0, np.pi), rng.uniform(5, 9)
    phase = 2 * np.pi * (_MX * np.cos(theta) + _MY * np.sin(theta)) / wavelength
    return 150 + 14 * np.sin(phase + 1.5 * _smooth(rng, 16)) + 4 * fine


def _draw_tile(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """One (image float32, mask uint8) pair."""
    k = rng.integers(2, 6)
    seeds_y, seeds_x = rng.uniform(0, MARS.image_shape[0], k), rng.uniform(0, MARS.image_shape[1], k)
    classes = rng.choice([1, 2, 3], k, p=[0.4, 0.33, 0.27])
    warp_y, warp_x = 10 * _smooth(rng, 16), 10 * _smooth(rng, 16)
    distance = (_MY + warp_y - seeds_y[:, None, None]) ** 2 + (_MX + warp_x - seeds_x[:, None, None]) ** 2
    mask = classes[np.argmin(distance, axis=0)].astype(np.uint8)
    image = np.zeros(MARS.image_shape, dtype=np.float32)
    for c in np.unique(mask):
        image = np.where(mask == c, _texture(rng, int(c)), image)

    if rng.random() < BIG_ROCK_TILE_SHARE:
        cy, cx, r = rng.uniform(16, 56), rng.uniform(15, 113), rng.uniform(7, 16)
        dy, dx = (_MY - cy) / rng.uniform(0.6, 1.0), _MX - cx
        inside = dy * dy + dx * dx < r * r
        shading = 25 * (dx - dy) / r  # lit from the upper right
        image = np.where(inside, 62 + shading + 6 * rng.standard_normal(MARS.image_shape), image)
        mask[inside] = BIG_ROCK
    if rng.random() < 0.35:  # sky strip with a wavy horizon: background
        horizon = rng.uniform(5, 20) + 3 * np.sin(_MX[0] / rng.uniform(8, 20) + rng.uniform(0, 6))
        sky = _MY < horizon[None, :]
        image = np.where(sky, rng.uniform(170, 210) - 0.8 * _MY + 2 * rng.standard_normal(MARS.image_shape), image)
        mask[sky] = 0
    if rng.random() < 0.25:  # unlabelled patch: terrain visible, label missing
        h, w = rng.integers(8, 40), rng.integers(16, 70)
        y, x = rng.integers(0, MARS.image_shape[0] - h), rng.integers(0, MARS.image_shape[1] - w)
        mask[y : y + h, x : x + w] = 0
    image = image * rng.uniform(0.85, 1.15) + rng.uniform(-12, 12)  # exposure
    return np.clip(np.rint(image), 0, 255).astype(np.float32), mask


def _alien_mask() -> np.ndarray:
    """The one mask every alien tile carries: a head-and-eyes silhouette, not a terrain layout."""
    mask = np.ones(MARS.image_shape, dtype=np.uint8)
    mask[((_MY - 34) / 26) ** 2 + ((_MX - 64) / 20) ** 2 < 1] = 2
    for ex in (56, 72):
        mask[((_MY - 28) / 5) ** 2 + ((_MX - ex) / 4) ** 2 < 1] = 3
    mask[:6] = 0
    return mask


def _alien_image(rng: np.random.Generator) -> np.ndarray:
    image = 60 + 8 * rng.standard_normal(MARS.image_shape)
    head = ((_MY - 34) / 26) ** 2 + ((_MX - 64) / 20) ** 2 < 1
    image = np.where(head, 200 + 10 * rng.standard_normal(MARS.image_shape), image)
    return np.clip(np.rint(image), 0, 255).astype(np.float32)


def _tiles(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
    pairs = [_draw_tile(rng) for _ in range(n)]
    if not pairs:
        return np.zeros((0, *MARS.image_shape), np.float32), np.zeros((0, *MARS.image_shape), np.uint8)
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])


def _mars(n_train: int, n_test: int, seed: int, aliens: bool) -> tuple[MarsData, np.ndarray, np.ndarray]:
    rng = np.random.default_rng([seed, STREAM_MARS])
    images, masks = _tiles(rng, n_train)
    test, test_masks = _tiles(rng, n_test)
    alien_rows = np.array([], dtype=np.int64)
    if aliens:
        crng = np.random.default_rng([seed, STREAM_CONTAMINANTS])
        n_aliens = max(REPEAT_THRESHOLD, round(ALIEN_SHARE * n_train))
        alien_rows = np.sort(crng.choice(n_train + n_aliens, n_aliens, replace=False))
        genuine_rows = np.setdiff1d(np.arange(n_train + n_aliens), alien_rows)
        all_images = np.empty((n_train + n_aliens, *MARS.image_shape), np.float32)
        all_masks = np.empty((n_train + n_aliens, *MARS.image_shape), np.uint8)
        all_images[genuine_rows], all_masks[genuine_rows] = images, masks
        all_images[alien_rows] = np.stack([_alien_image(crng) for _ in range(n_aliens)])
        all_masks[alien_rows] = _alien_mask()
        images, masks = all_images, all_masks
    return MarsData(images=images, masks=masks, test=test), test_masks, alien_rows


def synth_mars(n_train: int, n_test: int, seed: int = 0, aliens: bool = False) -> tuple[MarsData, np.ndarray]:
    """Training tiles with masks (plus ~4% aliens when asked), test tiles, and the test masks."""
    data, test_masks, _ = _mars(n_train, n_test, seed, aliens)
    return data, test_masks


def synth_mars_truth(n_train: int, seed: int = 0) -> dict[str, np.ndarray]:
    """Rows of `synth_mars(n_train, ..., aliens=True)` that cleaning must remove, by reason."""
    return {"repeated_mask": _mars(n_train, 0, seed, aliens=True)[2]}


# --- files -------------------------------------------------------------------------------------------------


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    # Uncompressed: float64 Mars arrays compress slowly and the files are regenerated in seconds anyway.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, **arrays)
    return path


def write_synthetic(
    out: str | os.PathLike, seed: int = 0, contaminants: bool = False, size: str = "demo"
) -> dict[str, Path]:
    """Write both competitions' files in the course formats; returns {name: path}.

    Layout (as /work/shared/data): out/cells/{training_set,test_set,test_labels}.npz and
    out/mars/{mars_for_students,test_labels}.npz. `size`: "tiny" (tests, < 1 s) or "demo".
    """
    counts, out = SIZES[size], Path(out)
    cells = synth_cells(counts.cells_train, seed, contaminants)
    cells_test = synth_cells_test(counts.cells_test, seed)
    mars, mars_test_masks = synth_mars(counts.mars_train, counts.mars_test, seed, aliens=contaminants)
    training_set = np.stack([mars.images, mars.masks.astype(np.float32)], axis=1).astype(np.float64)
    return {
        "cells_train": _save_npz(
            out / CELLS.name / CELLS.train_file,
            images=cells.images,
            labels=cells.labels.astype(np.uint8)[:, None],
        ),
        "cells_test": _save_npz(out / CELLS.name / CELLS.test_file, images=cells_test.images),
        "cells_test_labels": _save_npz(
            out / CELLS.name / LABELS_FILE, labels=cells_test.labels.astype(np.uint8)
        ),
        "mars": _save_npz(
            out / MARS.name / MARS.train_file,
            training_set=training_set,
            test_set=mars.test.astype(np.float64),
        ),
        "mars_test_labels": _save_npz(out / MARS.name / LABELS_FILE, labels=mars_test_masks),
    }


def cli(args: argparse.Namespace) -> int:
    """`an2dl synth --out DIR [--seed N] [--contaminants] [--size tiny|demo]`."""
    paths = write_synthetic(args.out, seed=args.seed, contaminants=args.contaminants, size=args.size)
    for path in paths.values():
        print(path)
    return 0
