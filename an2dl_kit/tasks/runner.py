"""The one task runner: inputs -> clean -> split -> runtime -> phases -> TTA -> files -> summary.

A task (`tasks/cells.py`, `tasks/mars.py`) provides only what differs, as a `TaskHooks` object: how to load
and clean its files, what to stratify on, the model, batches and training phases (`TrainingPlan`), how
probabilities become labels and scores, and its own leaderboard files and plots. Everything else is here, once:
the split, the runtime, the phase loop with the time budget and resume, TTA over named views, the learning
curves, `metrics.json` (one schema for both tasks, `METRICS_KEYS`) and the printed summary. `compare` trains a
list of named override sets with one budget, for either task.

K-fold (`data.folds` K >= 2): a run with `data.fold` set trains on the other folds and validates on its own,
like any run; without `fold`, `run` trains the K folds one after another into `fold_<k>/` (`run_folds`) and
writes their ensemble, scored out of fold, in the run folder. Every run keeps its validation predictions
(`val_probs.npz`) beside its test predictions (`test_probs.npz`), with the split's fingerprint.

A third task: describe it in `an2dl_kit/task.py`, write `tasks/<name>_config.py` (profiles) and
`tasks/<name>.py` (a `TaskHooks` named `HOOKS`), and name both in `tasks/__init__.py`.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from an2dl_kit import config as cfg
from an2dl_kit import runtime as rt
from an2dl_kit.inference.probabilities import PROBS_FILE, VAL_PROBS_FILE, encoding_for, fingerprint
from an2dl_kit.task import LABELS_FILE, TaskInfo
from an2dl_kit.training import HISTORY_FILE, MODEL_FILE, Deadline, PhaseResult, Schedule, fit_phase

METRICS_JSON = "metrics.json"
LEARNING_CURVES_PNG = "learning_curves.png"
SCHEMA_VERSION = 1
# Test images per prediction chunk: bounds the memory of probability maps (the Mars test set has 10,022).
PREDICT_CHUNK = 1024
# Seeds the shifted validation copy (`TaskHooks.shifted_validation`) apart from the training batches' streams.
SHIFTED_VALIDATION_STREAM = 7
# metrics.json's keys, the same for every task (docs/architecture.md, "metrics.json").
METRICS_KEYS = (
    "schema", "task", "profile", "overrides", "config", "provenance", "runtime", "versions", "machine",
    "samples", "cleaning", "split", "model", "phases", "validation", "validation_tta", "tta", "postprocess",
    "test", "test_tta", "members", "oof", "details", "seconds", "files",
)


@dataclass(frozen=True)
class Loaded:
    """A task's cleaned competition files."""

    images: np.ndarray
    labels: np.ndarray
    test: np.ndarray | None
    test_path: Path | None
    cleaning: dict


@dataclass(frozen=True)
class RunData:
    """The arrays of one run, as the model takes them; `y_test` only where labels sit beside the test set.
    `val_index` are the validation images' rows in the cleaned training set, `split` the split's record."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray | None
    y_test: np.ndarray | None
    cleaning: dict
    test_fingerprint: str | None = None
    val_index: np.ndarray | None = None
    split: dict = field(default_factory=dict)

    def samples(self) -> dict:
        return {"train": len(self.x_train), "validation": len(self.x_val),
                "test": 0 if self.x_test is None else len(self.x_test)}


@dataclass
class Phase:
    """One `fit_phase` of a plan: `compile(model)` (freezing what the phase keeps fixed) runs in the strategy
    scope just before it."""

    name: str
    epochs: int
    schedule: Schedule
    compile: Callable[[Any], None]
    callbacks: tuple = ()


@dataclass
class TrainingPlan:
    """What a task trains: the model, its batches, its phases; `details()` is read after training."""

    model: Any
    train: Any
    val: Any
    phases: list[Phase]
    model_info: dict
    details: Callable[[], dict] = dict
    batch_size: int = 64


@dataclass
class Results:
    """Scores and labels after training. `validation_tta` scores the configured TTA views; `views` are the
    ones the submission uses (`choose_views`, on the images `selection` describes), `postprocess` what the task
    chose on validation, `val_probs` the validation probabilities of those views (before post-processing).
    With several members, `members` holds each one's validation scores and `model_files` every member's model.
    `batch_size` is the one the predictions were made with."""

    validation: dict
    validation_tta: dict
    views: tuple[str, ...]
    val_labels: np.ndarray
    test_labels: np.ndarray | None = None
    test: dict | None = None
    test_tta: dict | None = None
    postprocess: dict = field(default_factory=dict)
    selection: dict = field(default_factory=dict)
    members: list[dict] = field(default_factory=list)
    model_files: tuple[str, ...] = (MODEL_FILE,)
    val_probs: np.ndarray | None = None
    batch_size: int = 64  # of the predictions: `bn_adapt=batch` depends on it


class TaskHooks:
    """What a task provides to the runner; see `tasks/cells.py` and `tasks/mars.py`."""

    info: TaskInfo
    dense: bool  # per-pixel predictions: TTA views are undone on the probability maps

    def load(self, data: Path | None) -> Loaded:
        raise NotImplementedError

    def strata(self, labels: np.ndarray) -> np.ndarray:
        return labels

    def to_inputs(self, images: np.ndarray) -> np.ndarray:
        return images

    def plan(self, config, runtime, data: RunData) -> TrainingPlan:
        raise NotImplementedError

    def shifted_validation(self, config, data: RunData,
                           rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, str] | None:
        """A shifted copy of the validation set, drawn from `rng`, that joins it in the TTA decision: (inputs,
        labels, what it is); none by default."""
        return None

    def choose_postprocess(self, config, y_val: np.ndarray, probabilities: np.ndarray, plain: dict) -> dict:
        """Post-processing settings chosen on validation (passed to `to_labels`); none by default."""
        return {}

    def to_labels(self, probabilities: np.ndarray, config, postprocess: Mapping) -> np.ndarray:
        raise NotImplementedError

    def scores(self, truth: np.ndarray, labels: np.ndarray) -> dict:
        raise NotImplementedError

    def write_outputs(self, out_dir: Path, config, data: RunData, results: Results) -> list[str]:
        """The task's leaderboard files and plots; returns the names written."""
        raise NotImplementedError

    def score_line(self, label: str, scores: dict) -> str:
        raise NotImplementedError


