"""Read the folders a report is made of: runs, `compare` folders, ensembles, and the task's runs.csv.

Each folder given to `an2dl report` is one of:

- a run folder (`an2dl train --out`, `run-local`, a downloaded kernel output `submissions/<task>/[<name>/]v<N>/`):
  `metrics.json` at its top, of the schema `tasks/runner.py` writes (`METRICS_KEYS`). A fold run given on its
  own (`fold_<k>/` of a fold set, a downloaded `fold<k>` output) is such a run, named by its fold;
- a fold set: a `metrics.json` whose `oof` is not null, either `an2dl train --set folds=K --out DIR` (its folds
  in `DIR/fold_<k>/`) or `an2dl ensemble` over fold runs (`ensemble-folds`' `submissions/<task>/[<name>-]folds/
  v<M>/`; its folds where its `members` name them). It is one run of the report, scored by its `oof` record as
  runner and ensemble wrote it (nothing is recomputed here), and its fold runs are read with it (`Run.folds`);
- a `compare` folder: `compare_<task>.csv` and one run (or fold set) folder per variant (`an2dl compare`);
- an ensemble folder: `metrics.json` with `"kind": "ensemble"` and no `oof` (`an2dl ensemble`).

A record's kind picks its reader (`READERS`). Runs of another task, a folder without metrics.json, a schema this
kit does not know and a fold set whose fold runs are not where it says are one-line `KitError`s naming the
folder, raised before anything is written. Public leaderboard scores come from `submissions/<task>/runs.csv`
(`an2dl runs`), matched to downloaded kernel outputs and fold ensembles by variant and version.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from an2dl_kit.errors import KitError
from an2dl_kit.kaggle.variants import DEFAULT_NAME, SUBMISSIONS_DIR
from an2dl_kit.task import TASKS
from an2dl_kit.tasks.runner import METRICS_JSON, METRICS_KEYS, SCHEMA_VERSION

RUNS_CSV = "runs.csv"
VERSION_DIR = re.compile(r"v(\d+)")
FOLD_DIR = re.compile(r"fold_(\d+)")  # where `an2dl train --set folds=K` trains fold k (`runner.run_folds`)
ENSEMBLE_KEYS = ("schema", "task", "kind", "weights", "score", "members", "test")


@dataclass(frozen=True)
class Run:
    """One trained run or fold set: its folder, its name in the report, its metrics.json, where it came from,
    its public leaderboard score (None with `public_note` saying why) and, for a fold set, its fold runs
    present, in fold order."""

    folder: Path
    name: str
    metrics: dict
    source: str
    public: float | None = None
    public_note: str | None = None
    folds: tuple[Run, ...] = ()

    @property
    def score(self) -> str:
        return TASKS[self.metrics["task"]].score

    @property
    def oof(self) -> dict | None:
        """A fold set's out-of-fold record (`inference.ensemble.out_of_fold`, with each fold's views and test
        score); None for a run."""
        return self.metrics["oof"]

    @property
    def detail(self) -> Run:
        """The run whose data, model, curves and examples the report shows: the run itself, or a fold set's
        first fold present (the first, not the best: the curves shown are not picked for looking good)."""
        return self.folds[0] if self.folds else self

    def submitted_validation(self) -> float:
        """The validation score of the predictions the run submitted (with its TTA views, or without); a fold
        set's out-of-fold score."""
        if self.oof is not None:
            return self.oof["value"]
        chosen = "validation" if self.metrics["tta"]["views"] == ["identity"] else "validation_tta"
        return self.metrics[chosen][self.score]

    def file(self, name: str) -> Path | None:
        """A file of the run: at its top, else the first listed in metrics.json under that name (a member's)."""
        listed = [self.folder / f for f in self.metrics.get("files", []) if Path(f).name == name]
        for path in [self.folder / name] + listed:
            if path.is_file():
                return path
        return None


