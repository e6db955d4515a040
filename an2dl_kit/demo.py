"""`make demo`: synthetic data -> bundled kernels run here -> validated, scored leaderboard files.

The demo runs exactly what Kaggle would run: each task's bundled kernel script (`an2dl bundle`), started
with `python -I` in a Kaggle-like folder layout, with the `local` profile and a short training budget so
both tasks finish in minutes on two CPU cores. Then it validates each CSV as `make submit` would, scores it
when test labels are at hand, lists every file written, and ends with each task's report (`an2dl report`:
report.html, report.md, figures/, tables.tex in `<out>/report/<task>/`).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from an2dl_kit.runtime import log
from an2dl_kit.task import LABELS_FILE, TASKS

DEFAULT_DATA = Path("data/demo")
PROFILE = "local"
# Training seconds per task: enough for the synthetic data to converge, and the whole demo in ~8 minutes.
DEMO_BUDGET_S = {"cells": 150.0, "mars": 210.0}


def _data_dir(data: Path | None) -> Path:
    """The given folder, or the synthetic competition files (written once into data/demo)."""
    from an2dl_kit.data.synth import write_synthetic

    if data is not None:
        return Path(data)
    if not all((DEFAULT_DATA / task.name / task.train_file).exists() for task in TASKS.values()):
        log(f"writing synthetic competition files into {DEFAULT_DATA}")
        write_synthetic(DEFAULT_DATA, seed=0, contaminants=True, size="demo")
    return DEFAULT_DATA


def _validate_and_score(task: str, run_dir: Path, data: Path) -> list[str]:
    """Check the task's CSV against its test set; score it when the labels are known."""
    from an2dl_kit.data.discover import find_inputs
    from an2dl_kit.metrics import format_scores, score_files
    from an2dl_kit.submission import check_submission, count_test_rows

    test_file = find_inputs(data).test_file(task)
    csv = run_dir / "submission.csv"
    lines = [check_submission(csv, task, count_test_rows(task, test_file) if test_file else None)]
    labels = test_file.parent / LABELS_FILE if test_file else None
    if labels is not None and labels.exists():
        lines.append(format_scores(task, score_files(task, csv, labels)))
    return lines


def cli(args: argparse.Namespace) -> int:
    from an2dl_kit.data.inspect import summarize_all
    from an2dl_kit.kaggle.run_local import run_local

    started = time.monotonic()
    data = _data_dir(args.data)
    for summary in summarize_all(data):
        print(summary.text(), flush=True)

    report: dict[str, list[str]] = {}
    written: dict[str, list[Path]] = {}
    for task in TASKS:
        log(f"{task}: running the bundled kernel ({PROFILE} profile, {DEMO_BUDGET_S[task]:.0f} s of training)")
        run_dir = Path(args.out) / task
        written[task] = run_local(task, PROFILE, data, run_dir, budget_s=DEMO_BUDGET_S[task])
        report[task] = _validate_and_score(task, run_dir, data)

    reports = write_reports(Path(args.out))
    print(f"\n# Demo finished in {time.monotonic() - started:.0f} s (data: {data})")
    for task in TASKS:
        print(f"\n## {task}")
        for line in report[task]:
            print(line)
        print("files:")
        for path in written[task]:
            print(f"  {path}")
    for task, path in reports.items():
        print(f"\n{task} report: {path}")
    return 0


def write_reports(out: Path) -> dict[str, Path]:
    """The homework report of each task's demo run (`an2dl report`), in `out/report/<task>/`."""
    from an2dl_kit.report import write_report

    reports = {}
    for task in TASKS:
        log(f"{task}: writing the report of {out / task}")
        reports[task] = write_report(task, [out / task], out / "report" / task)
    return reports