def hooks_for(task: str) -> TaskHooks:
    from an2dl_kit.tasks import HOOKS

    return HOOKS.load(task)


# --- the run -----------------------------------------------------------------------------------------------


def run(task: str, data: Path | None, out_dir: Path, profile: str = "local", *,
        overrides: Mapping[str, Any] | list[str] | None = None, provenance: dict | None = None) -> dict:
    """Train `task` and write every output into `out_dir`; returns the metrics dict (also metrics.json).

    Args:
        task: "cells" or "mars".
        data: folder searched for the competition files (None: $AN2DL_INPUT or /kaggle/input).
        out_dir: output folder (created); re-running into it resumes an interrupted run.
        profile: a profile of the task (`tasks.PROFILES`).
        overrides: run-configuration fields, as {field: value} or ["field=value", ...].
        provenance: recorded as is in metrics.json (commit, kernel version...).
    """
    from an2dl_kit.tasks import resolve_config

    started, cpu_started = time.monotonic(), time.process_time()
    hooks = hooks_for(task)
    config = resolve_config(task, profile, overrides)
    if config.data.folds > 1 and config.data.fold is None:
        return run_folds(task, data, out_dir, profile, overrides=overrides, provenance=provenance)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    run_data = prepare_data(hooks, config, data)
    runtime = rt.setup_runtime(config.training.seed, config.run.precision, config.run.deterministic)
    rt.log(f"{task}: {runtime.describe()}")
    trained = train_members(hooks, config, runtime, run_data, out_dir)
    train_seconds = (time.monotonic() - started, time.process_time() - cpu_started)

    predict_started = time.monotonic()
    results = evaluate_and_keep(hooks, config, trained, run_data, out_dir)
    predict_seconds = time.monotonic() - predict_started
    files = hooks.write_outputs(out_dir, config, run_data, results) + list(trained.model_files)
    files += ([PROBS_FILE] if run_data.x_test is not None else []) + [VAL_PROBS_FILE]
    for folder in trained.folders:
        files += [str(Path(folder) / name) for name in curves(out_dir / folder)]
    metrics = metrics_record(
        hooks, config, profile=profile, overrides=overrides, provenance=provenance, runtime=runtime,
        data=run_data, plan=trained.plan, phases=trained.phases, results=results, files=files + [METRICS_JSON],
        seconds={"training": train_seconds[0], "training_cpu": train_seconds[1], "predict": predict_seconds,
                 "total": time.monotonic() - started}, members=trained.records)
    from an2dl_kit.files import write_json

    write_json(out_dir / METRICS_JSON, metrics)
    rt.log(f"{task}: done in {metrics['seconds']['total']:.0f} s")
    return metrics


