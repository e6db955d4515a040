"""The two challenges' training runs, behind one runner (`tasks/runner.py`).

Entry points for the kernels, the CLI and the benchmarks: `run(task, ...)` trains and writes every output;
`resolve_config` / `profile_settings` give a profile with overrides, validated (TensorFlow-free). `PROFILES`
and `HOOKS` name each task's profiles and runner hooks; a third task adds one line to each.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from an2dl_kit import config as cfg
from an2dl_kit.registry import Registry

PROFILES: Registry[str] = Registry("task", {
    "cells": "an2dl_kit.tasks.cells_config:PROFILES",
    "mars": "an2dl_kit.tasks.mars_config:PROFILES",
})
HOOKS: Registry[str] = Registry("task", {
    "cells": "an2dl_kit.tasks.cells:HOOKS",
    "mars": "an2dl_kit.tasks.mars:HOOKS",
})
Overrides = Mapping[str, Any] | Iterable[str] | None


def resolve_config(task: str, profile: str, overrides: Overrides = None):
    """The task's profile with `overrides` ({field: value} or ["field=value"]), every field validated."""
    return cfg.resolve(PROFILES.load(task), profile, overrides)


def profile_settings(task: str, profile: str, overrides: Overrides = None) -> dict:
    """`resolve_config` as nested plain data (group -> field -> value), as metrics.json records it."""
    return cfg.as_dict(resolve_config(task, profile, overrides))


def run(task: str, data: Path | None, out_dir: Path, profile: str = "local", *, overrides: Overrides = None,
        provenance: dict | None = None) -> dict:
    """Train `task` and write every output into `out_dir`; see `tasks.runner.run`."""
    from an2dl_kit.tasks.runner import run as run_task

    return run_task(task, data, out_dir, profile, overrides=overrides, provenance=provenance)
