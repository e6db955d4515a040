"""Preflight: what a kernel checks in its first minute, before loading data at scale or training.

A Kaggle image changes under a kernel without notice (REFERENCE.md), and a mismatch found after hours of
training, or after the data has loaded, wastes a GPU session. `preflight` runs at the top of every kernel
(`kernels/main.py`, after the banner) and as `an2dl preflight --task T --profile P`:

1. `KERAS_BACKEND=tensorflow`, before Keras loads: the image also has jax and torch.
2. The versions of the libraries the kit needs against `REQUIREMENTS`, each found by the module it is
   imported as (`runtime.find_libraries`: TensorFlow from `tensorflow-cpu` counts), from the installed
   metadata without importing them. A mismatch, or two distributions providing one module, stops here,
   before TensorFlow is imported.
   In a kernel, the task's training file under its input folder: when it is missing, the problem names the
   data sources the kernel was pushed with (e.g. the dataset `an2dl upload-data` made), not a guess.
   Then what a setting of the profile needs beyond them (`OPTIONAL`: MedMNIST-C's augmentation, absent from
   Kaggle's image).
3. On Kaggle, the GPUs the driver lists against the requested machine shape (`settings.GPU_SHAPES`).
4. One training step of the profile's own model, transform and compile settings on a single full-size
   batch of synthetic data (random initial weights: the ImageNet download is the run's own first step).

Every problem found is named in one block (`PreflightError`): package, found, needed. Versions outside the
tested range but inside the needed one are only reported.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from an2dl_kit.errors import KitError
from an2dl_kit.runtime import Library, find_libraries

# Testing hook and rehearsal: "module=version,..." replaces what the installed metadata says.
FAKE_VERSIONS_VAR = "AN2DL_FAKE_VERSIONS"
KAGGLE_RUN_VAR = "KAGGLE_KERNEL_RUN_TYPE"  # set in every Kaggle session, absent elsewhere


@dataclass(frozen=True)
class Requirement:
    """A library version the kit runs with: at least `minimum` and below `below`; CI tests `tested`
    (the low and high ends of the versions the kit was tested with: constraints/kaggle-gpu.txt and .venv)."""

    minimum: str
    below: str
    tested: tuple[str, str]

    def needed(self) -> str:
        return f">={self.minimum},<{self.below}"


REQUIREMENTS = {
    "tensorflow": Requirement("2.16", "3", ("2.20", "2.21")),
    "keras": Requirement("3.5", "4", ("3.13", "3.15")),
    "numpy": Requirement("1.26", "3", ("2.0", "2.4")),
    "pandas": Requirement("2.0", "4", ("2.2", "3.1")),
    # 2.x APIs (SquareSymmetry, fill=, strict=True); 2.0.8 is the last MIT-licensed release.
    "albumentations": Requirement("2.0.8", "3", ("2.0.8", "2.0.8")),
    "matplotlib": Requirement("3.7", "4", ("3.10", "3.11")),
}


# Setting values that need packages Kaggle's image lacks: value -> reference to a `missing()` that says what is
# absent (None when nothing is).
OPTIONAL = {"medmnistc": "an2dl_kit.augment.medmnist_c:missing"}


class PreflightError(KitError):
    """Every problem preflight found, one per line under a heading line."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__(f"preflight: {len(problems)} problem(s), stopping before any training\n"
                         + "\n".join(f"  - {problem}" for problem in problems))


def version_key(version: str) -> tuple[int, ...]:
    """The leading numeric release of a version string: "2.20.0rc1" -> (2, 20, 0)."""
    match = re.match(r"\d+(\.\d+)*", version.strip())
    return tuple(int(part) for part in match.group(0).split(".")) if match else ()


def installed_libraries(environ: Mapping[str, str] | None = None) -> dict[str, Library]:
    """module -> what provides it, for every module of `REQUIREMENTS`; a version in $AN2DL_FAKE_VERSIONS
    stands in for the metadata, as if the distribution of the module's own name provided it."""
    environ = os.environ if environ is None else environ
    fake = dict(item.split("=", 1) for item in environ.get(FAKE_VERSIONS_VAR, "").split(",") if "=" in item)
    found = find_libraries(tuple(REQUIREMENTS))
    return {module: Library(module, ((module, fake[module]),)) if fake.get(module) else library
            for module, library in found.items()}


