"""What a kernel runs before TensorFlow loads: its provenance, and the banner it prints first.

Runs inside the kernel (`kernels/main.py`), bundled or started from a checkout. The banner comes before any
heavy import, so a kernel that dies loading TensorFlow or reading its inputs still says what it was, where it
looked and what it saw. TensorFlow-free.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from an2dl_kit.errors import KitError
from an2dl_kit.kaggle.provenance import checkout_provenance
from an2dl_kit.kaggle.settings import kernel_config
from an2dl_kit.runtime import library_versions
from an2dl_kit.task import TASKS

TASK_VAR, PROFILE_VAR = "AN2DL_TASK", "AN2DL_PROFILE"
SHOWN_INPUTS = 10  # input files the banner lists


def kernel_provenance(baked: Mapping | None = None, environ: Mapping[str, str] | None = None) -> dict:
    """The bundle's PROVENANCE; for an unbundled run (`python kernels/main.py` in a checkout), the
    checkout's own, for the task in $AN2DL_TASK and the profile in $AN2DL_PROFILE (default `local`)."""
    if baked:
        return dict(baked)
    environ = os.environ if environ is None else environ
    task = environ.get(TASK_VAR, "").strip()
    if not task:
        raise KitError(f"{TASK_VAR}: not set; an unbundled kernel needs its task, one of {', '.join(TASKS)} "
                       f"(e.g. {TASK_VAR}=mars python kernels/main.py)")
    return checkout_provenance(TASKS.check(task), environ.get(PROFILE_VAR, "").strip() or "local",
                               kernel_config(task, environ))


def _gpu_lines() -> list[str]:
    """GPUs as the driver lists them, without importing TensorFlow."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def environment_lines(prov: Mapping, input_dir: Path, output_dir: Path) -> Iterator[str]:
    """The banner a kernel prints first: provenance (with the overrides baked in at bundle time, so a log tells
    the variants apart), then library versions (`runtime.library_versions`: found by import name, so
    `tensorflow 2.20.0 (tensorflow-cpu)` names a distribution of another name), GPUs, inputs and output."""
    yield (f"an2dl-kit {prov['version']} | commit {prov['commit'] or 'none'}"
           f"{' (dirty)' if prov['dirty'] else ''} | task {prov['task']} | profile {prov['profile']}")
    overrides = prov.get("overrides") or {}
    yield "overrides: " + (", ".join(f"{k}={v}" for k, v in overrides.items()) or "none (the profile as it is)")
    yield "kernel: " + ", ".join(f"{k}={v}" for k, v in prov["kernel"].items() if k != "task")
    for group, fields in prov["config"].items():
        yield f"config {group}: " + ", ".join(f"{k}={v}" for k, v in fields.items())
    yield f"sources sha256: {prov['sources_sha256']}"
    yield "versions: " + ", ".join(f"{k} {v}" for k, v in library_versions().items())
    gpus = _gpu_lines()
    yield f"GPUs ({len(gpus)}): " + ("; ".join(gpus) if gpus else "none, training runs on the CPU")
    files = _some_files(Path(input_dir))
    shown = ", ".join(f"{p.relative_to(input_dir)} ({p.stat().st_size / 2**20:.1f} MiB)"
                      for p in files[:SHOWN_INPUTS])
    more = f" and {len(files) - SHOWN_INPUTS} more" if len(files) > SHOWN_INPUTS else ""
    yield f"input {input_dir}: {shown or 'no files'}{more}"
    yield f"output {output_dir}"


def _some_files(root: Path, depth: int = 4, limit: int = 1000) -> list[Path]:
    """Up to `limit` files under root, sorted, at most `depth` folders down: /kaggle/input may hold
    datasets of many thousand images, and the banner must not wait for them."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        level = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(dirs) if level < depth else []
        found.extend(Path(folder) / name for name in sorted(files))
        if len(found) >= limit:
            break
    return sorted(found)