def curves(folder: Path) -> list[str]:
    """The learning-curve plot of a folder's history.csv; the names written (none without a history)."""
    if not (folder / HISTORY_FILE).exists():
        return []
    from an2dl_kit.plots import learning_curves

    learning_curves(folder / HISTORY_FILE, folder / LEARNING_CURVES_PNG)
    return [HISTORY_FILE, LEARNING_CURVES_PNG]


def prepare_data(hooks: TaskHooks, config, data: Path | None) -> RunData:
    """Load and clean, stratified split (or fold `data.fold` of a stratified K-fold), optional cap on the
    training set, known test labels."""
    from an2dl_kit.data.split import class_counts, partition

    loaded = hooks.load(data)
    d, seed = config.data, config.training.seed
    split_seed = d.split_seed if d.split_seed is not None else seed if d.folds == 1 else 0
    train_idx, val_idx, assignment = partition(hooks.strata(loaded.labels), folds=d.folds, fold=d.fold,
                                               val_fraction=d.val_fraction, seed=split_seed)
    if config.data.max_train is not None:
        train_idx = np.sort(np.random.default_rng(seed).permutation(train_idx)[:config.data.max_train])
    test = None if loaded.test is None else hooks.to_inputs(loaded.test)
    # metrics.json's class counts: the loader's raw and cleaned ones, then this split's.
    split_counts = {"train": class_counts(loaded.labels[train_idx], hooks.info.num_classes),
                    "validation": class_counts(loaded.labels[val_idx], hooks.info.num_classes)}
    cleaning = {**loaded.cleaning,
                "class_counts": {**loaded.cleaning.get("class_counts", {}), **split_counts}}
    run_data = RunData(
        x_train=hooks.to_inputs(loaded.images[train_idx]), y_train=loaded.labels[train_idx],
        x_val=hooks.to_inputs(loaded.images[val_idx]), y_val=loaded.labels[val_idx], x_test=test,
        y_test=known_test_labels(loaded.test_path, loaded.test, hooks.info.label_shape), cleaning=cleaning,
        test_fingerprint=None if loaded.test is None else fingerprint(loaded.test), val_index=val_idx,
        split={"folds": d.folds, "fold": d.fold, "split_seed": split_seed, "rows": len(assignment),
               "assignment_sha256": fingerprint(assignment), "train_sha256": fingerprint(loaded.images, loaded.labels)})
    counts = run_data.samples()
    rt.log(f"{hooks.info.name}: {counts['train']} training, {counts['validation']} validation, "
           f"{counts['test']} test images")
    return run_data


def known_test_labels(test_path: Path | None, test: np.ndarray | None, label_shape: tuple) -> np.ndarray | None:
    """`test_labels.npz` beside the test file when it matches the test set (synthetic data and the shared
    stand-ins only; the competitions keep theirs)."""
    from an2dl_kit.data.io import load_labels

    if test_path is None or test is None or not (test_path.parent / LABELS_FILE).exists():
        return None
    labels = load_labels(test_path.parent / LABELS_FILE)
    labels = labels.reshape(len(labels), *label_shape) if labels.size == len(test) * int(np.prod(label_shape)) \
        else labels
    return labels if labels.shape == (len(test), *label_shape) else None


def train(hooks: TaskHooks, config, plan: TrainingPlan, runtime, out_dir: Path) -> list[PhaseResult]:
    """Every phase of the plan under one deadline; the model ends with the best weights of the run (or the
    last, with `keep_weights="last"`)."""
    deadline = Deadline(config.run.budget_s)
    signature = cfg.resume_signature(config)
    results: list[PhaseResult] = []
    best = None
    for phase in plan.phases:
        with runtime.scope():
            phase.compile(plan.model)
        result = fit_phase(plan.model, plan.train, plan.val, name=phase.name, epochs=phase.epochs, out_dir=out_dir,
                           monitor=hooks.info.monitor, mode="max", patience=config.training.patience,
                           deadline=deadline, schedule=phase.schedule, best=best,
                           keep=config.training.keep_weights, signature=signature, callbacks=phase.callbacks)
        results.append(result)
        if np.isfinite(result.best_value) and (best is None or result.best_value > best):
            best = result.best_value
    return results


# --- members: several models trained with different seeds, averaged ----------------------------------------


class MemberAverage:
    """The members' mean prediction as one model: TTA views, test chunks and the probabilities file then
    treat an in-run ensemble exactly as a single model. `members` are the trained models."""

    def __init__(self, members: list):
        self.members = members
        self.name = f"average of {len(members)} {members[0].name}"

    def predict(self, x, batch_size=None, verbose=0) -> np.ndarray:
        total = 0.0
        for model in self.members:
            total = total + np.asarray(model.predict(x, batch_size=batch_size, verbose=verbose), np.float32)
        return total / len(self.members)