@dataclass(frozen=True)
class Ensemble:
    """An `an2dl ensemble` folder and its metrics record."""

    folder: Path
    name: str
    record: dict


@dataclass
class Collection:
    """Everything a report reads, in the order given."""

    task: str
    runs: list[Run] = field(default_factory=list)
    ensembles: list[Ensemble] = field(default_factory=list)
    runs_csv: Path | None = None

    def chosen(self, name: str | None = None) -> Run:
        """The run named `name` (its name or folder); by default the best public score where any run has
        one (what the team submits on), else the best submitted validation score."""
        if not self.runs:
            raise KitError("report: no run among the folders given (only ensembles); name a run folder too")
        if name is not None:
            for run in self.runs:
                if name in (run.name, str(run.folder)) or Path(name).resolve() == run.folder.resolve():
                    return run
            raise KitError(f"--chosen {name}: not one of the runs ({', '.join(r.name for r in self.runs)})")
        public = [run for run in self.runs if run.public is not None]
        if public:
            return max(public, key=lambda run: run.public)
        return max(self.runs, key=Run.submitted_validation)


def read_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise KitError(f"{path}: not readable as JSON ({error})") from None
    if not isinstance(record, dict):
        raise KitError(f"{path}: not a metrics record (a JSON object)")
    return record


def check_record(folder: Path, record: dict, task: str, keys: Sequence[str]) -> dict:
    """The record, if its schema is the one this kit reads, it has every key, and it is of `task`."""
    if record.get("schema") != SCHEMA_VERSION:
        raise KitError(f"{folder}: metrics.json schema {record.get('schema')!r} is unknown to this kit (it reads "
                       f"schema {SCHEMA_VERSION}); report it with the kit version that wrote it")
    missing = [key for key in keys if key not in record]
    if missing:
        raise KitError(f"{folder}: metrics.json lacks {', '.join(missing)}; not a run of this kit's schema "
                       f"{SCHEMA_VERSION}")
    if record["task"] != task:
        raise KitError(f"{folder}: a {record['task']} {record.get('kind', 'run')}, not {task}; "
                       f"report each task on its own (--task {record['task']})")
    return record


def kind_of(record: dict) -> str:
    """"folds" (a fold set: a local one or an ensemble of fold runs, both with `oof`), "ensemble" or "run"."""
    if record.get("oof"):
        return "folds"
    return "ensemble" if record.get("kind") == "ensemble" else "run"


def kernel_output(folder: Path, task: str) -> tuple[str, int] | None:
    """(variant, version) when `folder` is a downloaded kernel output under submissions/<task>/."""
    match = VERSION_DIR.fullmatch(folder.name)
    if match is None:
        return None
    parent = folder.resolve().parent
    if parent.name == task:
        return DEFAULT_NAME, int(match.group(1))
    return (parent.name, int(match.group(1))) if parent.parent.name == task else None


def run_name(folder: Path, task: str) -> str:
    """A downloaded kernel output by its variant and version ("fold1 v3"), a fold set's `fold_<k>` folder by its
    set and fold ("mars_folds fold 1"), any other folder by its name."""
    output = kernel_output(folder, task)
    if output:
        return f"{output[0]} v{output[1]}"
    fold = FOLD_DIR.fullmatch(folder.resolve().name)
    return f"{folder.resolve().parent.name} fold {fold.group(1)}" if fold else folder.resolve().name


def read_run(folder: Path, record: dict, collection: Collection, name: str | None = None,
             source: str = "run folder") -> None:
    task = collection.task
    check_record(folder, record, task, METRICS_KEYS)
    collection.runs.append(Run(folder, name or run_name(folder, task), record, source))


def read_ensemble(folder: Path, record: dict, collection: Collection) -> None:
    check_record(folder, record, collection.task, ENSEMBLE_KEYS)
    collection.ensembles.append(Ensemble(folder, folder.resolve().name, record))


