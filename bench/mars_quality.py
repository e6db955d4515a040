"""Quality of the `local` Mars profile on real AI4Mars tiles, against a plain U-Net with the same budget.

Trains, one after the other and with the same training-time budget and seed:
- `enhanced`: the `local` profile (enhanced U-Net, background left out of the loss, adaptive class weights,
  big-rock oversampling, online augmentation, never-background argmax);
- `plain`: a plain 3-level U-Net (32/64/128, bottleneck 256) trained the plain way: categorical
  cross-entropy over all five classes, no augmentation, no class weights, plain argmax;
- `plain+recipe` (with --recipe-baseline): the same plain U-Net with the `local` profile's recipe, which
  separates what the network adds from what the recipe adds.
Then prints the leaderboard mIoU (MeanIoU(num_classes=5, ignore_class=0)) on `test_labels.npz` and the
per-class IoU, with and without TTA, for every seed (`--seeds N`: seeds 0..N-1), and the mean, standard
deviation and range of the submitted masks' mIoU and big-rock IoU. Skips cleanly when the data is absent.

Targets: the `local` profile's submitted masks reach mIoU >= 0.65 and big-rock IoU >= 0.35 on average within
15 minutes of training on 2 cores, no seed more than 0.01 below, and beat the plain U-Net of the same budget.

    nice -n 10 .venv/bin/python -m bench.mars_quality [--seeds 3] [--budget 900] [--out build/bench/mars_quality]
        [--recipe-baseline] [--baseline-width 1.0] [--baseline-seeds K] [--set FIELD=VALUE ...] [--record [LABEL]]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from an2dl_kit.metrics import format_class_errors  # noqa: E402
from an2dl_kit.task import BIG_ROCK, LABELS_FILE, MARS  # noqa: E402
from bench.common import Row, add_rows_option, emit, fmt, progress, quietly  # noqa: E402
from bench.records import add_record_option, save_record  # noqa: E402

PART = "mars_quality"
DEFAULT_OUT = Path("build/bench/mars_quality")
MIOU_TARGET, BIG_ROCK_TARGET, SEED_SLACK = 0.65, 0.35, 0.01
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


def variants(recipe_baseline: bool, baseline_width: float = 1.0, settings: dict | None = None) -> dict[str, dict]:
    """Each variant's overrides of the `local` profile; `settings` change the kit's (`enhanced`) only."""
    out = {"enhanced": dict(settings or {}), "plain": {**PLAIN_RECIPE, "width": baseline_width}}
    if recipe_baseline:
        out["plain+recipe"] = {**KIT_RECIPE_ON_PLAIN, "width": baseline_width}
    return out


def result_rows(name: str, metrics: dict, budget: float) -> list[Row]:
    """Test mIoU without and with TTA, and the training's time, epochs and machine load, of one run."""
    rows = []
    for key, label in (("test", "no TTA"), ("test_tta", f"submitted ({', '.join(metrics['tta']['views'])})")):
        scores = metrics[key]
        per_class = ", ".join(f"{c} {scores['iou'][c]:.3f}" for c in CLASSES)
        rows.append(Row(PART, f"{name}: test mIoU, {label}", f"{scores['miou']:.4f}", "mIoU",
                        f"per class: {per_class}; pixel accuracy {scores['pixel_accuracy']:.3f}"))
    validation, test = metrics["validation_tta"], metrics["test_tta"]
    rows.append(Row(PART, f"{name}: big rock, validation -> test",
                    f"{validation['iou']['big rock']:.3f} -> {test['iou']['big rock']:.3f}", "IoU",
                    f"validation {format_class_errors(validation['confusion_matrix'], BIG_ROCK, MARS.class_names)}"
                    f"; test {format_class_errors(test['confusion_matrix'], BIG_ROCK, MARS.class_names)}"))
    phase = metrics["phases"][0]
    seconds, machine = metrics["seconds"], metrics["machine"]
    share = seconds["training_cpu"] / (seconds["training"] * machine["cpu_count"])
    rows.append(Row(PART, f"{name}: training", fmt(seconds["training"]), "s",
                    f"{phase['epochs_run']} epochs, budget {fmt(budget)} s, {fmt(metrics['model']['params'])} "
                    f"parameters, validation mIoU {metrics['validation_tta']['miou']:.4f} (TTA); CPU time "
                    f"{fmt(seconds['training_cpu'])} s = {share:.0%} of {machine['cpu_count']} cores, load average "
                    f"{machine['load_average']['15min']} (15 min)"))
    return rows


def spread(values: list[float]) -> str:
    array = np.asarray(values, float)
    return f"{array.mean():.4f} ± {array.std():.4f} ({array.min():.4f}..{array.max():.4f})"


