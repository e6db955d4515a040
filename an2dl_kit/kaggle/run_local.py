"""`an2dl run-local`: run the exact bundled script here, on CPU, in a Kaggle-like folder layout.

Runs at the developer's desk (and in `make demo`): bundle, then start the script with `python -I` so that
nothing but the bundle's embedded kit can be imported, with the inputs linked where Kaggle would mount them
(`<input>/<competition slug>/<file>`) and no Kaggle variable in its environment. What passes here is what
Kaggle runs. TensorFlow-free: the kernel loads it in its own process.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from an2dl_kit.data.discover import find_inputs
from an2dl_kit.errors import KitError
from an2dl_kit.kaggle.bundle import describe_bundle, write_bundle
from an2dl_kit.kaggle.provenance import canonical_overrides
from an2dl_kit.task import TASKS

RUN_LOCAL_DIR = Path("build/run-local")
RUN_LOCAL_MARKER = ".an2dl-run-local"


def input_slug(task: str) -> str:
    """The folder Kaggle mounts the task's data in: the competition's slug, else a dataset-like name."""
    return TASKS[task].competition or f"an2dl-{task}"


def _input_files(task: str, data: Path | None) -> list[Path]:
    """The task's competition files found under `data`; raises naming the folder when one is missing."""
    return [f.resolve() for f in find_inputs(data).files(task)]


def prepare_output(out: Path) -> None:
    """Empty a folder an earlier run-local made; refuse to write into any other non-empty folder."""
    if out.is_dir() and any(out.iterdir()):
        if not (out / RUN_LOCAL_MARKER).exists():
            raise KitError(f"{out}: not empty and not made by `an2dl run-local`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_LOCAL_MARKER).write_text("outputs of `an2dl run-local`; emptied by the next run\n")


def kernel_env(input_dir: Path, output_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a local kernel run gets: no Kaggle settings or credentials, no GPU, the folders."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items()
           if not k.startswith("KAGGLE_")}
    env.update(AN2DL_INPUT=str(input_dir), AN2DL_OUTPUT=str(output_dir), CUDA_VISIBLE_DEVICES="")
    return env


def run_local(task: str, profile: str, data: Path | None, out: Path,
              python: str = sys.executable, budget_s: float | None = None, overrides=None) -> list[Path]:
    """Bundle, then run the script with `python -I` on CPU; return the files it wrote under `out`.

    `overrides` ({field: value} or ["field=value"]) are baked into the bundle as `an2dl push` would, and are
    validated before the output folder is emptied; `budget_s` overrides the profile's training budget
    (through $AN2DL_BUDGET, as the demo needs, without changing the bundle).
    """
    overrides = canonical_overrides(task, profile, overrides)
    out = Path(out).resolve()
    files = _input_files(task, data)
    prepare_output(out)
    with tempfile.TemporaryDirectory(prefix=f"an2dl-{task}-") as scratch:
        scratch = Path(scratch)
        bundle = write_bundle(task, profile, scratch / "kernel", overrides=overrides)
        mounted = scratch / "input" / input_slug(task)
        mounted.mkdir(parents=True)
        for file in files:
            (mounted / file.name).symlink_to(file)
        print(describe_bundle(bundle)[0], flush=True)
        env = kernel_env(mounted.parent, out)
        if budget_s is not None:
            env["AN2DL_BUDGET"] = str(budget_s)
        result = subprocess.run([python, "-I", "-u", str(bundle.script)], cwd=out, env=env)
    if result.returncode != 0:
        raise KitError(f"{task} kernel: exited with status {result.returncode} (outputs so far in {out})")
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name != RUN_LOCAL_MARKER)


def interpreter(python: str) -> str:
    """The absolute path of `python` (a path or a name on PATH), not resolved: a venv's `bin/python` is a link
    to the base interpreter, and only the link's own path gives the venv's libraries."""
    found = shutil.which(python)
    if found is None:
        raise KitError(f"--python {python}: not found or not executable")
    return os.path.abspath(found)


def run_local_cli(args) -> int:
    """`an2dl run-local --task T --profile P [--data D] [--out O] [--python PY] [--set FIELD=VALUE ...]`."""
    out = args.out or RUN_LOCAL_DIR / args.task
    written = run_local(args.task, args.profile, args.data, out,
                        python=interpreter(getattr(args, "python", None) or sys.executable),
                        overrides=getattr(args, "set", None) or None)
    print(f"{args.task} kernel finished; {len(written)} files in {out}:")
    for path in written:
        print(f"  {path.relative_to(Path(out).resolve())} ({path.stat().st_size / 1024:.1f} KiB)")
    return 0
