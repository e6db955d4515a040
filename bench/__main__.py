"""`python -m bench` (`make bench`): every benchmark part, one table.

Each part runs in its own process, because TensorFlow's thread settings (one core for the per-core
rates) can only be made before TensorFlow starts, and a part's models should not share memory or a Keras
session with the next. A part is a module `bench/<name>.py` with `rows()` (see `bench/common.py`),
registered in `PARTS`; `--parts a,b` runs a selection. Benchmarks that train for minutes
(`bench.mars_quality`, `bench.cells_robustness`) run on their own, outside the
five-minute `make bench`.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

from bench.common import Row, parse_rows, rows_record, table
from bench.records import add_record_option, save_record

# The parts of `make bench`, in table order; each takes about a minute or less on two cores.
PARTS = ("hardware_augment", "hardware_pipeline", "hardware_size", "hardware_tta", "hardware_estimate",
         "kaggle_overhead")
PART_TIMEOUT_S = 600
REPO = Path(__file__).resolve().parents[1]


def run_part(name: str) -> tuple[list[Row], str]:
    """Run `python -m bench.<name> --rows`; its rows and its progress lines (or its error)."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    done = subprocess.run([sys.executable, "-m", f"bench.{name}", "--rows"], capture_output=True, text=True,
                          cwd=REPO, env=env, timeout=PART_TIMEOUT_S)
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return [Row(name, "FAILED", "", "", tail[:200])], done.stderr
    return parse_rows(done.stdout), ""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--parts", help=f"comma-separated parts (default: {','.join(PARTS)})")
    add_record_option(parser)
    args = parser.parse_args(argv)
    names = [p.strip() for p in args.parts.split(",")] if args.parts else list(PARTS)
    rows, failed = [], []
    for name in names:
        start = time.monotonic()
        print(f"[bench] {name} ...", file=sys.stderr, flush=True)
        part_rows, error = run_part(name)
        print(f"[bench] {name}: {time.monotonic() - start:.0f} s", file=sys.stderr, flush=True)
        rows += part_rows
        if error:
            failed.append(name)
            print(error[-2000:], file=sys.stderr)
    print(table(rows), end="")
    if not failed:
        save_record(args, rows_record("bench", "speed and size", rows, {"parts": names}))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
