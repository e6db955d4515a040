"""`an2dl ensemble`: average the kept test probabilities of several runs into one submission.

Why: runs with other seeds, folds or settings make different mistakes, and their mean probabilities are a
better submission than any of them. Every run keeps `test_probs.npz` (`an2dl_kit.inference.probabilities`), so an
ensemble needs no model, no GPU and no kernel session: it checks that every run predicted the same test set
(fingerprint and shape), streams the members' files chunk by chunk (never every map at once), averages them
uniformly or weighted by each run's validation score, takes the arg-max over the stored classes (Mars: 1-4,
never background) and writes a validated `submission.csv`, `metrics.json` (members, weights, test scores when
`--data` holds the test labels) and, for cells, a Codabench `submission.zip` whose `model.py` averages every
member model with its own TTA views.

Fold runs (`data.folds` K >= 2 with `data.fold` set, each trained on its own fold of one partition) are
ensembled the same way, with more checks and an out-of-fold (OOF) score: every run must be a fold of the same
partition (fold count, fold assignment and cleaned training set, by their sha256 in the files' metadata), no
fold may come twice, and missing folds are named. Each fold's `val_probs.npz` holds its predictions and labels
for the images it never trained on; pooled over the folds present they give the OOF score (per-fold scores,
their mean and spread beside it), and for Mars they choose the majority filter (kept only if it does not lower
the OOF mIoU), which is then applied to the averaged test masks and to each fold's.

A run folder without probabilities, a truncated or corrupted file, runs on other test sets or of another
partition, a fold given twice or a missing model for the zip is a one-line `KitError`, raised before anything
is written. Local `--out` folders and downloaded
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
from an2dl_kit.inference.probabilities import PROBS_FILE, VAL_PROBS_FILE, Stored, fingerprint, open_stored
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


# The split metadata that must agree for runs to be folds of one partition.
PARTITION_KEYS = ("folds", "split_seed", "assignment_sha256", "train_sha256")


def fold_validation(runs: Sequence[Path], members: Sequence[Stored]) -> list[Stored]:
    """The runs' validation files when they are fold runs, checked to be folds of one partition with no fold
    twice; [] when no run is a fold run. Mixing fold runs with other runs is refused (no OOF score exists)."""
    splits = [member.meta.get("split") or {} for member in members]
    folded = [split.get("fold") is not None for split in splits]
    if not any(folded):
        return []
    if not all(folded):
        raise KitError(f"{runs[folded.index(False)]}: not a fold run; ensemble the folds of one partition "
                       "without other runs (or ensemble their fold ensembles' submissions separately)")
    seen: dict[int, Path] = {}
    for run, split in zip(runs, splits, strict=True):
        if any(split.get(key) != splits[0].get(key) for key in PARTITION_KEYS):
            raise KitError(f"{run}: fold {split['fold']} of another partition than {runs[0]} "
                           f"({_partition_text(split)} vs {_partition_text(splits[0])}); ensemble the folds of "
                           "one partition (same folds, split_seed and training data)")
        if split["fold"] in seen:
            raise KitError(f"{seen[split['fold']]} and {run}: both fold {split['fold']}; give each fold once")
        seen[split["fold"]] = run
    validation = []
    for member in members:
        stored = open_stored(member.path.parent / VAL_PROBS_FILE)
        if stored.meta.get("split") != member.meta.get("split") or stored.encoding != member.encoding:
            raise KitError(f"{stored.path}: not from the run of the {member.path.name} beside it")
        validation.append(stored)
    return validation


def _partition_text(split: dict) -> str:
    return (f"{split.get('folds')} folds, split_seed {split.get('split_seed')}, assignment "
            f"{str(split.get('assignment_sha256'))[:12]}, training set {str(split.get('train_sha256'))[:12]}")


def filter_sizes(task: str, validation: Sequence[Stored]) -> tuple[int, bool]:
    """(majority-filter size to try, whether it is kept only if it does not lower the OOF score): Mars reads the
    fold runs' `cleanup` and `auto_cleanup` settings; cells has no post-processing."""
    settings = validation[0].meta.get("inference") or {}
    size = int(settings.get("cleanup") or 0) if task == "mars" else 0
    return (size if size > 1 else 0), bool(settings.get("auto_cleanup", True))


