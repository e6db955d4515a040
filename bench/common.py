"""What every benchmark part shares: the row format, timing, one-core settings and the command line.

A part is a module `bench/<name>.py` with a `rows() -> list[Row]` function. Run alone
(`python -m bench.hardware_augment`) it prints its own table; `python -m bench` runs every part in its own
process (TensorFlow's thread settings can only be made once per process) and prints one table.

Figures are measured rates, ratios or stated estimates; nothing here asserts a target. Where a target
exists the row's note says whether the figure meets it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

# Quiet TensorFlow's start-up chatter before any part imports it.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROW_PREFIX = "BENCH_ROW "
# Shortest stretch of repeated calls a rate is measured over; keeps one-off jitter small.
MIN_SECONDS = 1.0


@dataclass(frozen=True)
class Row:
    """One line of the benchmark table.

    Args:
        part: the benchmark it comes from ("augment", "pipeline", "size", "estimate", "tta", "kaggle", ...).
        item: what was measured.
        value: the figure, already formatted.
        unit: the figure's unit.
        note: how it compares with its target or baseline, and the assumptions behind it.
    """

    part: str
    item: str
    value: str
    unit: str
    note: str = ""


def fmt(value: float) -> str:
    """Three significant figures, thousands separated: 0.0123, 4.56, 789, 12,300."""
    if value == 0 or not abs(value) < float("inf"):
        return str(value)
    if abs(value) >= 100:
        return f"{round(value, -max(len(str(int(abs(value)))) - 3, 0)):,.0f}"
    return f"{value:.3g}"


def target_note(value: float, target: float, higher_is_better: bool = True) -> str:
    """'target >= 2,000: met' or 'target >= 2,000: missed by 38%'."""
    sign = ">=" if higher_is_better else "<="
    met = value >= target if higher_is_better else value <= target
    if met:
        return f"target {sign} {fmt(target)}: met"
    gap = abs(target - value) / target
    return f"target {sign} {fmt(target)}: missed by {gap:.0%}"


def rate(fn: Callable[[], int], min_seconds: float = MIN_SECONDS, warmup: int = 1) -> float:
    """Items per CPU-second of `fn` (which returns how many items one call handled), over >= min_seconds.

    The clock is the process's CPU time: on a machine shared with other jobs, wall time counts the time the
    scheduler gave to others, CPU time only the work done here. With one thread (`one_core`) the rate is
    then a per-core rate.
    """
    for _ in range(warmup):
        fn()
    done, start = 0, time.process_time()
    while True:
        done += fn()
        elapsed = time.process_time() - start
        if elapsed >= min_seconds:
            return done / elapsed


def one_core() -> None:
    """Keep OpenCV and TensorFlow on one thread, so a rate is a per-core rate. Call before TF starts."""
    import cv2
    import tensorflow as tf

    cv2.setNumThreads(1)
    tf.config.threading.set_intra_op_parallelism_threads(1)
    tf.config.threading.set_inter_op_parallelism_threads(1)


def progress(message: str) -> None:
    """A progress line on stderr; stdout carries only the table (or the rows for `python -m bench`)."""
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def table(rows: list[Row]) -> str:
    from an2dl_kit.files import markdown_table

    return markdown_table([asdict(row) for row in rows])


def add_rows_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", action="store_true", help="print rows as JSON lines (for python -m bench)")


def emit(rows: list[Row], as_json: bool) -> None:
    """Print the rows: a table, or JSON lines (`--rows`) for `python -m bench` to collect."""
    if as_json:
        for row in rows:
            print(ROW_PREFIX + json.dumps(asdict(row)), flush=True)
    else:
        print(table(rows), end="")


def main(rows_fn: Callable[[], list[Row]], argv: list[str] | None = None) -> int:
    """Command line of a part: print its table, or with --rows its rows as JSON lines."""
    module = sys.modules.get(rows_fn.__module__)
    name = getattr(getattr(module, "__spec__", None), "name", None) or rows_fn.__module__  # not "__main__"
    parser = argparse.ArgumentParser(description=f"{name} benchmark")
    add_rows_option(parser)
    args = parser.parse_args(argv)

    def run() -> int:
        emit(rows_fn(), args.rows)
        return 0

    return quietly(run)


def quietly(entry: Callable[[], int]) -> int:
    """Run a benchmark's command line with TensorFlow's native log filtered out, as `an2dl` does
    (`AN2DL_VERBOSE=1` keeps it)."""
    if os.environ.get("AN2DL_VERBOSE") == "1":
        return entry()
    from an2dl_kit.native_log import quiet_native_log

    with quiet_native_log():
        return entry()


def parse_rows(stdout: str) -> list[Row]:
    return [Row(**json.loads(line[len(ROW_PREFIX):])) for line in stdout.splitlines()
            if line.startswith(ROW_PREFIX)]


def rows_record(benchmark: str, title: str, rows: list[Row], settings: dict) -> dict:
    """A printed table of rows as a results record of kind "table" (`bench.records`)."""
    from bench.records import command_line, new_record

    columns = ["part", "item", "value", "unit", "note"]
    return new_record(benchmark, title=title, command=command_line(module=benchmark), kind="table",
                      settings=settings, columns=columns, rows=[[getattr(row, c) for c in columns] for row in rows])
