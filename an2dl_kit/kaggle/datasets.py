"""Data onto Kaggle: `an2dl upload-data` puts a task's input files into the private dataset its kernel reads.

The cells challenge was scored on Codabench, so its `training_set.npz` is on no Kaggle page: `upload-data`
creates `<username>/an2dl-<task>-data`, or a new version of it, through the official client, and `push`
attaches the recorded dataset whenever `<TASK>_DATASETS` is unset (`with_recorded_dataset`). In order:

1. Find the task's files under `--data` with the discovery `train` uses and read each with its loader: a bad
   file is the loader's one-line error, before any request. Only the task's input files are ever sent
   (`Inputs.files`); `test_labels.npz`, the known labels of the kit's stand-ins, never is.
2. Compare their sha256 with the last upload recorded for the dataset: unchanged files send nothing.
3. List what will be sent, with sizes, and stage it in `build/datasets/<task>/`: the metadata and one symbolic
   link per file, so nothing is copied and nothing else is in the folder the client uploads.
4. Create the dataset (private unless `--public`) or a new version. Kaggle's API cannot keep a file of the
   previous version, so a version carries every file again.
5. Poll with backoff until Kaggle says it is ready (`AN2DL_POLL_SECONDS`; `AN2DL_WAIT_TIMEOUT`, default 1 h).
6. Record ref, version, files, sizes, sha256 and time in `submissions/<task>/datasets.json` (a list, oldest
   first): once Kaggle accepts the upload, then again once it is ready, so an upload interrupted while Kaggle
   processes it is waited for, not sent again. A refused request records nothing.

TensorFlow-free.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from an2dl_kit.data.discover import find_inputs
from an2dl_kit.data.io import CellsData, MarsData, load_cells_test, load_cells_train, load_mars
from an2dl_kit.errors import KaggleError, KitError
from an2dl_kit.files import write_json
from an2dl_kit.kaggle.loop import POLL_FIRST_S, _env_float, sha256_file, wait_for
from an2dl_kit.kaggle.session import KaggleSession
from an2dl_kit.kaggle.settings import KernelConfig
from an2dl_kit.kaggle.variants import SUBMISSIONS_DIR
from an2dl_kit.task import CELLS, LABELS_FILE, MARS, TASKS

DATASETS_FILE = "datasets.json"
STAGING_DIR = Path("build/datasets")
METADATA_FILE = "dataset-metadata.json"  # the name the kaggle client reads and never uploads
LICENSE = "copyright-authors"  # the course's files belong to their authors; the kit only moves them
READY, FAILED = "ready", ("failed", "deleted")  # the client's names of the terminal statuses
ACCEPTED = "accepted"  # recorded between Kaggle's acceptance and its `ready`
DATASET_WAIT_S = 3600.0
# Every input file of every task, and the loader `train` reads it with.
LOADERS = {CELLS.train_file: load_cells_train, CELLS.test_file: load_cells_test, MARS.train_file: load_mars}


@dataclass(frozen=True)
class DataFile:
    """One input file as it will be sent (its name in the dataset is the name `train` looks for)."""

    name: str
    source: Path
    size: int
    sha256: str
    contents: str  # what the loader read, e.g. "1200 labelled images"

    def as_dict(self) -> dict:
        return {"name": self.name, "source": str(self.source), "size": self.size, "sha256": self.sha256}


def dataset_ref(task: str, username: str) -> str:
    return f"{username}/an2dl-{task}-data"


def records_path(task: str) -> Path:
    return SUBMISSIONS_DIR / task / DATASETS_FILE


def read_records(task: str) -> list[dict]:
    """Every recorded upload of the task's data, oldest first ([] before the first)."""
    path = records_path(task)
    if not path.is_file():
        return []
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise KitError(f"{path}: not readable JSON ({error})") from None
    if not isinstance(records, list) or not all(isinstance(r, dict) and r.get("ref") for r in records):
        raise KitError(f"{path}: expected a list of uploads, each with a `ref`")
    return records


def last_upload(task: str, ref: str | None = None) -> dict | None:
    """The newest recorded upload of the task's data (to `ref`, when given), or None."""
    matching = [r for r in read_records(task) if ref is None or r["ref"] == ref]
    return matching[-1] if matching else None


def _contents(loaded) -> str:
    if isinstance(loaded, MarsData):
        return f"{len(loaded)} labelled + {len(loaded.test)} test images"
    return f"{len(loaded)} {'labelled' if isinstance(loaded, CellsData) else 'test'} images"


def input_files(task: str, data: Path | None) -> list[DataFile]:
    """The task's input files under `data`, each read and checked by its loader (raises DataError)."""
    files = []
    for path in find_inputs(data).files(TASKS.check(task)):
        loaded = LOADERS[path.name](path)
        files.append(DataFile(path.name, path.resolve(), path.stat().st_size, sha256_file(path),
                              _contents(loaded)))
    return files


def _mib(size: int) -> str:
    return f"{size / 2**20:.1f} MiB"


def _describe(task: str, ref: str, files: list[DataFile]) -> list[str]:
    """What will be sent, with sizes, and the label files found beside it that will not."""
    lines = [f"{task} data for {ref}: {len(files)} file(s), {_mib(sum(f.size for f in files))}"]
    lines += [f"  send {f.name:<22} {_mib(f.size):>11}  {f.contents}  ({f.source})" for f in files]
    labels = sorted({f.source.parent / LABELS_FILE for f in files if (f.source.parent / LABELS_FILE).is_file()})
    lines += [f"  not sent: {path} (test labels never leave this machine)" for path in labels]
    return lines