def postprocessor(size: int):
    """Labels -> submitted labels: the majority filter of `size` (Mars), or the labels as they are."""
    if size <= 1:
        return lambda labels: labels
    from an2dl_kit.inference.postprocess import majority_filter

    return lambda labels: majority_filter(labels, size)


def out_of_fold(task: str, runs: Sequence[Path], validation: Sequence[Stored]) -> dict:
    """The OOF record: scores over every fold's validation images pooled (confusion matrices add up, so this
    is the metric over the concatenated predictions), each fold's own score, their mean and spread, the folds
    present and missing, and the post-processing chosen on the pooled predictions."""
    from an2dl_kit.metrics import CONFUSION_SCORERS, SCORERS

    score = TASKS[task].score
    size, auto = filter_sizes(task, validation)
    candidates = (0, size) if size else (0,)
    confusion = {candidate: [] for candidate in candidates}
    for stored in validation:
        labels = stored.encoding.labels(stored.read())
        for candidate in candidates:
            confusion[candidate].append(SCORERS[task](stored.labels, postprocessor(candidate)(labels))
                                        ["confusion_matrix"])
    pooled = {candidate: CONFUSION_SCORERS[task](sum(cms)) for candidate, cms in confusion.items()}
    chosen = size if size and (not auto or pooled[size][score] >= pooled[0][score]) else 0
    postprocess = {"majority_filter": chosen, f"oof_{score}_filtered": pooled[size][score]} if size else {}
    split = validation[0].meta["split"]
    folds = [stored.meta["split"]["fold"] for stored in validation]
    per_fold = [CONFUSION_SCORERS[task](cm)[score] for cm in confusion[chosen]]
    return {
        "score": score, "value": pooled[chosen][score], "scores": pooled[chosen],
        "unfiltered": pooled[0][score], "postprocess": postprocess, "folds": split["folds"],
        "present": sorted(folds), "missing": sorted(set(range(split["folds"])) - set(folds)),
        "images": int(sum(stored.shape[0] for stored in validation)), "of": split.get("rows"),
        "per_fold": [{"fold": fold, "run": str(run), "images": stored.shape[0], score: value}
                     for fold, run, stored, value in sorted(zip(folds, runs, validation, per_fold, strict=True),
                                                            key=lambda item: item[0])],
        "mean": float(np.mean(per_fold)), "std": float(np.std(per_fold, ddof=1)) if len(per_fold) > 1 else 0.0,
        "partition": {key: split.get(key) for key in PARTITION_KEYS},
    }


def oof_line(oof: dict) -> str:
    """`OOF mIoU 0.7012 over 2505 of 2505 images (folds 0.70, 0.71, 0.69: mean 0.7000 ± 0.0100)`."""
    score = oof["score"]
    folds = ", ".join(f"{fold[score]:.4f}" for fold in oof["per_fold"])
    missing = f"; folds {', '.join(map(str, oof['missing']))} of {oof['folds']} missing" if oof["missing"] else ""
    filtered = (f"; majority filter {oof['postprocess']['majority_filter'] or 'not used'}"
                if oof["postprocess"] else "")
    return (f"OOF {score} {oof['value']:.4f} over {oof['images']} of {oof['of']} images (per fold {folds}: "
            f"mean {oof['mean']:.4f} ± {oof['std']:.4f}){missing}{filtered}")


def fold_set_oof(record: dict) -> dict:
    """A fold ensemble's `oof` record with each fold's submitted views and test score (None without test labels)
    added to its entry in `per_fold`: the `oof` of a fold set's metrics.json (`runner.fold_set_record`), and what
    `an2dl report` shows of a fold ensemble."""
    score, members = record["score"], {member["fold"]: member for member in record["members"]}
    return {**record["oof"], "per_fold": [
        {**entry, "views": members[entry["fold"]]["views"],
         "test": None if members[entry["fold"]]["test"] is None else members[entry["fold"]]["test"][score]}
        for entry in record["oof"]["per_fold"]]}


