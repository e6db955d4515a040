"""Results as data: one JSON record per benchmark run, under `docs/results/records/`.

A record says what was run and where (the command, the kit commit, the date, the machine's cores and load),
with which settings, and what it measured: per-seed figures (`kind: "seeds"`, one entry of `runs` per model
and seed, `columns` naming the figures the tables show) or a finished table (`kind: "table"`: `columns` and
`rows` of cells, as the speed benchmark prints them). The tables in `docs/results/*.md`, `docs/hardware.md`
and the README's headline are generated from the records (`python -m bench.results`, `make results`), so
every figure there can be traced to a run.

A benchmark writes its record with `write_record` when run with `--record`. A record transcribed from an
earlier README, whose runs predate records, says so in `transcribed` (where from, and what was known). Each
record carries the sha256 of its own content, so a figure edited by hand is refused on loading instead of
reaching the docs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import re
import shlex
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RECORDS_DIR = REPO / "docs" / "results" / "records"
SCHEMA = 1
KINDS = ("seeds", "table")
REQUIRED = ("schema", "benchmark", "title", "command", "commit", "date", "machine", "settings", "kind",
            "columns", "transcribed", "sha256")
DIGEST_KEY = "sha256"
# `new_record`'s default for the commit: the checkout's HEAD now (a transcription passes the one it knows, or None).
HEAD = "HEAD"


class RecordError(ValueError):
    """A record that cannot be used: the message names the file and the problem in one line."""


def column(key: str, header: str | None = None, fmt: str = ".4f") -> dict:
    """A figure a seeds record's tables show: its key in each run, its header, its number format."""
    return {"key": key, "header": header or key, "format": fmt}


def digest(record: Mapping[str, Any]) -> str:
    """sha256 of the record's canonical JSON, its own digest left out."""
    body = {key: value for key, value in record.items() if key != DIGEST_KEY}
    return hashlib.sha256(json.dumps(body, sort_keys=True, ensure_ascii=False).encode()).hexdigest()


def machine() -> dict:
    """The cores and load average of this machine now (a shared machine's load moves its wall clocks)."""
    load = dict(zip(("1min", "5min", "15min"), (round(x, 2) for x in os.getloadavg()), strict=True))
    return {"cpu_count": os.cpu_count(), "load_average": load}


def kit_commit() -> tuple[str | None, bool]:
    """(HEAD commit, whether the kit differs from it): the kit a benchmark measured."""
    from an2dl_kit.kaggle.provenance import git_state

    return git_state(REPO)


def command_line(argv: Sequence[str] | None = None, module: str | None = None) -> str:
    """The command that ran, as a person would retype it: `python -m bench.<part> ARGS`."""
    args = list(sys.argv[1:] if argv is None else argv)
    return " ".join(["python", "-m", module] if module else [Path(sys.argv[0]).name]) + \
        "".join(" " + shlex.quote(arg) for arg in args)


def new_record(benchmark: str, *, title: str, command: str, settings: Mapping[str, Any], kind: str,
               columns: Sequence[Any], runs: Sequence[Mapping] = (), rows: Sequence[Sequence[str]] = (),
               notes: str = "", transcribed: Mapping[str, Any] | None = None, commit: str | None = HEAD,
               dirty: bool | None = None, date: str | None = None, machine_info: Mapping | None = None) -> dict:
    """A record of this run (commit, date and machine measured now unless given, as a transcription does).

    Args:
        benchmark: the module that measured it, e.g. "bench.cells_robustness".
        title: what the figures are, in a few words.
        command: the command line that produced them.
        settings: what the run was configured with (profile, budget, overrides...).
        kind: "seeds" (`runs`: one mapping per model and seed) or "table" (`rows` of cells).
        columns: "seeds": `column(...)` entries naming the figures; "table": the header cells.
        notes: one paragraph a reader of the table needs (what a figure means, what was unusual).
        transcribed: for a record written from an earlier document instead of by the benchmark: where from.
        commit: the kit commit measured: HEAD (this checkout's, with its dirty flag), a commit, or None when a
            transcribed run did not record it.
    """
    if commit == HEAD:
        commit, dirty = kit_commit()
    record = {
        "schema": SCHEMA, "benchmark": benchmark, "title": title, "command": command, "commit": commit,
        "dirty": bool(dirty), "date": date or dt.date.today().isoformat(),
        "machine": dict(machine_info) if machine_info is not None else machine(), "settings": dict(settings),
        "kind": kind, "columns": list(columns), "runs": [dict(run) for run in runs],
        "rows": [list(row) for row in rows], "notes": notes,
        "transcribed": dict(transcribed) if transcribed else None,
    }
    record[DIGEST_KEY] = digest(record)
    check(record, "the new record")
    return record