def check_versions(found: Mapping[str, Library]) -> tuple[list[str], list[str]]:
    """(problems, notes): missing modules, modules two distributions provide, versions outside the needed
    range; and versions outside the tested one. Two providers are a problem, not resolved by picking one: both
    claim the module's files (installed over each other, or one shadowing the other on sys.path), so neither
    version is known to be what `import` loads."""
    problems, notes = [], []
    for module, need in REQUIREMENTS.items():
        library = found[module]
        key = version_key(library.version or "")
        if len(library.providers) > 1:
            problems.append(f"{module}: a broken environment, {library.claimants()}; keep one")
        elif library.version is None or not version_key(need.minimum) <= key < version_key(need.below):
            problems.append(f"{module}: found {library.describe()}, needed {need.needed()}")
        elif not _within(key, *need.tested):
            notes.append(f"{module} {library.describe()}: untested (tested {need.tested[0]} to {need.tested[1]})")
    return problems, notes


def versions_line(found: Mapping[str, Library]) -> str:
    """What the verdict was given: `preflight: versions ok: tensorflow 2.20.0 (tensorflow-cpu), keras 3.13.2, ...`."""
    return "preflight: versions ok: " + ", ".join(f"{module} {lib.describe()}" for module, lib in found.items())


def _within(key: tuple[int, ...], low: str, high: str) -> bool:
    """`key` in [low, high], compared at the precision the bounds are written with ("3.13" covers 3.13.2)."""
    low_key, high_key = version_key(low), version_key(high)
    return low_key <= key[:len(low_key)] and key[:len(high_key)] <= high_key


def check_accelerators(shape: str, gpus: list[str]) -> list[str]:
    """Problems with the GPUs the driver lists (`gpus`) for the requested machine shape."""
    from an2dl_kit.kaggle.settings import GPU_SHAPES

    if shape.lower() in ("none", "cpu"):
        return []
    count, word = GPU_SHAPES.get(shape, (None, ""))
    found = f"{len(gpus)} GPU(s){': ' + '; '.join(gpus) if gpus else ''}"
    if count is None:
        return [] if gpus else [f"accelerator {shape}: found {found}, needed at least one GPU"]
    if len(gpus) != count or not all(word in name for name in gpus):
        return [f"accelerator {shape}: found {found}, needed {count} x {word}"]
    return []


def synthetic_data(hooks, count: int, seed: int = 0):
    """A `RunData` of `count` random training images (and a few validation ones) of the task's shapes, every
    class present (the balanced class weights need each)."""
    from an2dl_kit.tasks.runner import RunData

    info = hooks.info
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, (count, *info.image_shape)).astype(np.uint8)
    labels = np.arange(count * int(np.prod(info.label_shape, dtype=int))) % len(info.class_names)
    labels = rng.permutation(labels.astype(np.uint8)).reshape(count, *info.label_shape)
    inputs = hooks.to_inputs(images)
    return RunData(inputs, labels, inputs[:8], labels[:8], None, None, {})


def check_optional(task: str, profile: str, overrides=None) -> list[str]:
    """Problems with settings whose value needs a package beyond `REQUIREMENTS` that is not usable here."""
    from an2dl_kit import config as cfg
    from an2dl_kit.registry import resolve_reference
    from an2dl_kit.tasks import resolve_config

    problems = []
    for field, value in cfg.flat_fields(resolve_config(task, profile, overrides)).items():
        problem = resolve_reference(OPTIONAL[value])() if isinstance(value, str) and value in OPTIONAL else None
        if problem:
            problems.append(f"{task} setting {field}={value}: {problem}; Kaggle's image has neither, and a kernel "
                            "cannot install them: train this setting locally, or choose another")
    return problems