def fold_set_fields(folds: Sequence[dict], ensemble: dict) -> dict:
    """The fields of a fold set's metrics.json that come from its folds' metrics.json and their ensemble record,
    for both writers of that shape (`runner.fold_set_record` after `an2dl train --set folds=K`, and `an2dl
    report` reading an `an2dl ensemble` of fold runs): samples, split (no `fold`), every fold's phases and
    details, the views submitted, post-processing, test scores, `oof` (`fold_set_oof`) and training seconds."""
    first, oof = folds[0], fold_set_oof(ensemble)
    return {
        "samples": {"train": oof["of"], "validation": oof["images"], "test": first["samples"]["test"]},
        "split": {**first["split"], "fold": None},
        "phases": [phase for fold in folds for phase in fold["phases"]],
        "tta": {"configured": first["tta"]["configured"], "selection": {},
                "views": list(dict.fromkeys(view for fold in folds for view in fold["tta"]["views"]))},
        "postprocess": oof["postprocess"], "test": None, "test_tta": ensemble["test"], "members": [], "oof": oof,
        "details": {"folds": [fold["details"] for fold in folds]},
        "seconds": {"training": round(sum(fold["seconds"]["training"] for fold in folds), 2)},
    }


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


def average_labels(members: Sequence[Stored], weights: np.ndarray, keep_members: bool = False,
                   majority: int = 0) -> tuple[np.ndarray, list[np.ndarray]]:
    """The weighted mean's arg-max over the stored classes, then the `majority` filter (Mars; 0: none),
    streamed chunk by chunk through every member's file; with `keep_members` also each member's own labels,
    filtered alike (to score them)."""
    encoding, finish = members[0].encoding, postprocessor(majority)
    labels, own = [], [[] for _ in members]
    for parts in zip(*(member.chunks() for member in members), strict=True):
        total = parts[0] * np.float32(weights[0])
        for weight, part in zip(weights[1:], parts[1:], strict=True):
            total += part * np.float32(weight)
        labels.append(finish(encoding.labels(total)))
        for kept, part in zip(own, parts, strict=True):
            if keep_members:
                kept.append(finish(encoding.labels(part)))
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
            adapt = member.meta.get("inference", {}).get("bn_adapt", "none")
            models.append(Member(path, tuple(member.meta.get("views") or ("identity",)), weight / len(files),
                                 adapt, member.meta.get("batch_size", 64)))
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
             data: Path | None = None, extra: dict | None = None) -> dict:
    """Average the runs' test probabilities into `out`; returns the metrics record (also `metrics.json`), with
    `extra` keys added (what made the runs: profile, overrides). The other arguments are `combine`'s."""
    record = {**combine(task, runs, out, weighting, data), **(extra or {})}
    record["files"].append(METRICS_JSON)
    write_json(Path(out) / METRICS_JSON, record)
    return record


def combine(task: str, runs: Sequence[Path], out: Path, weighting: str = "uniform",
            data: Path | None = None) -> dict:
    """Average the runs' test probabilities into `out`'s submission files; returns the ensemble's record (with
    an `oof` record when the runs are folds of one partition, else `oof` None).

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
    validation = fold_validation(runs, members)
    oof = out_of_fold(task, runs, validation) if validation else None
    weights = member_weights(members, weighting)
    zip_members = codabench_members(members, weights) if task == "cells" else []
    truth = test_truth(task, data, members)
    majority = oof["postprocess"].get("majority_filter", 0) if oof else 0
    labels, own = average_labels(members, weights, keep_members=truth is not None, majority=majority)
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
        "members": [{"run": str(Path(run)), "fold": (m.meta.get("split") or {}).get("fold"),
                     "validation": m.meta.get("validation"), "weight": float(w),
                     "views": m.meta.get("views"), "models": m.meta.get("models"), "test": test}
                    for run, m, w, test in zip(runs, members, weights, member_tests, strict=True)],
        "test": scores(truth, labels) if truth is not None else None,
        "test_members_mean": (float(np.mean([t[info.score] for t in member_tests])) if truth is not None
                              else None),
        "oof": oof, "check": summary, "seconds": round(time.monotonic() - started, 2), "files": files,
    }
    return record


def summary_lines(record: dict) -> list[str]:
    """What `an2dl ensemble` prints: each member's validation score, weight and test score when known, then
    the ensemble's test score beside the members' mean."""
    score = record["score"]
    lines = []
    for member in record["members"]:
        test = f"  test {score} {member['test'][score]:.4f}" if member["test"] is not None else ""
        validation = member["validation"]
        fold = f" (fold {member['fold']})" if member.get("fold") is not None else ""
        lines.append(f"{member['run']}{fold}: validation {score} "
                     f"{'?' if validation is None else f'{validation:.4f}'}  weight {member['weight']:.3f}{test}")
    if record["oof"] is not None:
        lines.append(oof_line(record["oof"]))
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