def record_name(record: Mapping[str, Any], label: str = "") -> str:
    """`<date>-<benchmark>[-<label>]-<commit7>.json`: sorted by date, unique per run of a benchmark."""
    part = record["benchmark"].rpartition(".")[2].replace("_", "-")
    label = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")
    commit = record["commit"][:7] if record["commit"] else "unrecorded"
    return f"{record['date']}-{part}{'-' + label if label else ''}-{commit}.json"


def write_record(record: Mapping[str, Any], label: str = "", folder: Path = RECORDS_DIR) -> Path:
    """Write `record` under `folder` (atomic; never over another record) and return its path."""
    from an2dl_kit.files import write_text

    path = Path(folder) / record_name(record, label)
    if path.exists():
        stem, index = path.stem, 2
        while path.exists():
            path, index = path.with_name(f"{stem}-{index}.json"), index + 1
    write_text(path, json.dumps(record, indent=1, ensure_ascii=False) + "\n")
    return path


def check(record: Mapping[str, Any], where: str) -> None:
    """Raise `RecordError` naming `where` if the record lacks a key, has an unknown kind or schema, holds a
    run without the figures its columns name, or no longer matches its digest (edited by hand)."""
    missing = [key for key in REQUIRED if key not in record]
    if missing:
        raise RecordError(f"{where}: not a results record (missing {', '.join(missing)})")
    if record["schema"] != SCHEMA:
        raise RecordError(f"{where}: record schema {record['schema']!r}; this kit reads schema {SCHEMA}")
    if record["kind"] not in KINDS:
        raise RecordError(f"{where}: kind {record['kind']!r}; choose one of {', '.join(KINDS)}")
    if record["kind"] == "seeds":
        keys = [col["key"] for col in record["columns"]]
        for index, run in enumerate(record["runs"]):
            absent = [key for key in keys if key not in run]
            if absent:
                raise RecordError(f"{where}: run {index} lacks {', '.join(absent)}")
    else:
        width = len(record["columns"])
        for index, row in enumerate(record["rows"]):
            if len(row) != width:
                raise RecordError(f"{where}: row {index} has {len(row)} cells for {width} columns")
    if record[DIGEST_KEY] != digest(record):
        raise RecordError(f"{where}: content does not match its sha256 (edited by hand?); records are written "
                          "by the benchmarks (--record), never edited")


def load_record(path: Path) -> dict:
    """One record, checked (`check`)."""
    try:
        record = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise RecordError(f"{path}: cannot read a results record ({error})") from None
    if not isinstance(record, dict):
        raise RecordError(f"{path}: not a results record (a JSON object is expected)")
    check(record, str(path))
    return record


def load_records(folder: Path = RECORDS_DIR) -> dict[str, dict]:
    """Every record under `folder`, by file stem, in name (date) order."""
    return {path.stem: load_record(path) for path in sorted(Path(folder).glob("*.json"))}


def add_record_option(parser) -> None:
    """`--record [LABEL]`: a benchmark's option to write its results record (LABEL names the file)."""
    parser.add_argument("--record", nargs="?", const="", default=None, metavar="LABEL",
                        help="also write the figures as a results record under docs/results/records/")


def save_record(args, record: Mapping[str, Any]) -> Path | None:
    """Write `record` when the command line asked for it (`--record`); print where."""
    if getattr(args, "record", None) is None:
        return None
    path = write_record(record, args.record)
    print(f"[bench] record: {path.relative_to(REPO) if path.is_relative_to(REPO) else path}", file=sys.stderr)
    return path
