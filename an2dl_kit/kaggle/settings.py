"""Kaggle settings and credentials: what a kernel is attached to and which secrets must never be written.

Read at bundle, push and submit time, never inside a kernel. Configuration comes from environment (or make)
variables; `SETTINGS` lists them with their defaults, and the competition defaults are the tasks' own
(`an2dl_kit.task`). Credentials are only ever read to find the username and to refuse or redact their values:
the kaggle client itself does the authenticating. TensorFlow-free: the CLI imports this to parse and dispatch.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from an2dl_kit.errors import KitError
from an2dl_kit.task import MARS, TASKS, TaskInfo

# Rows a task's leaderboard CSV must have by default (the course's Mars test set); other tasks are unchecked.
DEFAULT_TEST_ROWS = {MARS.name: "10022"}


def _task_settings(info: TaskInfo) -> dict[str, tuple[str, str]]:
    """The three settings every task has, so that a task added to `an2dl_kit.task` is configurable at once."""
    prefix = info.name.upper()
    return {
        f"{prefix}_COMPETITION": (info.competition, f"Kaggle competition attached to the {info.name} kernel and "
                                                    "submitted to (empty: none, the challenge was scored elsewhere)"),
        f"{prefix}_DATASETS": ("", f"datasets attached to the {info.name} kernel, `owner/slug` separated by commas "
                                   "(e.g. offline weights)"),
        f"{prefix}_TEST_ROWS": (DEFAULT_TEST_ROWS.get(info.name, ""),
                                f"rows a {info.name} submission must have (empty: not checked)"),
    }


# name -> (default, meaning). Read from the environment; an empty value means the default.
SETTINGS = {
    "KAGGLE_USERNAME": ("", "owner of the kernel (default: `username` in kaggle.json)"),
    **{name: value for info in TASKS.values() for name, value in _task_settings(info).items()},
    "ACCELERATOR": ("NvidiaTeslaT4", "Kaggle machine shape (NvidiaTeslaT4 = GPU T4 x2); `none` for CPU"),
    "INTERNET": ("true", "kernel internet access; false needs the weights in an attached dataset"),
    "PIN": ("original", "kernel image: original (the image of the kernel's first run), latest, or a digest read "
                        "back with `kaggle kernels pull -m`"),
}
# GPU machine shapes the kit knows: shape -> (GPUs, a word of their driver name). The preflight checks the
# machine against it; other GPU shapes are accepted and need one GPU or more.
GPU_SHAPES = {"NvidiaTeslaT4": (2, "T4"), "NvidiaL4": (1, "L4"), "NvidiaA100": (1, "A100"), "NvidiaH100": (1, "H100")}
# Shapes refused before any request, with the reason (one line each).
REFUSED_SHAPES = {
    "tpu": "Kaggle's TPU image has only tensorflow-cpu, so TensorFlow cannot drive its TPU; use NvidiaTeslaT4",
    "nvidiateslap100": "the P100 is retired and Kaggle silently runs T4 x2 instead; request NvidiaTeslaT4 so that "
                       "the preflight and the provenance describe the machine the kernel gets",
}
PIN_TYPES = ("original", "latest")
DIGEST_RE = re.compile(r"^[A-Za-z0-9_./:@-]*sha256:[0-9a-f]{64}$")
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]+/[A-Za-z0-9_.-]+$")
# Shorter values (an empty variable, a placeholder) would match ordinary text and refuse every bundle.
MIN_SECRET_LENGTH = 8


def setting(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of a configuration variable, or its default when unset or empty."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or SETTINGS[name][0]


@dataclass(frozen=True)
class KernelConfig:
    """Where a task's kernel runs and what it is attached to; recorded in the provenance."""

    task: str
    competition: str  # "" when the task has no Kaggle competition
    datasets: tuple[str, ...]
    accelerator: str  # a Kaggle machine shape, or "none"
    internet: bool
    test_rows: int | None
    pin: str = "original"  # `PIN_TYPES` or an image digest

    def as_dict(self) -> dict:
        """JSON-ready fields (a list, not a tuple), as the provenance and metrics.json record them."""
        return {**dataclasses.asdict(self), "datasets": list(self.datasets)}