def summary_rows(results: dict[str, list[dict]]) -> list[Row]:
    """Per variant: the submitted masks' mIoU and big-rock IoU over the seeds; the targets for `enhanced`."""
    results = {name: runs for name, runs in results.items() if runs}  # --baseline-seeds 0 leaves them empty
    rows = []
    for name, runs in results.items():
        miou = [m["test_tta"]["miou"] for m in runs]
        rock = [m["test_tta"]["iou"]["big rock"] for m in runs]
        note = ""
        if name == "enhanced":
            ok = (np.mean(miou) >= MIOU_TARGET and min(miou) >= MIOU_TARGET - SEED_SLACK
                  and np.mean(rock) >= BIG_ROCK_TARGET and min(rock) >= BIG_ROCK_TARGET - SEED_SLACK)
            note = (f"targets: mean mIoU >= {MIOU_TARGET}, big rock >= {BIG_ROCK_TARGET}, no seed "
                    f"{SEED_SLACK} below: {'met' if ok else 'missed'}")
        rows.append(Row(PART, f"{name}: submitted mIoU over {len(runs)} seeds", spread(miou), "mIoU", note))
        rows.append(Row(PART, f"{name}: submitted big-rock IoU over {len(runs)} seeds", spread(rock), "IoU", ""))
    if "plain" not in results:
        return rows
    gap = np.mean([m["test_tta"]["miou"] for m in results["enhanced"]]) - np.mean(
        [m["test_tta"]["miou"] for m in results["plain"]])
    return rows + [Row(PART, "enhanced minus plain U-Net (mean submitted mIoU)", f"{gap:+.4f}", "mIoU", "")]


def run_all(data: Path, out: Path, budget: float, seeds: int, recipe_baseline: bool,
            baseline_width: float, baseline_seeds: int, settings: dict) -> tuple[list[Row], dict[str, list[dict]]]:
    """Train every variant for every seed; the printed rows and each variant's metrics.json per seed."""
    from an2dl_kit.tasks import resolve_config, run

    named = variants(recipe_baseline, baseline_width, settings)
    for overrides in named.values():  # every variant is checked before the first one trains
        resolve_config(MARS.name, "local", {**overrides, "budget_s": budget})
    results: dict[str, list[dict]] = {name: [] for name in named}
    rows = []
    for seed in range(seeds):
        for name, overrides in named.items():
            if name != "enhanced" and seed >= baseline_seeds:
                continue
            progress(f"seed {seed}: training {name} for up to {budget:.0f} s")
            metrics = run(MARS.name, data, out / f"{name.replace('+', '_')}_{seed}", "local",
                          overrides={**overrides, "budget_s": budget, "seed": seed})
            if metrics["test"] is None:
                raise SystemExit(f"mars_quality: {data / MARS.name / LABELS_FILE} does not match the test set")
            results[name].append(metrics)
            rows += result_rows(f"{name} seed {seed}", metrics, budget)
    return rows + summary_rows(results), results


def record(results: dict[str, list[dict]], budget: float, settings: list[str]) -> dict:
    """The run as a results record: per variant and seed, the submitted masks' test scores."""
    from bench.records import column, command_line, new_record

    names = {"enhanced": "kit local", "plain": "plain U-Net, plain recipe", "plain+recipe": "plain U-Net, kit recipe"}
    runs = [{"model": names[name], "seed": metrics["config"]["training"]["seed"],
             "epochs": sum(phase["epochs_run"] for phase in metrics["phases"]),
             "miou": metrics["test_tta"]["miou"], **{key.replace(" ", "_"): metrics["test_tta"]["iou"][key]
                                                     for key in CLASSES},
             "validation_miou": metrics["validation_tta"]["miou"], "views": metrics["tta"]["views"],
             "training_s": round(metrics["seconds"]["training"])}
            for name, seeds in results.items() for metrics in seeds]
    return new_record(
        "bench.mars_quality", title="Mars: test mIoU of the submitted masks", command=command_line(
            module="bench.mars_quality"), kind="seeds",
        settings={"task": "mars", "profile": "local", "budget_s": budget, "overrides": list(settings)},
        columns=[column("epochs", fmt="d"), column("miou", "test mIoU"),
                 *(column(key.replace(" ", "_"), key, ".3f") for key in CLASSES)],
        runs=runs)


def measure(budget: float | None = None, out: Path = DEFAULT_OUT, seeds: int = 3, recipe_baseline: bool = False,
         baseline_width: float = 1.0, baseline_seeds: int | None = None,
         settings: list[str] = ()) -> tuple[list[Row], dict | None]:
    """The benchmark's rows and its results record (None when skipped)."""
    from an2dl_kit.config import parse_assignments
    from an2dl_kit.tasks import resolve_config

    data = find_data()
    if data is None:
        return [Row(PART, "skipped", "-", "-", "real stand-in data (../shared/data/mars) not available")], None
    budget = budget or resolve_config(MARS.name, "local").run.budget_s
    baseline_seeds = seeds if baseline_seeds is None else baseline_seeds
    found, results = run_all(data, Path(out), budget, seeds, recipe_baseline, baseline_width, baseline_seeds,
                             parse_assignments(settings))
    return found, record(results, budget, settings)


def cli(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--budget", type=float, help="training seconds per model (default: the local profile's)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1, each trains every variant")
    parser.add_argument("--recipe-baseline", action="store_true",
                        help="also train the plain U-Net with the local profile's recipe")
    parser.add_argument("--baseline-width", type=float, default=1.0,
                        help="width multiplier of the plain U-Net (1.0: 32/64/128 filters)")
    parser.add_argument("--baseline-seeds", type=int, metavar="K",
                        help="train the baselines for the first K seeds only (default: every seed)")
    parser.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                        help="override a field of the kit's local recipe, e.g. --set oversample_big_rock=5")
    add_rows_option(parser)
    add_record_option(parser)
    args = parser.parse_args(argv)
    found, results = measure(args.budget, args.out, args.seeds, args.recipe_baseline, args.baseline_width,
                             args.baseline_seeds, args.set)
    emit(found, args.rows)
    if results is not None:
        save_record(args, results)
    return 0


if __name__ == "__main__":
    sys.exit(quietly(cli))