def stage(task: str, ref: str, files: list[DataFile]) -> Path:
    """build/datasets/<task>/: dataset-metadata.json and a link per file, nothing else (the client sends every
    other file of the folder)."""
    folder = STAGING_DIR / task
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    write_json(folder / METADATA_FILE, {
        "title": f"AN2DL {task} data", "id": ref, "licenses": [{"name": LICENSE}],
        "description": f"Input files of the AN2DL 2024/25 {task} challenge, uploaded by an2dl-kit "
                       f"(`make upload-data TASK={task}`) for its kernels."})
    for item in files:
        try:
            (folder / item.name).symlink_to(item.source)
        except OSError as error:
            raise KitError(f"{folder / item.name}: cannot link to {item.source} ({error})") from None
    return folder


def _write_record(task: str, record: dict, index: int | None = None) -> int:
    """Append `record` (index None) or replace the record at `index`; return its index."""
    records = read_records(task)
    if index is None:
        records.append(record)
        index = len(records) - 1
    else:
        records[index] = record
    write_json(records_path(task), records)
    return index


def _send(session: KaggleSession, ref: str, folder: Path, files: list[DataFile], public: bool,
          last: dict | None) -> dict:
    """Create the dataset, or version it when Kaggle knows it (asked every time: a record here may outlive a
    dataset deleted on Kaggle, and a dataset may exist without one); return the new record."""
    if session.dataset_status(ref) is not None:
        before = {f["name"]: f["sha256"] for f in (last or {}).get("files", [])}
        changed = [f.name for f in files if before.get(f.name) != f.sha256]
        changed += [f"{name} (removed)" for name in sorted(set(before) - {f.name for f in files})]
        if public:
            print(f"note: {ref} exists; PUBLIC applies at creation only (change it on the dataset's settings page)")
        print(f"sending a new version of {ref} (changed: {', '.join(changed)}) ...", flush=True)
        url = session.create_dataset_version(folder, ref, f"an2dl-kit upload-data: {', '.join(changed)}")
    else:
        print(f"creating {'public' if public else 'private'} dataset {ref} ...", flush=True)
        url = session.create_dataset(folder, ref, public)
    return {"ref": ref, "url": url, "version": None, "status": ACCEPTED, "private": None,
            "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "files": [f.as_dict() for f in files]}


def _await_ready(session: KaggleSession, task: str, record: dict, index: int, public: bool) -> int:
    """Poll until Kaggle says ready (record version and visibility) or failed (record it, raise); a public
    dataset without `public` is an error, after the record (the upload itself went through)."""
    ref = record["ref"]
    status, _, _ = wait_for(
        lambda: (session.dataset_status(ref) or "not listed yet", None), what=ref,
        first_s=_env_float("AN2DL_POLL_SECONDS", POLL_FIRST_S),
        timeout_s=_env_float("AN2DL_WAIT_TIMEOUT", DATASET_WAIT_S), terminal=(READY, *FAILED),
        again=f"`make upload-data TASK={task}` again", report=lambda line: print(line, flush=True))
    if status != READY:
        _write_record(task, {**record, "status": status}, index)
        raise KaggleError(f"{ref}: Kaggle reports the upload {status} ({record['url']}); "
                          f"`make upload-data TASK={task}` sends it again")
    version, private = session.dataset_info(ref)
    record = {**record, "status": READY, "version": version, "private": private}
    _write_record(task, record, index)
    print(f"{ref} version {version} is ready ({'private' if private else 'PUBLIC'}): {record['url']}")
    if not private and not public:
        raise KaggleError(f"{ref}: Kaggle lists the dataset as public, and PUBLIC=1 was not given; make it "
                          "private on the dataset's settings page")
    print(f"recorded in {records_path(task)}; next: make push-{task} (attaches it while "
          f"{task.upper()}_DATASETS is unset)")
    return 0


def upload_cli(args) -> int:
    """`an2dl upload-data --task T [--data DIR] [--public]`: see the module docstring."""
    task = TASKS.check(args.task)
    files = input_files(task, args.data)  # every file checked before any request
    session = KaggleSession.connect()
    ref = dataset_ref(task, session.username)
    last = last_upload(task, ref)
    if last is not None and {f["name"]: f["sha256"] for f in last.get("files", [])} == {
            f.name: f.sha256 for f in files}:
        if last.get("status") == READY:
            print(f"{ref}: unchanged since version {last['version']} ({last['time']}); nothing sent")
            return 0
        if last.get("status") == ACCEPTED:  # sent before and accepted, not yet seen ready: wait, send nothing
            print(f"{ref}: these files were sent at {last['time']}; waiting for Kaggle to finish processing them")
            return _await_ready(session, task, last, read_records(task).index(last), args.public)
    for line in _describe(task, ref, files):
        print(line)
    record = _send(session, ref, stage(task, ref, files), files, args.public, last)
    return _await_ready(session, task, record, _write_record(task, record), args.public)


def with_recorded_dataset(config: KernelConfig) -> KernelConfig:
    """`config` with the task's last uploaded dataset as its data source, when `<TASK>_DATASETS` is unset.

    The dataset replaces a competition source too: two copies of a file under /kaggle/input would be told
    apart by path order, not by intent, and a user who uploaded a cleaned copy means that one.
    """
    last = None if config.datasets else last_upload(config.task)
    if last is None:
        return config
    version = f" version {last['version']}" if last.get("version") else ""
    instead = f" in place of competition {config.competition}'s files" if config.competition else ""
    print(f"data: attaching {last['ref']}{version} ({records_path(config.task)}){instead}; "
          f"set {config.task.upper()}_DATASETS to choose others")
    if last.get("status") != READY:
        print(f"note: {last['ref']} was {last.get('status')} when last checked; `make upload-data "
              f"TASK={config.task}` finishes it")
    return dataclasses.replace(config, datasets=(last["ref"],), competition="")
