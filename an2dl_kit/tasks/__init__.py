"""The two challenges' training runs. Entry points for the kernels, the CLI and the benchmarks:
`run(task, ...)` trains and writes every output; `profile_settings(task, ...)` is the resolved run
configuration as a dict (TensorFlow-free)."""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from an2dl_kit.task import TASKS


def run(task: str, data: Path | None, out_dir: Path, profile: str = "local", *,
        overrides: Mapping[str, Any] | None = None, provenance: dict | None = None) -> dict:
    """Train `task` with `profile` plus `overrides` (run-configuration fields, e.g. {"budget_s": 60}),
    write every output into `out_dir`, and return the metrics dict (metrics.json)."""
    module = importlib.import_module(f"an2dl_kit.tasks.{TASKS.check(task)}")
    return module.run(data, out_dir, profile, provenance=provenance, **dict(overrides or {}))


def profile_settings(task: str, profile: str, overrides: Mapping[str, Any] | None = None) -> dict:
    """The resolved run configuration of `task`/`profile` with `overrides`, as a dict."""
    module = importlib.import_module(f"an2dl_kit.tasks.{TASKS.check(task)}")
    return dataclasses.asdict(module.resolve_profile(profile, **dict(overrides or {})))