def kernel_config(task: str, environ: Mapping[str, str] | None = None) -> KernelConfig:
    """The task's settings, checked here so that a typo stops the push before any request is made."""
    prefix = TASKS.check(task).upper()
    datasets = tuple(s for s in re.split(r"[,\s]+", setting(f"{prefix}_DATASETS", environ)) if s)
    for source in datasets:
        if not SOURCE_RE.match(source):
            raise KitError(f"{prefix}_DATASETS: {source!r} is not an `owner/slug` dataset name")
    internet = setting("INTERNET", environ).lower()
    if internet not in TRUE_WORDS + FALSE_WORDS:
        raise KitError(f"INTERNET: {internet!r} is not one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")
    rows = setting(f"{prefix}_TEST_ROWS", environ)
    if rows and not rows.isdigit():
        raise KitError(f"{prefix}_TEST_ROWS: {rows!r} is not a row count")
    return KernelConfig(task=task, competition=setting(f"{prefix}_COMPETITION", environ), datasets=datasets,
                        accelerator=check_accelerator(setting("ACCELERATOR", environ)),
                        internet=internet in TRUE_WORDS, test_rows=int(rows) if rows else None,
                        pin=check_pin(setting("PIN", environ)))


def check_accelerator(shape: str) -> str:
    """The machine shape, unless the kit cannot use it: TPU shapes and the retired P100 (`REFUSED_SHAPES`)."""
    lowered = shape.lower()
    for prefix, reason in REFUSED_SHAPES.items():
        if lowered.startswith(prefix):
            raise KitError(f"ACCELERATOR: {shape} is refused: {reason}")
    return shape


def check_pin(pin: str) -> str:
    """`original`, `latest` or an image digest (`...sha256:<64 hex>`, as `kaggle kernels pull -m` shows it)."""
    if pin in PIN_TYPES or DIGEST_RE.match(pin):
        return pin
    raise KitError(f"PIN: {pin!r} is not original, latest or an image digest (...sha256:<64 hex digits>, "
                   "from `kaggle kernels pull -m` after a good run)")


def kaggle_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """kaggle.json where the kaggle client looks for it: $KAGGLE_CONFIG_DIR, ~/.kaggle, ~/.config/kaggle."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    legacy = Path(environ.get("HOME", "~")).expanduser() / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy / "kaggle.json"
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".config")
    return Path(xdg) / "kaggle" / "kaggle.json"


def _kaggle_json(environ: Mapping[str, str] | None = None) -> dict:
    """kaggle.json's content, or {} when it is missing or unreadable: the kaggle client reports those."""
    try:
        data = json.loads(kaggle_config_path(environ).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kaggle_username(environ: Mapping[str, str] | None = None) -> str | None:
    """$KAGGLE_USERNAME, else the `username` of kaggle.json, else None. Never reads the key."""
    return setting("KAGGLE_USERNAME", environ) or _kaggle_json(environ).get("username") or None


def credential_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every Kaggle secret this machine holds, so that writers can refuse and loggers can redact them."""
    environ = os.environ if environ is None else environ
    values = [environ.get("KAGGLE_KEY", ""), environ.get("KAGGLE_API_TOKEN", ""),
              str(_kaggle_json(environ).get("key", ""))]
    home = Path(environ.get("HOME", "~")).expanduser()
    for token_file in (environ.get("KAGGLE_API_TOKEN", ""), home / ".kaggle" / "access_token"):
        try:
            values.append(Path(token_file).read_text().strip() if token_file else "")
        except OSError:
            pass
    return sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH})


def check_no_credentials(text: str, where: str, environ: Mapping[str, str] | None = None) -> None:
    """Refuse text that holds a secret; the message names the file, never the value (it lands in logs)."""
    if any(secret in text for secret in credential_values(environ)):
        raise KitError(f"{where}: contains a Kaggle credential value; refusing to write it")