def fold_folders(folder: Path, record: dict) -> list[tuple[int, Path]]:
    """(fold, run folder) of every fold present in a fold set: `fold_<k>/` beside a local fold set's
    metrics.json, the folders an ensemble's `members` name (as given to `an2dl ensemble`: relative to the
    folder it ran in)."""
    if record.get("kind") != "ensemble":
        return [(fold, folder / f"fold_{fold}") for fold in record["oof"]["present"]]
    runs = [(member["fold"], Path(member["run"])) for member in record["members"]]
    return sorted((fold, run.parent if run.suffix == ".npz" else run) for fold, run in runs)


def read_fold_runs(folder: Path, record: dict, task: str) -> tuple[Run, ...]:
    """The fold runs of a fold set, each checked as a run and as the fold of the set's partition it should be."""
    folds = []
    for fold, run in fold_folders(folder, record):
        if not (run / METRICS_JSON).is_file():
            raise KitError(f"{folder}: fold {fold} has no {run / METRICS_JSON}; a fold set is read with its "
                           "fold runs (an ensemble's as its metrics.json names them: run the report where "
                           "`an2dl ensemble` ran)")
        metrics = check_record(run, read_json(run / METRICS_JSON), task, METRICS_KEYS)
        split, partition = metrics["split"], record["oof"]["partition"]
        if split.get("fold") != fold or split.get("assignment_sha256") != partition["assignment_sha256"]:
            raise KitError(f"{run}: not fold {fold} of the partition {folder} was scored on (its split: fold "
                           f"{split.get('fold')}, assignment {str(split.get('assignment_sha256'))[:12]})")
        folds.append(Run(run, run_name(run, task), metrics, f"fold of {folder.resolve().name}"))
    return tuple(folds)


def fold_ensemble_metrics(record: dict, folds: Sequence[Run]) -> dict:
    """An `an2dl ensemble` of fold runs in the shape of the metrics.json `an2dl train --set folds=K` writes
    (`runner.fold_set_record`): what the folds share (settings without `fold`, model, cleaning, runtime,
    versions, provenance) from the first, and what a fold set takes from its folds and their ensemble
    (`fold_set_fields`), with the ensemble's `weights`. `validation` and `validation_tta` stay null: an ensemble
    keeps each fold's submitted predictions only, not its predictions without and with TTA."""
    from an2dl_kit.inference.ensemble import fold_set_fields

    first = folds[0].metrics
    config, shared = first["config"], fold_set_fields([fold.metrics for fold in folds], record)
    return {
        **first, **shared, "overrides": {k: v for k, v in first["overrides"].items() if k != "fold"},
        "config": {**config, "data": {**config["data"], "fold": None}},
        "validation": None, "validation_tta": None, "tta": {**shared["tta"], "gain": None},
        "files": record["files"], "weights": record["weights"]}


def read_folds(folder: Path, record: dict, collection: Collection, name: str | None = None,
               source: str | None = None) -> None:
    """A fold set, local (`an2dl train --set folds=K`) or an ensemble of fold runs, as one run with its folds."""
    task = collection.task
    ensembled = record.get("kind") == "ensemble"
    check_record(folder, record, task, ENSEMBLE_KEYS if ensembled else METRICS_KEYS)
    folds = read_fold_runs(folder, record, task)
    metrics = fold_ensemble_metrics(record, folds) if ensembled else record
    collection.runs.append(Run(folder, name or run_name(folder, task), metrics,
                               source or ("fold ensemble" if ensembled else "fold set"), folds=folds))


READERS: dict[str, Callable[[Path, dict, Collection], None]] = {
    "run": read_run, "ensemble": read_ensemble, "folds": read_folds}


