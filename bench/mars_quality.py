"""Quality of the `local` Mars profile on real AI4Mars tiles, against a plain U-Net with the same budget.

Trains, one after the other and with the same training-time budget and seed:
- `enhanced`: the `local` profile (enhanced U-Net, background left out of the loss, adaptive class weights,
  big-rock oversampling, online augmentation, never-background argmax);
- `plain`: a plain 3-level U-Net (32/64/128, bottleneck 256) trained the plain way: categorical
  cross-entropy over all five classes, no augmentation, no class weights, plain argmax;
- `plain+recipe` (with --recipe-baseline): the same plain U-Net with the `local` profile's recipe, which
  separates what the network adds from what the recipe adds.
Then prints the leaderboard mIoU (MeanIoU(num_classes=5, ignore_class=0)) on `test_labels.npz` and the
per-class IoU, with and without flip TTA. Skips cleanly when the data is absent.

Targets (issue 4): the `local` profile reaches mIoU >= 0.55 within 15 minutes of training on 2 cores, and
at least 0.05 above the plain U-Net trained with the same budget.

    nice -n 10 .venv/bin/python -m bench.mars_quality [--budget 900] [--out build/bench/mars_quality]
        [--recipe-baseline] [--baseline-width 1.0]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from an2dl_kit.task import LABELS_FILE, MARS  # noqa: E402
from bench.common import Row, add_rows_option, emit, fmt, progress, target_note  # noqa: E402

PART = "mars_quality"
DEFAULT_OUT = Path("build/bench/mars_quality")
MIOU_TARGET, GAP_TARGET = 0.55, 0.05
PLAIN_RECIPE = dict(architecture="plain", width=1.0, loss="cce", ignore_background=False,
                    never_background=False, adaptive_weights=False, oversample_big_rock=1, augment="none",
                    cleanup=0)
KIT_RECIPE_ON_PLAIN = dict(architecture="plain", width=1.0)
CLASSES = tuple(MARS.class_names[c] for c in MARS.scored_classes)


def find_data() -> Path | None:
    """The shared data root (`discover.shared_data_root`) when it also holds the Mars test labels."""
    from an2dl_kit.data.discover import shared_data_root

    root = shared_data_root()
    return root if root is not None and (root / MARS.name / LABELS_FILE).is_file() else None


def variants(recipe_baseline: bool, baseline_width: float = 1.0) -> dict[str, dict]:
    out = {"enhanced": {}, "plain": {**PLAIN_RECIPE, "width": baseline_width}}
    if recipe_baseline:
        out["plain+recipe"] = {**KIT_RECIPE_ON_PLAIN, "width": baseline_width}
    return out


def result_rows(name: str, metrics: dict, budget: float) -> list[Row]:
    """Test mIoU without and with TTA, and the training's time, epochs and machine load, of one run."""
    rows = []
    for key, label in (("test", "no TTA"), ("test_tta", "flip TTA")):
        scores = metrics[key]
        per_class = ", ".join(f"{c} {scores['iou'][c]:.3f}" for c in CLASSES)
        rows.append(Row(PART, f"{name}: test mIoU, {label}", f"{scores['miou']:.4f}", "mIoU",
                        f"per class: {per_class}; pixel accuracy {scores['pixel_accuracy']:.3f}"))
    phase = metrics["phases"][0]
    seconds, machine = metrics["seconds"], metrics["machine"]
    share = seconds["training_cpu"] / (seconds["training"] * machine["cpu_count"])
    rows.append(Row(PART, f"{name}: training", fmt(seconds["training"]), "s",
                    f"{phase['epochs_run']} epochs, budget {fmt(budget)} s, {fmt(metrics['model']['params'])} "
                    f"parameters, validation mIoU {metrics['validation_tta']['miou']:.4f} (TTA); CPU time "
                    f"{fmt(seconds['training_cpu'])} s = {share:.0%} of {machine['cpu_count']} cores, load average "
                    f"{machine['load_average']['15min']} (15 min)"))
    return rows


def comparison_rows(results: dict[str, dict]) -> list[Row]:
    """The submitted masks' mIoU of `enhanced` against its target, and its gap to the plain U-Net."""
    best = max(results["enhanced"]["test"]["miou"], results["enhanced"]["test_tta"]["miou"])
    submitted = results["enhanced"]["test_tta"]["miou"]
    gap = submitted - max(results["plain"]["test"]["miou"], results["plain"]["test_tta"]["miou"])
    return [Row(PART, "enhanced (local): test mIoU of the submitted masks", f"{submitted:.4f}", "mIoU",
                target_note(submitted, MIOU_TARGET)),
            Row(PART, "enhanced minus plain U-Net (its better of TTA / no TTA)", f"{gap:+.4f}", "mIoU",
                target_note(gap, GAP_TARGET) + f"; best enhanced {best:.4f}")]


def run_all(data: Path, out: Path, budget: float, recipe_baseline: bool, baseline_width: float) -> list[Row]:
    from an2dl_kit.tasks import resolve_config, run

    named = variants(recipe_baseline, baseline_width)
    for overrides in named.values():  # every variant is checked before the first one trains
        resolve_config(MARS.name, "local", {**overrides, "budget_s": budget})
    results, rows = {}, []
    for name, overrides in named.items():
        progress(f"training {name} for up to {budget:.0f} s")
        results[name] = run(MARS.name, data, out / name.replace("+", "_"), "local",
                            overrides={**overrides, "budget_s": budget})
        if results[name]["test"] is None:
            raise SystemExit(f"mars_quality: {data / MARS.name / LABELS_FILE} does not match the test set")
        rows += result_rows(name, results[name], budget)
    return rows + comparison_rows(results)


def rows(budget: float | None = None, out: Path = DEFAULT_OUT, recipe_baseline: bool = False,
         baseline_width: float = 1.0) -> list[Row]:
    from an2dl_kit.tasks import resolve_config

    data = find_data()
    if data is None:
        return [Row(PART, "skipped", "-", "-", "real stand-in data (../shared/data/mars) not available")]
    budget = budget or resolve_config(MARS.name, "local").run.budget_s
    return run_all(data, Path(out), budget, recipe_baseline, baseline_width)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, help="training seconds per model (default: the local profile's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--recipe-baseline", action="store_true",
                        help="also train the plain U-Net with the local profile's recipe")
    parser.add_argument("--baseline-width", type=float, default=1.0,
                        help="width multiplier of the plain U-Net (1.0: 32/64/128 filters)")
    add_rows_option(parser)
    args = parser.parse_args(argv)
    emit(rows(args.budget, args.out, args.recipe_baseline, args.baseline_width), args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(cli())
