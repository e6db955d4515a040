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

from bench.common import Row, fmt, progress, table, target_note  # noqa: E402

PART = "mars_quality"
DATA_CANDIDATES = (Path("/work/shared/data"), Path(__file__).resolve().parents[2] / "shared" / "data")
DEFAULT_OUT = Path("build/bench/mars_quality")
MIOU_TARGET, GAP_TARGET = 0.55, 0.05
PLAIN_RECIPE = dict(architecture="plain", width=1.0, loss="cce", ignore_background=False,
                    never_background=False, adaptive_weights=False, oversample_big_rock=1, augment="none",
                    cleanup=0)
KIT_RECIPE_ON_PLAIN = dict(architecture="plain", width=1.0)
CLASSES = ("soil", "bedrock", "sand", "big rock")


def find_data() -> Path | None:
    for root in DATA_CANDIDATES:
        if (root / "mars" / "mars_for_students.npz").is_file() and (root / "mars" / "test_labels.npz").is_file():
            return root
    return None


def variants(recipe_baseline: bool, baseline_width: float = 1.0) -> dict[str, dict]:
    out = {"enhanced": {}, "plain": {**PLAIN_RECIPE, "width": baseline_width}}
    if recipe_baseline:
        out["plain+recipe"] = {**KIT_RECIPE_ON_PLAIN, "width": baseline_width}
    return out


def result_rows(name: str, metrics: dict, budget: float) -> list[Row]:
    rows = []
    for key, label in (("test", "no TTA"), ("test_tta", "flip TTA")):
        scores = metrics[key]
        per_class = ", ".join(f"{c} {scores['iou'][c]:.3f}" for c in CLASSES)
        rows.append(Row(PART, f"{name}: test mIoU, {label}", f"{scores['miou']:.4f}", "mIoU",
                        f"per class: {per_class}; pixel accuracy {scores['pixel_accuracy']:.3f}"))
    phase = metrics["phases"][0]
    seconds, machine = metrics["seconds"], metrics["machine"]
    share = seconds["train_cpu"] / (seconds["train"] * machine["cpu_count"])
    rows.append(Row(PART, f"{name}: training", fmt(seconds["train"]), "s",
                    f"{phase['epochs_run']} epochs, budget {fmt(budget)} s, {fmt(metrics['params'])} parameters, "
                    f"validation mIoU {metrics['validation_tta']['miou']:.4f} (TTA); CPU time "
                    f"{fmt(seconds['train_cpu'])} s = {share:.0%} of {machine['cpu_count']} cores, load average "
                    f"{machine['load_average_after_training']['15min']} (15 min)"))
    return rows


def run_all(data: Path, out: Path, budget: float, recipe_baseline: bool, baseline_width: float) -> list[Row]:
    from an2dl_kit.tasks.mars import run

    results, rows = {}, []
    for name, overrides in variants(recipe_baseline, baseline_width).items():
        progress(f"training {name} for up to {budget:.0f} s")
        results[name] = run(data, out / name.replace("+", "_"), "local", budget_s=budget, **overrides)
        rows += result_rows(name, results[name], budget)
    best = max(results["enhanced"]["test"]["miou"], results["enhanced"]["test_tta"]["miou"])
    submitted = results["enhanced"]["test_tta"]["miou"]
    rows.append(Row(PART, "enhanced (local): test mIoU of the submitted masks", f"{submitted:.4f}", "mIoU",
                    target_note(submitted, MIOU_TARGET)))
    gap = submitted - max(results["plain"]["test"]["miou"], results["plain"]["test_tta"]["miou"])
    rows.append(Row(PART, "enhanced minus plain U-Net (its better of TTA / no TTA)", f"{gap:+.4f}", "mIoU",
                    target_note(gap, GAP_TARGET) + f"; best enhanced {best:.4f}"))
    return rows


def rows(budget: float | None = None, out: Path = DEFAULT_OUT, recipe_baseline: bool = False,
         baseline_width: float = 1.0) -> list[Row]:
    from an2dl_kit.tasks.mars import PROFILES

    data = find_data()
    if data is None:
        return [Row(PART, "skipped", "-", "-", "real stand-in data (../shared/data/mars) not available")]
    return run_all(data, Path(out), budget or PROFILES["local"].budget_s, recipe_baseline, baseline_width)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, help="training seconds per model (default: the local profile's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--recipe-baseline", action="store_true",
                        help="also train the plain U-Net with the local profile's recipe")
    parser.add_argument("--baseline-width", type=float, default=1.0,
                        help="width multiplier of the plain U-Net (1.0: 32/64/128 filters)")
    parser.add_argument("--rows", action="store_true", help="print rows as JSON lines (for python -m bench)")
    args = parser.parse_args(argv)
    result = rows(args.budget, args.out, args.recipe_baseline, args.baseline_width)
    if args.rows:
        import json
        from dataclasses import asdict

        from bench.common import ROW_PREFIX

        for row in result:
            print(ROW_PREFIX + json.dumps(asdict(row)), flush=True)
    else:
        print(table(result), end="")
    return 0


if __name__ == "__main__":
    sys.exit(cli())