@dataclass
class Trained:
    """What training leaves: the first member's plan (its model the members' average when there are several),
    every member's phases, the model files and folders relative to the run folder, and per-member records."""

    plan: TrainingPlan
    phases: list[PhaseResult]
    model_files: tuple[str, ...]
    folders: tuple[str, ...]
    records: list[dict]


def budget_shares(budget_s: float | None, count: int,
                  clock: Callable[[], float] = time.monotonic) -> Iterator[tuple[int, float | None]]:
    """(index, seconds) for `count` parts trained one after another within one budget (members, folds): each
    part gets an equal share of the time left when it starts, at least a second (None without a budget), so a
    part that stops early or was already done leaves its time to the others. `clock` counts the time spent:
    the wall clock for members, the folds' training seconds for folds (their predictions aside)."""
    deadline = Deadline(budget_s, clock=clock)
    for index in range(count):
        yield index, None if budget_s is None else round(max(deadline.remaining() / (count - index), 1.0), 1)


def member_config(config, index: int, budget_s: float | None):
    """Member `index` of several: seed + index, its share of the budget, and `members=1`, so its folder's
    resume signature does not depend on how many members the run has."""
    return cfg.derive(config, seed=config.training.seed + index, budget_s=budget_s, members=1)


def train_members(hooks: TaskHooks, config, runtime, data: RunData, out_dir: Path) -> Trained:
    """Train `training.members` models into `out_dir` (one) or `out_dir/member_<k>/` (several, each resumable
    on its own), with the run's split and time budget: each member gets an equal share of the time left."""
    count = config.training.members
    plans, phases, records, folders = [], [], [], []
    for index, share in budget_shares(config.run.budget_s, count):
        folder = f"member_{index}" if count > 1 else ""
        settings = member_config(config, index, share) if count > 1 else config
        if count > 1:
            rt.set_seed(settings.training.seed)
        plan = hooks.plan(settings, runtime, data)
        rt.log(f"{hooks.info.name}: {plan.model.name}{f' ({folder})' if folder else ''}, "
               f"{plan.model_info['params']:,} parameters")
        started = time.monotonic()
        member_phases = train(hooks, settings, plan, runtime, out_dir / folder)
        if not (out_dir / folder / MODEL_FILE).exists():
            plan.model.save(out_dir / folder / MODEL_FILE)
        plans.append(plan)
        phases += member_phases
        folders.append(folder)
        if count > 1:
            records.append({"folder": folder, "seed": settings.training.seed, "budget_s": settings.run.budget_s,
                            "seconds": round(time.monotonic() - started, 2),
                            "phases": [phase.summary() for phase in member_phases], "details": plan.details()})
        plan.train = plan.val = None  # the batches (augmented copies of the training set) are not needed again
    plan = plans[0] if count == 1 else dataclasses.replace(plans[0], model=MemberAverage([p.model for p in plans]))
    return Trained(plan, phases, tuple(str(Path(f) / MODEL_FILE) for f in folders), tuple(folders), records)


# --- folds: K runs on the K folds of one partition, then their ensemble ------------------------------------


def run_folds(task: str, data: Path | None, out_dir: Path, profile: str, *, overrides=None,
              provenance: dict | None = None) -> dict:
    """Train fold k of `data.folds` into `out_dir/fold_<k>/` for every k, one after another (each an ordinary
    run, resumable on its own; a fold already finished with the same settings is not trained again), each with
    an equal share of the training time left (`budget_shares`, as members: `budget_s` is the folds' training
    time together, their predictions aside); then their ensemble into `out_dir`: the
    averaged test probabilities, post-processing chosen on the out-of-fold predictions, the OOF score under
    `oof` of metrics.json. With `members=M` every fold trains M members. Returns the metrics dict."""
    from an2dl_kit.files import write_json
    from an2dl_kit.inference.ensemble import combine
    from an2dl_kit.tasks import resolve_config

    started = time.monotonic()
    hooks, config = hooks_for(task), resolve_config(task, profile, overrides)
    out_dir, count = Path(out_dir), config.data.folds
    folds: list[dict] = []
    trained = [0.0]  # training seconds (metrics.json's) of the folds trained in this call: the budget they share
    for index, share in budget_shares(config.run.budget_s, count, clock=lambda: trained[0]):
        settings = {**_overrides_dict(overrides), "fold": index, **({} if share is None else {"budget_s": share})}
        folder = out_dir / f"fold_{index}"
        done = finished_run(folder, resolve_config(task, profile, settings))
        rt.log(f"{task}: fold {index} of {count} in {folder}: " + ("already done" if done else
                                                                     f"budget {share} s" if share else "no budget"))
        folds.append(done or run(task, data, folder, profile, overrides=settings, provenance=provenance))
        trained[0] += 0.0 if done else folds[-1]["seconds"]["training"]
    ensemble = combine(task, [out_dir / f"fold_{k}" for k in range(count)], out_dir, "uniform", data)
    metrics = fold_set_record(hooks, config, profile=profile, overrides=overrides, provenance=provenance,
                              folds=folds, ensemble=ensemble, seconds=time.monotonic() - started)
    write_json(out_dir / METRICS_JSON, metrics)
    rt.log(f"{task}: {count} folds and their ensemble done in {metrics['seconds']['total']:.0f} s")
    return metrics


