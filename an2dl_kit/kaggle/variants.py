"""Named variants of a task's kernel and the history of their pushes.

A competitor tries many settings side by side: `an2dl push --task mars --name focal --set loss=focal` pushes to
its own kernel (`<user>/an2dl-mars-terrain-focal`), so a new variant never replaces a running one. The
unnamed default keeps the template's slug and the folders the loop has always used. On disk (relative to the
working directory):

    submissions/<task>/last_push.json, v<N>/           the default kernel
    submissions/<task>/<name>/last_push.json, v<N>/    a named variant
    submissions/<task>/pushes.jsonl                    every push of every variant, oldest first

`pushes.jsonl` is what `an2dl runs` lists, since `last_push.json` only knows each variant's newest version.
TensorFlow-free.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from an2dl_kit.errors import KitError
from an2dl_kit.files import write_text

SUBMISSIONS_DIR = Path("submissions")
PUSH_RECORD = "last_push.json"
PUSH_HISTORY = "pushes.jsonl"
DEFAULT_NAME = "default"  # how the unnamed kernel is shown; reserved so a table never shows it twice
MAX_NAME_LENGTH = 24  # keeps `<template title> <name>` within Kaggle's title limit of 50 characters
# What python-slugify (the kaggle client's rule) leaves unchanged, so the title and the slug agree.
NAME_RE = re.compile(r"^[a-z0-9]+(-[a-z0-9]+)*$")


def check_name(name: str | None) -> str | None:
    """A variant name, or None for the default kernel; a bad name is a one-line `KitError`.

    `v<N>` is refused because `submissions/<task>/v<N>/` already holds the default kernel's outputs.
    """
    if name is None:
        return None
    if not NAME_RE.match(name) or len(name) > MAX_NAME_LENGTH:
        raise KitError(f"--name {name!r}: use lowercase letters, digits and single hyphens (a Kaggle slug), at "
                       f"most {MAX_NAME_LENGTH} characters, e.g. focal or unet-dice")
    if name == DEFAULT_NAME or re.fullmatch(r"v\d+", name):
        raise KitError(f"--name {name!r}: reserved (it names the default kernel or its output folders); "
                       "choose another")
    return name


def variant_dir(task: str, name: str | None) -> Path:
    """Where a variant's push record and downloaded outputs live."""
    return SUBMISSIONS_DIR / task / name if name else SUBMISSIONS_DIR / task


def push_record_path(task: str, name: str | None) -> Path:
    return variant_dir(task, name) / PUSH_RECORD


def shown_name(name: str | None) -> str:
    return name or DEFAULT_NAME


def format_overrides(overrides: dict | None) -> str:
    """`loss=focal epochs=80`, as `--set` takes them (and `make ... SET="..."`); "" for none."""
    return " ".join(f"{key}={value}" for key, value in (overrides or {}).items())


def read_pushes(task: str) -> list[dict]:
    """Every recorded push of the task, oldest first; a damaged line is a one-line error naming it."""
    path = SUBMISSIONS_DIR / task / PUSH_HISTORY
    if not path.is_file():
        return []
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise KitError(f"{path}: line {number} is not JSON; fix or delete that line") from None
    return records


def record_push(task: str, record: dict) -> Path:
    """Append one push to the history, rewriting the file atomically (never half a line)."""
    path = SUBMISSIONS_DIR / task / PUSH_HISTORY
    old = path.read_text(encoding="utf-8") if path.is_file() else ""
    return write_text(path, old + json.dumps(record, sort_keys=True) + "\n")
