"""`an2dl ensemble`: average the kept test probabilities of several runs into one submission.

Why: runs with other seeds, folds or settings make different mistakes, and their mean probabilities are a
better submission than any of them. Every run keeps `test_probs.npz` (`an2dl_kit.inference.probabilities`), so an
ensemble needs no model, no GPU and no kernel session: it checks that every run predicted the same test set
(fingerprint and shape), streams the members' files chunk by chunk (never every map at once), averages them
uniformly or weighted by each run's validation score, takes the arg-max over the stored classes (Mars: 1-4,
never background) and writes a validated `submission.csv`, `metrics.json` (members, weights, test scores when
`--data` holds the test labels) and, for cells, a Codabench `submission.zip` whose `model.py` averages every
member model with its own TTA views.

A run folder without probabilities, a truncated or corrupted file, runs on other test sets or a missing model
for the zip is a one-line `KitError`, raised before anything is written. Local `--out` folders and downloaded
kernel outputs (`submissions/<task>/v<N>/`) hold the same files and are read the same way. No TensorFlow is
imported unless a cells zip is written (its models are re-saved without their optimizer state).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from an2dl_kit.errors import KitError
from an2dl_kit.files import atomic_path, write_json
from an2dl_kit.inference.probabilities import PROBS_FILE, Stored, fingerprint, open_stored
from an2dl_kit.task import LABELS_FILE, TASKS

WEIGHTINGS = ("uniform", "validation")
SUBMISSION_CSV = "submission.csv"
SUBMISSION_ZIP = "submission.zip"
METRICS_JSON = "metrics.json"


def load_members(task: str, runs: Sequence[Path]) -> list[Stored]:
    """Open every run's probabilities (a run folder, or the npz itself) and check they can be averaged: the
    task, the stored classes, and the test set (fingerprint and shape) of the first run."""
    if not runs:
        raise KitError("ensemble: name at least one run folder")
    members: list[Stored] = []
    for run in map(Path, runs):
        stored = open_stored(run if run.suffix == ".npz" else run / PROBS_FILE)
        if stored.meta.get("task") != task:
            raise KitError(f"{run}: holds {stored.meta.get('task')} probabilities, not {task}")
        first = members[0] if members else stored
        if (stored.meta.get("test_fingerprint"), stored.shape, stored.encoding) != \
                (first.meta.get("test_fingerprint"), first.shape, first.encoding):
            raise KitError(f"{run}: predicted another test set than {runs[0]} ({_test_text(stored)} vs "
                           f"{_test_text(first)}); ensemble runs on the same test file only")
        members.append(stored)
    return members


def _test_text(stored: Stored) -> str:
    return f"{str(stored.meta.get('test_fingerprint'))[:12]}, {stored.shape[0]} images"


def member_weights(members: Sequence[Stored], weighting: str) -> np.ndarray:
    """Weights summing to one: equal, or proportional to each run's validation score of its submitted
    predictions (the runs' validation sets may differ; the score still ranks how well each run learned)."""
    if weighting not in WEIGHTINGS:
        raise KitError(f"ensemble weights {weighting!r}: choose one of {', '.join(WEIGHTINGS)}")
    if weighting == "uniform":
        return np.full(len(members), 1.0 / len(members))
    scores = []
    for member in members:
        score = member.meta.get("validation")
        if not isinstance(score, (int, float)) or not np.isfinite(score) or score <= 0:
            raise KitError(f"{member.path}: no positive validation score to weigh by; use --weights uniform")
        scores.append(float(score))
    return np.asarray(scores) / sum(scores)


def test_truth(task: str, data: Path | None, members: Sequence[Stored]) -> np.ndarray | None:
    """The test labels beside `data`'s test file (None without `--data` or without labels), after checking
    that `data`'s test set is the one the runs predicted."""
    if data is None:
        return None
    from an2dl_kit.data.discover import find_inputs
    from an2dl_kit.data.io import TEST_LOADERS, load_labels

    path = find_inputs(data).test_file(task)
    if path is None:
        raise KitError(f"{data}: no {task} test file found to score the ensemble against")
    test = TEST_LOADERS[task](path)
    if fingerprint(test) != members[0].meta.get("test_fingerprint"):
        raise KitError(f"{path}: not the test set the runs predicted; pass the --data they were trained on")
    if not (path.parent / LABELS_FILE).exists():
        return None
    return load_labels(path.parent / LABELS_FILE).reshape(len(test), *TASKS[task].label_shape)


def average_labels(members: Sequence[Stored], weights: np.ndarray,
                   keep_members: bool = False) -> tuple[np.ndarray, list[np.ndarray]]:
    """The weighted mean's arg-max over the stored classes, streamed chunk by chunk through every member's
    file; with `keep_members` also each member's own labels (to score them)."""
    encoding = members[0].encoding
    labels, own = [], [[] for _ in members]
    for parts in zip(*(member.chunks() for member in members), strict=True):
        total = parts[0] * np.float32(weights[0])
        for weight, part in zip(weights[1:], parts[1:], strict=True):
            total += part * np.float32(weight)
        labels.append(encoding.labels(total))
        for kept, part in zip(own, parts, strict=True):
            if keep_members:
                kept.append(encoding.labels(part))
    return np.concatenate(labels), [np.concatenate(kept) for kept in own] if keep_members else []


def codabench_members(members: Sequence[Stored], weights: np.ndarray) -> list:
    """Every member run's models with their views and BatchNorm adaptation, the run's weight shared among its
    models; a missing model file is a `KitError` (checked before anything is written)."""
    from an2dl_kit.inference.codabench import Member

    models = []
    for member, weight in zip(members, weights, strict=True):
        files = member.meta.get("models") or []
        for name in files:
            path = member.path.parent / name
            if not path.is_file():
                raise KitError(f"{member.path.parent}: no {name} for the Codabench {SUBMISSION_ZIP}")
            models.append(Member(path, tuple(member.meta.get("views") or ("identity",)), weight / len(files),
                                 member.meta.get("bn_adapt", "none"), member.meta.get("batch_size", 64)))
        if not files:
            raise KitError(f"{member.path}: names no model files for the Codabench {SUBMISSION_ZIP}")
    return models


def write_submission(task: str, out: Path, labels: np.ndarray) -> str:
    """The leaderboard CSV, checked against the test size before it takes its final name."""
    from an2dl_kit.submission import WRITERS, check_submission

    with atomic_path(out / SUBMISSION_CSV) as tmp:
        WRITERS[task](tmp, labels)
        return check_submission(tmp, task, len(labels)).replace(str(tmp), str(out / SUBMISSION_CSV))


def ensemble(task: str, runs: Sequence[Path], out: Path, weighting: str = "uniform",
             data: Path | None = None) -> dict:
    """Average the runs' test probabilities into `out`; returns the metrics record (also `metrics.json`).

    Args:
        task: "cells" or "mars".
        runs: run folders (local `--out` folders or downloaded kernel outputs) or their `test_probs.npz`.
        out: the ensemble's folder (created).
        weighting: "uniform" or "validation".
        data: a folder holding the test set the runs predicted; its `test_labels.npz`, when present, scores
            the ensemble and every member.
    """
    started = time.monotonic()
    info = TASKS[task]
    members = load_members(task, runs)
    weights = member_weights(members, weighting)
    zip_members = codabench_members(members, weights) if task == "cells" else []
    truth = test_truth(task, data, members)
    labels, own = average_labels(members, weights, keep_members=truth is not None)
    out = Path(out)
    summary = write_submission(task, out, labels)
    files = [SUBMISSION_CSV]
    if zip_members:
        from an2dl_kit.inference.codabench import write_submission_zip

        write_submission_zip(out / SUBMISSION_ZIP, zip_members)
        files.append(SUBMISSION_ZIP)
    from an2dl_kit.metrics import SCORERS

    scores = SCORERS[task]
    member_tests = [scores(truth, mine) for mine in own] if truth is not None else [None] * len(members)
    record = {
        "schema": 1, "task": task, "kind": "ensemble", "weights": weighting, "score": info.score,
        "test_fingerprint": members[0].meta.get("test_fingerprint"), "test_shape": list(members[0].shape),
        "members": [{"run": str(Path(run)), "validation": m.meta.get("validation"), "weight": float(w),
                     "views": m.meta.get("views"), "models": m.meta.get("models"), "test": test}
                    for run, m, w, test in zip(runs, members, weights, member_tests, strict=True)],
        "test": scores(truth, labels) if truth is not None else None,
        "test_members_mean": (float(np.mean([t[info.score] for t in member_tests])) if truth is not None
                              else None),
        "check": summary, "seconds": round(time.monotonic() - started, 2), "files": files + [METRICS_JSON],
    }
    write_json(out / METRICS_JSON, record)
    return record


def summary_lines(record: dict) -> list[str]:
    """What `an2dl ensemble` prints: each member's validation score, weight and test score when known, then
    the ensemble's test score beside the members' mean."""
    score = record["score"]
    lines = []
    for member in record["members"]:
        test = f"  test {score} {member['test'][score]:.4f}" if member["test"] is not None else ""
        validation = member["validation"]
        lines.append(f"{member['run']}: validation {score} "
                     f"{'?' if validation is None else f'{validation:.4f}'}  weight {member['weight']:.3f}{test}")
    if record["test"] is not None:
        lines.append(f"ensemble test {score} {record['test'][score]:.4f} (members' mean "
                     f"{record['test_members_mean']:.4f})")
    return lines + [record["check"]]


def cli(args: argparse.Namespace) -> int:
    """`an2dl ensemble --task T RUN_DIR... --out DIR [--weights uniform|validation] [--data DIR]`."""
    record = ensemble(args.task, args.runs, args.out, args.weights, args.data)
    for line in summary_lines(record):
        print(line)
    print(f"wrote to {args.out} in {record['seconds']:.1f} s: {', '.join(record['files'])}")
    return 0