def training_step(task: str, profile: str, overrides=None) -> str:
    """Build the profile's augmentation, model and compile settings, and train one full-size batch.
    Returns a one-line summary; raises whatever the step raises."""
    from an2dl_kit import config as cfg
    from an2dl_kit import runtime as rt
    from an2dl_kit.tasks import resolve_config
    from an2dl_kit.tasks.runner import hooks_for

    started = time.monotonic()
    hooks = hooks_for(task)
    config = resolve_config(task, profile, overrides)
    if "weights" in cfg.field_names(config):
        config = cfg.derive(config, weights="none")
    runtime = rt.setup_runtime(config.training.seed, config.run.precision, config.run.deterministic)
    count = max(runtime.global_batch(config.training.batch_size), len(hooks.info.class_names))
    plan = hooks.plan(config, runtime, synthetic_data(hooks, count))
    with runtime.scope():
        plan.phases[-1].compile(plan.model)
    plan.model.train_on_batch(*plan.train[0])
    return (f"one {plan.phases[-1].name} step of {plan.model.name} on {count} images in "
            f"{time.monotonic() - started:.0f} s ({runtime.describe()})")


def check_inputs(task: str, input_dir: Path, kernel: Mapping) -> list[str]:
    """A problem when the task's training file is not under `input_dir`, naming the data sources the kernel
    was pushed with (`kernel`: the provenance's kernel settings), so a missing dataset is named, not guessed."""
    from an2dl_kit.data.discover import find_inputs
    from an2dl_kit.errors import DataError
    from an2dl_kit.task import TASKS

    try:
        find_inputs(input_dir).require(task)
    except DataError:
        sources = [f"dataset {ref}" for ref in kernel.get("datasets") or []]
        sources += [f"competition {kernel['competition']}"] if kernel.get("competition") else []
        expected = (f"expected from {' and '.join(sources)}: is it attached to this kernel (its Input panel) "
                    f"and ready?" if sources else "the kernel was pushed without a data source;")
        return [f"data: no {TASKS[task].train_file} under {input_dir}; {expected} `make upload-data TASK={task}` "
                "uploads the task's files and the next push attaches them"]
    return []


def preflight(task: str, profile: str, accelerator: str = "none", environ: Mapping[str, str] | None = None,
              gpus: list[str] | None = None, input_dir: Path | None = None, kernel: Mapping | None = None,
              overrides=None) -> list[str]:
    """Run the checks (module docstring); returns report lines, raises `PreflightError` naming every problem.

    Args:
        overrides: the run's overrides (a bundle's `--set`), checked and used in the training step too.
        accelerator: the requested machine shape (the provenance's kernel settings); checked on Kaggle only,
            where the kernel runs on what it asked for (`run-local` and the demo run Kaggle shapes on a CPU).
        gpus: the driver's GPU list (default: `nvidia-smi`, as the banner reads it).
        input_dir: where the kernel reads its inputs; when given, the task's training file must be there
            (`check_inputs`, naming the data sources in `kernel`, the provenance's kernel settings).
    """
    environ = os.environ if environ is None else environ
    os.environ["KERAS_BACKEND"] = "tensorflow"
    found = installed_libraries(environ)
    problems, lines = check_versions(found)
    if input_dir is not None:
        problems += check_inputs(task, input_dir, kernel or {})
    if problems:  # stop before importing TensorFlow with the wrong libraries
        raise PreflightError(problems)
    problems += check_optional(task, profile, overrides)
    if KAGGLE_RUN_VAR in environ:
        from an2dl_kit.kaggle.banner import _gpu_lines

        problems += check_accelerators(accelerator, _gpu_lines() if gpus is None else gpus)
    if not problems:
        try:
            lines.append(training_step(task, profile, overrides))
        except Exception as error:  # any failure of the step is the finding
            text = (str(error).strip().splitlines() or [""])[0][:300]
            problems.append(f"training step: {type(error).__name__}: {text}")
    if problems:
        raise PreflightError(problems)
    return [versions_line(found), *lines]


def cli(args) -> int:
    """`an2dl preflight --task T --profile P`: the kernel's checks on this machine."""
    from an2dl_kit.kaggle.settings import kernel_config

    for line in preflight(args.task, args.profile, kernel_config(args.task).accelerator):
        print(line)
    return 0