def finished_run(folder: Path, config) -> dict | None:
    """The metrics.json of a run finished in `folder` with `config` (its `run` settings aside, which change no
    result), every file it lists still there; else None."""
    import json

    try:
        saved = json.loads((folder / METRICS_JSON).read_text())
    except (OSError, ValueError):
        return None
    wanted = {group: value for group, value in cfg.as_dict(config).items() if group != "run"}
    same = {group: value for group, value in (saved.get("config") or {}).items() if group != "run"} == wanted
    return saved if same and all((folder / name).exists() for name in saved.get("files", [])) else None


def fold_set_record(hooks: TaskHooks, config, *, profile: str, overrides, provenance: dict | None,
                    folds: list[dict], ensemble: dict, seconds: float) -> dict:
    """metrics.json of a fold set (`METRICS_KEYS`): `validation` and `validation_tta` are out-of-fold scores
    without and with the configured views (pooled from the folds' confusion matrices), `oof` the ensemble's OOF
    record of the submitted predictions with each fold's views and test score, `test_tta` the fold ensemble's
    test scores; `test` stays null (no identity-view probabilities are kept)."""
    from an2dl_kit.inference.ensemble import fold_set_fields
    from an2dl_kit.metrics import CONFUSION_SCORERS

    task, score, first = hooks.info.name, hooks.info.score, folds[0]
    pooled = {key: CONFUSION_SCORERS[task](sum(np.asarray(f[key]["confusion_matrix"]) for f in folds))
              for key in ("validation", "validation_tta")}
    shared = fold_set_fields(folds, ensemble)
    values = {
        **shared, "schema": SCHEMA_VERSION, "task": task, "profile": profile,
        "overrides": _overrides_dict(overrides), "config": cfg.as_dict(config), "provenance": provenance or {},
        "runtime": first["runtime"], "versions": first["versions"], "machine": _machine(),
        "cleaning": first["cleaning"], "model": first["model"], **pooled,
        "tta": {**shared["tta"], "gain": pooled["validation_tta"][score] - pooled["validation"][score]},
        "seconds": {**shared["seconds"], "total": round(seconds, 2)}, "files": [*ensemble["files"], METRICS_JSON],
    }
    assert set(values) == set(METRICS_KEYS)
    return {key: values[key] for key in METRICS_KEYS}


# --- prediction ------------------------------------------------------------------------------------------


