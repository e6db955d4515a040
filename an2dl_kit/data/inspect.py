"""`an2dl inspect`: load, clean and split each competition's files and summarise them in one table per task.

`summarize(task, inputs)` returns the rows, so the demo prints the same tables.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from an2dl_kit.data.clean import clean_cells, clean_mars
from an2dl_kit.data.discover import REQUIRED, Inputs, find_inputs
from an2dl_kit.data.io import load_cells_train, load_mars
from an2dl_kit.data.split import balanced_class_weights, mars_strata, stratified_split
from an2dl_kit.files import markdown_table
from an2dl_kit.registry import Registry
from an2dl_kit.task import CELLS, MARS

VAL_FRACTION = 0.2
SEED = 0


@dataclass(frozen=True)
class TaskSummary:
    """One task's table: `rows` (one per class, then a total row) and `notes` (cleaning and split lines)."""

    task: str
    source: Path
    rows: list[dict]
    notes: list[str] = field(default_factory=list)

    def text(self) -> str:
        return (
            f"## {self.task}: {self.source}\n\n"
            + markdown_table(self.rows)
            + "".join(f"- {note}\n" for note in self.notes)
        )


def _cells(path: Path, val_fraction: float, seed: int) -> TaskSummary:
    raw = load_cells_train(path)
    clean, report = clean_cells(raw)
    train, val = stratified_split(clean.labels, val_fraction, seed)
    n = CELLS.num_classes
    weights = balanced_class_weights(clean.labels[train], n)
    counts = {
        "raw": np.bincount(raw.labels, minlength=n),
        "clean": np.bincount(clean.labels, minlength=n),
        "train": np.bincount(clean.labels[train], minlength=n),
        "val": np.bincount(clean.labels[val], minlength=n),
    }
    rows = [
        {"class": f"{c} {name}", **{k: int(v[c]) for k, v in counts.items()}, "weight": round(weights[c], 4)}
        for c, name in enumerate(CELLS.class_names)
    ]
    rows.append({"class": "total", **{k: int(v.sum()) for k, v in counts.items()}, "weight": ""})
    notes = report.lines() + [f"split: {len(train)} train / {len(val)} validation (stratified, seed {seed})"]
    return TaskSummary(CELLS.name, path, rows, notes)


def _mars(path: Path, val_fraction: float, seed: int) -> TaskSummary:
    raw = load_mars(path)
    clean, report = clean_mars(raw)
    train, val = stratified_split(mars_strata(clean.masks), val_fraction, seed)
    n = MARS.num_classes
    weights = balanced_class_weights(clean.masks[train], n)

    def shares(masks: np.ndarray) -> np.ndarray:
        return np.bincount(masks.reshape(-1), minlength=n)[:n] / max(masks.size, 1)

    columns = {
        "raw px %": raw.masks,
        "clean px %": clean.masks,
        "train px %": clean.masks[train],
        "val px %": clean.masks[val],
    }
    pixel_shares = {k: shares(v) for k, v in columns.items()}
    tiles = [(clean.masks == c).reshape(len(clean.masks), -1).any(axis=1).sum() for c in range(n)]
    rows = [
        {
            "class": f"{c} {name}",
            **{k: round(100 * float(v[c]), 2) for k, v in pixel_shares.items()},
            "clean tiles with it": int(tiles[c]),
            "pixel weight": round(weights[c], 4),
        }
        for c, name in enumerate(MARS.class_names)
    ]
    notes = report.lines() + [
        f"tiles: {len(raw.masks)} raw, {len(clean.masks)} clean, {len(train)} train / {len(val)} validation "
        f"(stratified by big rock / dominant class, seed {seed}), {len(raw.test)} test",
        f"class {MARS.ignored_class} ({MARS.class_names[MARS.ignored_class]}) is ignored by the leaderboard metric; "
        "its weight is informative only",
    ]
    return TaskSummary(MARS.name, path, rows, notes)


SUMMARIZERS = Registry("task", {CELLS.name: _cells, MARS.name: _mars})


def summarize(task: str, inputs: Inputs, val_fraction: float = VAL_FRACTION, seed: int = SEED) -> TaskSummary:
    """Load, clean and split one task's training file found in `inputs` (DataError if it is absent)."""
    return SUMMARIZERS[task](inputs.require(task), val_fraction, seed)


def summarize_all(data: Path | None = None, val_fraction: float = VAL_FRACTION, seed: int = SEED):
    """Summaries of every task whose training file is found under the input root; DataError if none is."""
    inputs = find_inputs(data)
    tasks = [task for task in SUMMARIZERS if getattr(inputs, REQUIRED[task][0]) is not None]
    if not tasks:
        inputs.require(CELLS.name)  # raises, naming the root searched
    return [summarize(task, inputs, val_fraction, seed) for task in tasks]


def cli(args: argparse.Namespace) -> int:
    """`an2dl inspect [--data DIR]`."""
    summaries = summarize_all(args.data)
    print("\n".join(summary.text() for summary in summaries), end="")
    missing = set(SUMMARIZERS) - {s.task for s in summaries}
    for task in sorted(missing):
        print(f"\n({task}: no training file under {find_inputs(args.data).root})")
    return 0