def read_compare(folder: Path, table: Path, collection: Collection) -> None:
    """Every variant of an `an2dl compare` folder, in the order of its table."""
    with table.open(encoding="utf-8", newline="") as handle:
        variants = [row["variant"] for row in csv.DictReader(handle)]
    for variant in variants:
        run = folder / variant.replace("+", "_")
        if not (run / METRICS_JSON).is_file():
            raise KitError(f"{run}: no {METRICS_JSON} for variant {variant} of {table}")
        record = read_json(run / METRICS_JSON)
        reader = read_folds if kind_of(record) == "folds" else read_run  # a variant with folds=K is a fold set
        reader(run, record, collection, name=variant, source=f"compare {folder.name}")


def read_folder(folder: Path, collection: Collection) -> None:
    """Add one folder given on the command line to `collection`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise KitError(f"{folder}: no such folder")
    task = collection.task
    if (folder / METRICS_JSON).is_file():
        record = read_json(folder / METRICS_JSON)
        READERS[kind_of(record)](folder, record, collection)
        return
    tables = sorted(folder.glob("compare_*.csv"))
    if (folder / f"compare_{task}.csv").is_file():
        read_compare(folder, folder / f"compare_{task}.csv", collection)
    elif tables:
        other = tables[0].stem.removeprefix("compare_")
        raise KitError(f"{folder}: a compare of {other}, not {task}; report each task on its own (--task {other})")
    else:
        raise KitError(f"{folder}: no {METRICS_JSON}; name a run, compare or ensemble folder")


def read_runs_csv(path: Path) -> dict[tuple[str, int], dict]:
    """runs.csv rows by (variant, version)."""
    try:
        with path.open(encoding="utf-8", newline="") as handle:
            return {(row["name"], int(row["version"])): row for row in csv.DictReader(handle)}
    except (KeyError, ValueError) as error:
        raise KitError(f"{path}: not a table of `an2dl runs` ({error})") from None


def public_score(run: Run, task: str, rows: dict[tuple[str, int], dict] | None, runs_csv: Path) -> Run:
    """`run` with its public score from runs.csv, or the reason it has none."""
    from dataclasses import replace

    if not TASKS[task].competition:
        return replace(run, public_note=f"the {task} leaderboard is not on Kaggle; the kit records no public score")
    output = kernel_output(run.folder, task)
    if output is None:
        return replace(run, public_note="a local run, not a downloaded kernel output")
    if rows is None:
        return replace(run, public_note=f"no {runs_csv}; write it with `an2dl runs --task {task}`")
    row = rows.get(output)
    if row is None:
        return replace(run, public_note=f"not in {runs_csv}; refresh it with `an2dl runs --task {task}`")
    if row.get("submitted") != "yes":
        return replace(run, public_note="not submitted")
    if not row.get("public score"):
        return replace(run, public_note=f"submitted, no public score yet (`an2dl scores --task {task}`)")
    return replace(run, public=float(row["public score"]))


def unique_names(runs: list[Run]) -> list[Run]:
    """Runs that share a name (two compares with the same variants, `v1` of two variants...) get their parent
    folder's name after it: "cce (compare-a)"."""
    from collections import Counter
    from dataclasses import replace

    counts = Counter(run.name for run in runs)
    return [replace(run, name=f"{run.name} ({run.folder.parent.name})") if counts[run.name] > 1 else run
            for run in runs]


def collect(task: str, folders: Sequence[Path], runs_csv: Path | None = None) -> Collection:
    """Read every folder, then the task's runs.csv (default `submissions/<task>/runs.csv`) for public scores."""
    TASKS.check(task)
    if not folders:
        raise KitError("report: name at least one run, compare or ensemble folder")
    collection = Collection(task)
    given = {}
    for folder in map(Path, folders):
        given.setdefault(folder.resolve(), folder)  # each folder once, named as given
    for folder in given.values():
        read_folder(folder, collection)
    collection.runs = unique_names(collection.runs)
    path = Path(runs_csv) if runs_csv is not None else SUBMISSIONS_DIR / task / RUNS_CSV
    rows = read_runs_csv(path) if path.is_file() else None
    collection.runs = [public_score(run, task, rows, path) for run in collection.runs]
    collection.runs_csv = path if rows is not None else None
    return collection