def predict_views(model, x: np.ndarray, views: tuple[str, ...], dense: bool, batch_size: int,
                  adapt: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """(identity-view probabilities, mean probabilities over `views`) in one pass over the views, with the
    BatchNorm statistics `adapt` says (`inference.adapt`; "set" re-estimates them on `x`)."""
    from an2dl_kit.inference.adapt import adapted
    from an2dl_kit.inference.tta import predict_tta

    total, identity = None, None
    with adapted(model, adapt, x):
        for view in views:
            probs = predict_tta(model, x, (view,), batch_size=batch_size, dense=dense)
            identity = probs if view == "identity" else identity
            total = probs if total is None else total + probs
        if identity is None:
            identity = predict_tta(model, x, ("identity",), batch_size=batch_size, dense=dense)
    return identity, total / len(views)


def choose_views(score: str, views: tuple[str, ...], selection: dict) -> tuple[str, ...]:
    """The configured views, unless they lower the score on the `selection` images (`selection_scores`; empty
    when there is nothing to decide): then identity."""
    if selection and selection["views"] < selection["identity"]:
        rt.log(f"TTA views {', '.join(views)} lower {score} on {selection['images']} ({selection['identity']:.4f}"
               f" -> {selection['views']:.4f}): predicting without them")
        return ("identity",)
    return views


def selection_scores(hooks: TaskHooks, config, plan: TrainingPlan, data: RunData, views: tuple[str, ...],
                     probabilities: tuple[np.ndarray, np.ndarray], scores: tuple[dict, dict]) -> dict:
    """The task's score without and with `views` on the images the TTA decision sees: the validation set, whose
    (identity, mean) `probabilities` and `scores` are already known, joined by `TaskHooks.shifted_validation`
    where the task has one. Empty without `tta_select` or other views than identity."""
    if not config.inference.tta_select or views == ("identity",):
        return {}
    score = hooks.info.score
    plain, merged = (scored[score] for scored in scores)
    described = f"{len(data.y_val)} validation images"
    shifted = hooks.shifted_validation(config, data, np.random.default_rng([config.training.seed,
                                                                            SHIFTED_VALIDATION_STREAM]))
    if shifted is not None:
        x, y, what = shifted
        truth = np.concatenate([data.y_val, y])
        on_copies = predict_views(plan.model, x, views, hooks.dense, plan.batch_size, config.inference.bn_adapt)
        pooled = [np.concatenate([clean, copy]) for clean, copy in zip(probabilities, on_copies, strict=True)]
        plain, merged = (hooks.scores(truth, hooks.to_labels(probs, config, {}))[score] for probs in pooled)
        described += f" + {what}"
    return {"images": described, "identity": plain, "views": merged}


def validation_views(hooks: TaskHooks, config, plan: TrainingPlan, data: RunData,
                     views: tuple[str, ...]) -> tuple[np.ndarray, np.ndarray, list[dict]]:
    """(identity, mean over `views`) validation probabilities, and with a `MemberAverage` each member's
    validation scores without and with the views, taken from the same predictions (none are repeated)."""
    members, adapt = getattr(plan.model, "members", None), config.inference.bn_adapt
    if members is None:
        return (*predict_views(plan.model, data.x_val, views, hooks.dense, plan.batch_size, adapt), [])
    identity, mean, records = 0.0, 0.0, []
    for model in members:
        plain, merged = predict_views(model, data.x_val, views, hooks.dense, plan.batch_size, adapt)
        records.append({key: hooks.scores(data.y_val, hooks.to_labels(probs, config, {}))
                        for key, probs in (("validation", plain), ("validation_tta", merged))})
        identity, mean = identity + plain / len(members), mean + merged / len(members)
    return identity, mean, records


def evaluate(hooks: TaskHooks, config, plan: TrainingPlan, data: RunData, sink=None) -> Results:
    """Validation with and without TTA, the views and post-processing chosen on validation, then the test set
    in chunks (never all of its probability maps in memory at once); `sink` (a `probabilities.Writer`)
    receives the submitted probabilities of each test chunk. With `bn_adapt`, each set predicted (validation,
    its shifted copies, the whole test set) gets BatchNorm statistics of its own (`inference.adapt`)."""
    from an2dl_kit.inference.adapt import adapted, describe
    from an2dl_kit.inference.tta import resolve_views

    configured = resolve_views(config.inference.tta)
    rt.log(f"{hooks.info.name}: predicting with TTA views {', '.join(configured)}; "
           f"{describe(plan.model, config.inference.bn_adapt)}")
    identity, mean, members = validation_views(hooks, config, plan, data, configured)
    validation = hooks.scores(data.y_val, hooks.to_labels(identity, config, {}))
    validation_tta = hooks.scores(data.y_val, hooks.to_labels(mean, config, {}))
    selection = selection_scores(hooks, config, plan, data, configured, (identity, mean),
                                 (validation, validation_tta))
    views = choose_views(hooks.info.score, configured, selection)
    merged = mean if views == configured else identity
    chosen_scores = validation_tta if views == configured else validation
    postprocess = hooks.choose_postprocess(config, data.y_val, merged, chosen_scores)
    results = Results(validation, validation_tta, views, hooks.to_labels(merged, config, postprocess),
                      postprocess=postprocess, selection=selection, members=members, val_probs=merged)
    if data.x_test is None:
        return results
    plain, submitted = [], []
    with adapted(plan.model, config.inference.bn_adapt, data.x_test):  # the whole test set, not each chunk
        for start in range(0, len(data.x_test), PREDICT_CHUNK):
            identity, mean = predict_views(plan.model, data.x_test[start:start + PREDICT_CHUNK], views,
                                           hooks.dense, plan.batch_size)
            if sink is not None:
                sink.write(mean)
            plain.append(hooks.to_labels(identity, config, postprocess))
            submitted.append(hooks.to_labels(mean, config, postprocess))
    results.test_labels = np.concatenate(submitted)
    if data.y_test is not None:
        results.test = hooks.scores(data.y_test, np.concatenate(plain))
        results.test_tta = hooks.scores(data.y_test, results.test_labels)
    return results


def evaluate_and_keep(hooks: TaskHooks, config, trained: Trained, data: RunData, out_dir: Path) -> Results:
    """`evaluate`, streaming the submitted test probabilities into `test_probs.npz`, then the validation
    probabilities of the same views, with their indices and labels, into `val_probs.npz`; both with what an
    ensemble needs to weigh and check them: the validation score of the submitted predictions, views, model
    files, the split's record and the inference settings (fold ensembles choose post-processing with them)."""
    from an2dl_kit.inference.probabilities import writer

    kept = {"model_files": trained.model_files, "batch_size": trained.plan.batch_size}
    encoding = encoding_for(hooks.info, hooks.dense)
    shape = {"task": hooks.info.name, "encoding": encoding, "item_shape": hooks.info.label_shape}
    if data.x_test is None:
        results = dataclasses.replace(evaluate(hooks, config, trained.plan, data), **kept)
    else:
        with writer(out_dir / PROBS_FILE, rows=len(data.x_test), test_fingerprint=data.test_fingerprint,
                    **shape) as sink:
            results = dataclasses.replace(evaluate(hooks, config, trained.plan, data, sink=sink), **kept)
            sink.meta.update(kept_meta(hooks, config, data, results))
    with writer(out_dir / VAL_PROBS_FILE, rows=len(data.y_val), index=data.val_index, labels=data.y_val,
                **shape) as sink:
        sink.write(results.val_probs)
        sink.meta.update(kept_meta(hooks, config, data, results))
    return results


def kept_meta(hooks: TaskHooks, config, data: RunData, results: Results) -> dict:
    """What both probability files record of the run beyond the probabilities."""
    chosen = results.validation if results.views == ("identity",) else results.validation_tta
    return {"score": hooks.info.score, "validation": chosen[hooks.info.score], "views": list(results.views),
            "models": list(results.model_files), "split": data.split,
            "inference": cfg.as_dict(config)["inference"], "batch_size": results.batch_size}


# --- records and summaries ---------------------------------------------------------------------------------


def metrics_record(hooks: TaskHooks, config, *, profile: str, overrides, provenance: dict | None, runtime,
                   data: RunData, plan: TrainingPlan, phases: list[PhaseResult], results: Results,
                   files: list[str], seconds: dict, members: Sequence[dict] = ()) -> dict:
    """metrics.json: the same keys (`METRICS_KEYS`) for every task; task-specific extras go under "details".
    `members` (several members only) are the training records that `results.members` scores complete."""
    from an2dl_kit.inference.tta import resolve_views

    score = hooks.info.score
    record = {
        "schema": SCHEMA_VERSION, "task": hooks.info.name, "profile": profile,
        "overrides": _overrides_dict(overrides), "config": cfg.as_dict(config), "provenance": provenance or {},
        "runtime": runtime.as_dict(), "versions": rt.library_versions(), "machine": _machine(),
        "samples": data.samples(), "cleaning": data.cleaning, "split": data.split, "model": plan.model_info,
        "phases": [phase.summary() for phase in phases],
        "validation": results.validation, "validation_tta": results.validation_tta,
        "tta": {"configured": list(resolve_views(config.inference.tta)), "views": list(results.views),
                "gain": results.validation_tta[score] - results.validation[score], "selection": results.selection},
        "postprocess": results.postprocess, "test": results.test, "test_tta": results.test_tta,
        "members": [{**record, **scores} for record, scores in zip(members, results.members, strict=True)],
        "oof": None, "details": plan.details(), "seconds": {k: round(v, 2) for k, v in seconds.items()}, "files": files,
    }
    assert tuple(record) == METRICS_KEYS
    return record


def _machine() -> dict:
    load = dict(zip(("1min", "5min", "15min"), np.round(os.getloadavg(), 2).tolist(), strict=True))
    return {"cpu_count": os.cpu_count(), "load_average": load}


def _overrides_dict(overrides) -> dict:
    if overrides is None:
        return {}
    values = dict(overrides) if isinstance(overrides, Mapping) else cfg.parse_assignments(overrides)
    return {k: v for k, v in values.items() if v is not None}


def summary_lines(hooks: TaskHooks, metrics: dict) -> list[str]:
    """What `an2dl train` prints: validation with and without TTA (out of fold for a fold set, with the OOF
    line), the gain, test scores when known."""
    folded = metrics.get("oof") is not None
    name = "OOF" if folded else "validation"
    lines = [hooks.score_line(name, metrics["validation"]),
             hooks.score_line(f"{name}+TTA", metrics["validation_tta"]),
             f"TTA gain {metrics['tta']['gain']:+.4f} ({len(metrics['tta']['configured'])} views); "
             f"submitted with {', '.join(metrics['tta']['views'])}" + _selection_text(metrics["tta"]["selection"])
             + "".join(f"; {k} {v:.4g}" for k, v in metrics["postprocess"].items())]
    if folded:
        from an2dl_kit.inference.ensemble import oof_line

        lines.append(oof_line(metrics["oof"]))
    labels = {"test": "test", "test_tta": "ensemble test" if folded else "test+TTA"}
    return lines + [hooks.score_line(label, metrics[key]) for key, label in labels.items()
                    if metrics.get(key) is not None]


def _selection_text(selection: dict) -> str:
    if not selection:
        return ""
    return f", chosen on {selection['images']} ({selection['identity']:.4f} -> {selection['views']:.4f})"


def compare(task: str, data: Path | None, out_dir: Path, profile: str,
            variants: Mapping[str, Mapping[str, Any] | list[str]]) -> tuple[Path, Path]:
    """Train one run per named override set (same profile, budget and seed) into `out_dir/<name>/`, then write
    `out_dir/compare_<task>.md` and `.csv`: validation scores (with TTA, per class), the plain headline score,
    the test score when known, epochs, training time and parameters."""
    from an2dl_kit.files import write_table
    from an2dl_kit.tasks import resolve_config

    for overrides in variants.values():
        resolve_config(task, profile, overrides)  # every variant is checked before the first one trains
    hooks, rows = hooks_for(task), []
    score = hooks.info.score
    for name, overrides in variants.items():
        metrics = run(task, data, Path(out_dir) / name.replace("+", "_"), profile, overrides=overrides)
        row = {"variant": name, f"plain_{score}": metrics["validation"][score]}
        for key, value in metrics["validation_tta"].items():  # scalars and per-class dicts; not the matrix
            if isinstance(value, dict):
                row.update({f"{key}_{k}".replace(" ", "_"): v for k, v in value.items()})
            elif np.ndim(value) == 0:
                row[key] = value
        if metrics["test_tta"] is not None:
            row[f"test_{score}_tta"] = metrics["test_tta"][score]
        row.update(epochs=sum(p["epochs_run"] for p in metrics["phases"]), params=metrics["model"]["params"],
                   train_seconds=metrics["seconds"]["training"])
        rows.append(row)
    return write_table(rows, Path(out_dir) / f"compare_{task}")


# --- command line ------------------------------------------------------------------------------------------


def cli_overrides(args) -> list[str]:
    """`--set FIELD=VALUE` options plus the shortcut flags (`--budget`, `--seed`, `--backbone`...)."""
    shortcuts = {"budget_s": "budget", "seed": "seed", "backbone": "backbone", "weights": "weights", "loss": "loss"}
    values = [f"{field}={getattr(args, flag)}" for field, flag in shortcuts.items()
              if getattr(args, flag, None) is not None]
    return values + list(getattr(args, "set", None) or [])


def train_cli(args) -> int:
    """`an2dl train TASK --data DIR --out DIR --profile P [--set FIELD=VALUE ...]`."""
    metrics = run(args.task, args.data, args.out, args.profile, overrides=cli_overrides(args))
    for line in summary_lines(hooks_for(args.task), metrics):
        print(line)
    print(f"wrote to {args.out}: {', '.join(metrics['files'])}")
    return 0


def compare_variants(args) -> dict[str, list[str]]:
    """Named override lists from `--vary FIELD=A,B,...` (or the `--backbones` / `--losses` shortcuts), each
    with the shared `--set` and shortcut overrides."""
    from an2dl_kit.errors import KitError
    from an2dl_kit.registries import BACKBONES

    vary = args.vary or (f"backbone={args.backbones}" if getattr(args, "backbones", None) else None) \
        or (f"loss={args.losses}" if getattr(args, "losses", None) else None)
    field, sep, values = (vary or "").partition("=")
    names = [v.strip() for v in values.split(",") if v.strip()]
    if not sep or not names:
        raise KitError("compare: give the values to compare, e.g. --vary loss=cce,dice or --backbones a,b")
    common = cli_overrides(args)
    variants = {}
    for name in names:
        extra = []
        if field.strip() == "backbone" and not BACKBONES[name].imagenet:
            extra = ["weights=none"]  # a backbone without published ImageNet weights trains from scratch
        variants[name] = common + extra + [f"{field.strip()}={name}"]
    return variants


def compare_cli(args) -> int:
    """`an2dl compare TASK --vary FIELD=A,B,... --profile P [--set ...]`: one run per value, one table."""
    md, csv = compare(args.task, args.data, args.out, args.profile, compare_variants(args))
    print(md.read_text(), end="")
    print(f"wrote {md} and {csv}")
    return 0
