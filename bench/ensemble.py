"""Ensembles on real data: does averaging seeds pay, and what does ensembling cost?

Trains three `local` runs of each task with different seeds on `../shared/data` (in-process, one after the
other), then runs `an2dl ensemble` over them in a child process, and prints each member's test score, the
members' mean and the ensemble's side by side, with the ensembling time and peak memory (the child's maximum
resident set). `--course` adds the acceptance case the shared data is too small for: three synthetic Mars
members of the course's 10,022 test tiles (smooth random maps, stored as the runner stores them), ensembled
the same way.

`--folds K` measures K-fold instead: per task, one `local` fold set (`--set folds=K`: K folds one after another,
each with the profile's budget, so K times the budget in all) and one single `local` run with the profile's
budget, then the OOF score, each fold's test score, their mean, the fold ensemble's test score and the single
run's, side by side.

    python -m bench.ensemble                          # 3 x 10 min cells + 3 x 15 min Mars on two cores
    python -m bench.ensemble --budget 20 --tasks mars # tiny: checks the pipeline, scores mean nothing
    python -m bench.ensemble --course --tasks none    # only the 10,022-tile timing
    python -m bench.ensemble --folds 3 --record       # 3 folds of 10 + 10 min cells, 3 x 15 + 15 min Mars

Figures are printed, never asserted.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import Row, fmt, progress, quietly, rows_record, table
from bench.records import add_record_option, save_record

SEEDS = (0, 1, 2)
COURSE_TILES = 10_022
# The child prints its own peak resident set after the ensemble: training in this process does not count.
CHILD = ("import resource, sys\n"
         "from an2dl_kit.cli import main\n"
         "code = main(sys.argv[1:])\n"
         "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
         "sys.exit(code)\n")


def data_root() -> Path:
    """The real stand-ins (`discover.shared_data_root`: $AN2DL_SHARED_DATA, `../shared/data` beside the
    checkout, or /work/shared/data); `../shared/data` when none is found, so the error names it."""
    from an2dl_kit.data.discover import shared_data_root

    return shared_data_root() or Path(__file__).resolve().parents[2] / "shared" / "data"


def train_members(task: str, root: Path, out: Path, budget: float | None, seeds: tuple[int, ...]) -> list[Path]:
    """One `local` run per seed into `out/<task>_seed<k>/` (re-running resumes its finished phases)."""
    from an2dl_kit.tasks import run

    folders = []
    for seed in seeds:
        folder = out / f"{task}_seed{seed}"
        progress(f"{task}: training seed {seed} into {folder}")
        run(task, root, folder, "local", overrides={"seed": seed, "budget_s": budget})
        folders.append(folder)
    return folders


def ensemble_child(task: str, runs: list[Path], out: Path, data: Path | None) -> tuple[dict, float, float]:
    """`an2dl ensemble` in a fresh process: (its metrics.json, wall seconds, peak resident MB)."""
    args = ["ensemble", "--task", task, *map(str, runs), "--out", str(out)] + (["--data", str(data)] if data else [])
    started = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, *args], capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        raise SystemExit(f"an2dl ensemble failed: {done.stderr.strip().splitlines()[-1]}")
    peak_kb = next(int(line.split()[1]) for line in done.stdout.splitlines() if line.startswith("PEAK_KB"))
    return json.loads((out / "metrics.json").read_text()), seconds, peak_kb / 1024


def score_text(value: float) -> str:
    """A score as the other tables give it, four decimals (0.6797, not fmt's 0.68)."""
    return f"{value:.4f}"


def task_rows(task: str, root: Path, out: Path, budget: float | None, seeds: tuple[int, ...]) -> list[Row]:
    runs = train_members(task, root, out, budget, seeds)
    record, seconds, peak_mb = ensemble_child(task, runs, out / f"{task}_ensemble", root)
    score = record["score"]
    rows = [Row(task, f"member seed {seed}", score_text(member["test"][score]), f"test {score}",
                f"validation {member['validation']:.4f}")
            for seed, member in zip(seeds, record["members"], strict=True)]
    rows += [Row(task, "members' mean", score_text(record["test_members_mean"]), f"test {score}"),
             Row(task, f"ensemble of {len(seeds)} (uniform)", score_text(record["test"][score]), f"test {score}",
                 f"gain over the members' mean {record['test'][score] - record['test_members_mean']:+.4f}")]
    if task == "mars":
        tiles = record["test_shape"][0]
        rows += [Row(task, f"ensembling {len(seeds)} x {tiles} tiles", fmt(seconds), "s", "child process, wall"),
                 Row(task, f"ensembling {len(seeds)} x {tiles} tiles, peak memory", fmt(peak_mb), "MB")]
    return rows


def fold_rows(task: str, root: Path, out: Path, budget: float | None, folds: int) -> list[Row]:
    """A `local` fold set of `folds` folds (each fold `budget` seconds, default the profile's) and a single
    `local` run of `budget`: OOF, each fold's test score, their mean, the fold ensemble's, the single run's."""
    from an2dl_kit.tasks import resolve_config, run

    per_fold = budget if budget is not None else resolve_config(task, "local").run.budget_s
    progress(f"{task}: {folds} folds of {per_fold:.0f} s into {out / f'{task}_folds{folds}'}")
    metrics = run(task, root, out / f"{task}_folds{folds}", "local",
                  overrides={"folds": folds, "budget_s": per_fold * folds})
    progress(f"{task}: a single run of {per_fold:.0f} s into {out / f'{task}_single'}")
    single = run(task, root, out / f"{task}_single", "local", overrides={"budget_s": per_fold})
    oof, score = metrics["oof"], metrics["oof"]["score"]
    tests = [fold["test"] for fold in oof["per_fold"]]
    ensemble_test, unit = metrics["test_tta"][score], f"test {score}"
    rows = [Row(task, f"fold {fold['fold']}", score_text(fold["test"]), unit,
                f"validation {fold[score]:.4f} on its fold") for fold in oof["per_fold"]]
    return rows + [
        Row(task, "folds' mean", score_text(float(np.mean(tests))), unit),
        Row(task, f"fold ensemble of {folds}", score_text(ensemble_test), unit,
            f"gain over the folds' mean {ensemble_test - float(np.mean(tests)):+.4f}"),
        Row(task, "out-of-fold", score_text(oof["value"]), score,
            f"{oof['images']} images; folds {oof['mean']:.4f} ± {oof['std']:.4f}; ensemble test - OOF "
            f"{ensemble_test - oof['value']:+.4f}"),
        Row(task, f"single local run, {per_fold:.0f} s", score_text(single["test_tta"][score]), unit,
            f"validation {single['validation_tta'][score]:.4f}")]


def synthetic_member(path: Path, seed: int, tiles: int) -> None:
    """A Mars probabilities file of smooth random maps (bicubic 8x16 logits), written chunk by chunk."""
    import cv2

    from an2dl_kit.inference.probabilities import encoding_for, writer
    from an2dl_kit.task import MARS

    rng = np.random.default_rng(seed)
    with writer(path, task="mars", encoding=encoding_for(MARS, True), rows=tiles, item_shape=MARS.label_shape,
                test_fingerprint="synthetic") as sink:
        for start in range(0, tiles, 512):
            logits = rng.normal(size=(min(512, tiles - start), 8, 16, 5)).astype(np.float32) * 4
            maps = np.stack([cv2.resize(tile, (128, 64), interpolation=cv2.INTER_CUBIC) for tile in logits])
            maps = np.exp(maps - maps.max(axis=-1, keepdims=True))
            sink.write(maps / maps.sum(axis=-1, keepdims=True))
        sink.meta.update(score="miou", validation=0.5, views=["identity"], models=["model.keras"])


def course_rows(out: Path, members: int = 3) -> list[Row]:
    """Ensembling time, peak memory and file size for the course's 10,022 Mars test tiles."""
    runs = []
    for seed in range(members):
        folder = out / f"course_member_{seed}"
        folder.mkdir(parents=True, exist_ok=True)
        progress(f"writing synthetic member {seed} ({COURSE_TILES} tiles)")
        synthetic_member(folder / "test_probs.npz", seed, COURSE_TILES)
        runs.append(folder)
    _, seconds, peak_mb = ensemble_child("mars", runs, out / "course_ensemble", None)
    size_mb = (runs[0] / "test_probs.npz").stat().st_size / 1e6
    return [Row("mars", f"test_probs.npz, {COURSE_TILES} tiles (synthetic smooth maps)", fmt(size_mb), "MB"),
            Row("mars", f"ensembling {members} x {COURSE_TILES} tiles", fmt(seconds), "s",
                "wall, child process; target < 60 s"),
            Row("mars", f"ensembling {members} x {COURSE_TILES} tiles, peak memory", fmt(peak_mb), "MB",
                "target < 4,096 MB")]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="ensembles of local runs: member, mean and ensemble test scores")
    parser.add_argument("--budget", type=float, help="training seconds per run (default: the local profile's)")
    parser.add_argument("--tasks", default="cells,mars", help="comma-separated tasks, or none (default: both)")
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="one run per seed (default: 0,1,2)")
    parser.add_argument("--out", type=Path, default=Path("build/bench/ensemble"))
    parser.add_argument("--course", action="store_true", help="also time 3 x 10,022 synthetic Mars tiles")
    parser.add_argument("--folds", type=int, help="K-fold instead of seeds: a local fold set of K folds, each "
                                                  "with the budget, against one local run")
    add_record_option(parser)
    args = parser.parse_args(argv)
    seeds = tuple(int(s) for s in args.seeds.split(",") if s.strip())
    rows = []
    for task in [t.strip() for t in args.tasks.split(",") if t.strip() and t.strip() != "none"]:
        rows += (fold_rows(task, data_root(), args.out, args.budget, args.folds) if args.folds else
                 task_rows(task, data_root(), args.out, args.budget, seeds))
    if args.course:
        rows += course_rows(args.out)
    print(table(rows), end="")
    title = f"{args.folds}-fold ensembles of local runs" if args.folds else "ensembles of local runs"
    save_record(args, rows_record("bench.ensemble", title, rows,
                                  {"tasks": args.tasks, "seeds": [] if args.folds else list(seeds),
                                   "folds": args.folds, "budget_s": args.budget, "course": args.course}))
    return 0


if __name__ == "__main__":
    raise SystemExit(quietly(main))
