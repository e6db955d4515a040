"""The kit's own overhead in the Kaggle loop: push -> wait -> output -> submit, against the loopback stand-in.

Each step runs as the user runs it (`python -m an2dl_kit <command>`, what the make targets call), with the real
kaggle client talking to tests/kaggle_standin.py. The stand-in reports the kernel COMPLETE at the first poll, so
the kernel's own run time is excluded; what remains is process start-up, bundling, the requests, downloading
a full-size Mars submission (10,022 rows, about 160 MB), validating it, hashing and uploading it. Reported as
wall time (what a user waits) and CPU time of the commands (stable on a shared machine). Target: < 5 s wall.

Run alone: `python -m bench.kaggle_overhead`.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from an2dl_kit.kaggle.settings import DEFAULT_TEST_ROWS
from an2dl_kit.task import MARS
from bench.common import Row, fmt, main, progress, target_note

PART = "kaggle"
REPO = Path(__file__).resolve().parents[1]
TARGET_S = 5.0
TEST_ROWS = int(DEFAULT_TEST_ROWS[MARS.name])  # the full course test set, what `make submit` checks
STEPS = (("push", "--profile", "kaggle"), ("wait",), ("output",), ("submit",))


def _standin_class():
    spec = importlib.util.spec_from_file_location("kaggle_standin", REPO / "tests" / "kaggle_standin.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module.KaggleStandIn


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def measure() -> dict[str, tuple[float, float]]:
    """{step: (wall seconds, CPU seconds)} for one Mars push-to-submission cycle."""
    from an2dl_kit.submission import write_mars_csv

    with tempfile.TemporaryDirectory(prefix="an2dl-bench-") as tmp, _standin_class()(timeout_s=300) as standin:
        tmp = Path(tmp)
        progress(f"writing a full-size {MARS.name} submission ({TEST_ROWS} rows) for the stand-in to serve")
        masks = np.random.default_rng(0).integers(1, MARS.num_classes, size=(TEST_ROWS, *MARS.label_shape),
                                                 dtype=np.uint8)
        csv = write_mars_csv(tmp / "submission.csv", masks)
        standin.statuses = ["COMPLETE"]
        standin.outputs = {"submission.csv": csv.read_bytes(), "metrics.json": b"{}\n"}
        work = tmp / "work"
        work.mkdir()
        env = standin.client_env(tmp / "home")
        # The commands run from a scratch folder: put this checkout first, not whichever kit is installed.
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env["MARS_TEST_ROWS"] = str(TEST_ROWS)
        times = {}
        for name, *extra in STEPS:
            wall, cpu = time.perf_counter(), _children_cpu()
            result = subprocess.run([sys.executable, "-m", "an2dl_kit", name, "--task", MARS.name, *extra],
                                    cwd=work, env=env, capture_output=True, text=True, timeout=300)
            times[name] = (time.perf_counter() - wall, _children_cpu() - cpu)
            if result.returncode != 0:
                raise RuntimeError(f"an2dl {name} failed: {result.stderr.strip()}")
            progress(f"{name}: {times[name][0]:.2f} s")
        assert standin.uploads, "the submission was not uploaded"
    return times


def rows() -> list[Row]:
    times = measure()
    total_wall = sum(wall for wall, _ in times.values())
    total_cpu = sum(cpu for _, cpu in times.values())
    result = [Row(PART, f"an2dl {name} ({MARS.name}, stand-in)", fmt(wall), "s wall",
                  f"{fmt(cpu)} s CPU") for name, (wall, cpu) in times.items()]
    result.append(Row(PART, "push -> validated, submitted CSV (kernel run excluded)", fmt(total_wall),
                      "s wall", f"{fmt(total_cpu)} s CPU; {target_note(total_wall, TARGET_S, False)}"))
    return result


if __name__ == "__main__":
    os.chdir(REPO)
    raise SystemExit(main(rows))
