"""`python -m bench.results` (`make results`): the measured tables of the docs, generated from the records.

A Markdown file holds a generated table between two comments; the first names a view and its arguments:

    <!-- results: seeds 2026-12-03-cells-robustness-81d1c93 -->
    ...generated, never edited...
    <!-- /results -->

Views:
- `seeds RECORD`: one row per model and seed, then each model's mean ± standard deviation over its seeds;
- `summary [columns=KEY,KEY] RECORD...`: one row per model of each record (named by the model alone when the
  records share a title): its seeds' mean ± sd (per-seed values beside) and, where the record names a
  `reference` record in its settings, the reference's means;
- `table RECORD`: a record of kind "table" as it is;
- `breakdown PATH RECORD...`: a figure each run keeps per item (e.g. `per_corruption.medmnistc`), one row per
  item and one column per model: the mean over its seeds;
- `headline TASK:RECORD:COLUMN[,COLUMN]:LINK[:MODEL] ...`: the README's one row per task (the record's first
  model, or the one whose name `slug` gives MODEL).
Every table is followed by its provenance: the record, its command, commit, date and machine. `--check`
rewrites nothing and fails if a file is not what its records give; the test suite runs the same check.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from bench.records import REPO, RecordError, load_records

BLOCK = re.compile(r"(<!-- results: (\w+)((?: [^\s>]+)*) -->\n)(.*?)(<!-- /results -->)", re.DOTALL)
RECORDS_LINK = "results/records"


def documents(root: Path) -> list[Path]:
    """The files that may hold generated tables: the README and every page under docs/."""
    return [root / "README.md", *sorted((root / "docs").rglob("*.md"))]


def mean_sd(values: Sequence[float], fmt: str) -> str:
    """`0.9729 ± 0.0029` over seeds (population standard deviation); a single value alone; counts (format
    "d": epochs, seconds) as their range, `182-186`."""
    if fmt == "d":
        low, high = int(min(values)), int(max(values))
        return str(low) if low == high else f"{low}-{high}"
    array = np.asarray(values, float)
    if len(array) == 1:
        return format(array[0], fmt)
    return f"{format(array.mean(), fmt)} ± {format(array.std(), fmt)}"


def by_model(record: Mapping) -> dict[str, list[dict]]:
    models: dict[str, list[dict]] = {}
    for run in record["runs"]:
        models.setdefault(str(run.get("model", "")), []).append(run)
    return models


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]


def provenance(stem: str, record: Mapping, link_root: str) -> str:
    """The line under a table: which record, command, commit, date and machine it comes from."""
    machine = record["machine"] or {}
    where = []
    if machine.get("cpu_count"):
        where.append(f"{machine['cpu_count']} cores")
    load = (machine.get("load_average") or {}).get("15min")
    if load is not None:
        where.append(f"load {load} (15 min)")
    commit = record["commit"][:7] + (" (dirty)" if record.get("dirty") else "") if record["commit"] \
        else "an unrecorded commit"
    text = (f"Record [`{stem}`]({link_root}/{stem}.json): `{record['command']}` at {commit}, {record['date']}"
            + (f", {', '.join(where)}" if where else ""))
    if record["transcribed"]:
        source = record["transcribed"]
        text += f"; transcribed from {source['from']} at {source['commit'][:7]}: {source['note']}"
    return text + "."


def seeds_view(records: Mapping[str, dict], args: Sequence[str]) -> tuple[list[str], list[str]]:
    (stem,) = args
    record = records[stem]
    columns = record["columns"]
    rows = []
    for model, runs in by_model(record).items():
        for run in runs:
            rows.append([model, str(run.get("seed", "")),
                         *(format(run[col["key"]], col["format"]) for col in columns)])
        if len(runs) > 1:
            rows.append([f"**{model}, mean ± sd**", "",
                         *(f"**{mean_sd([run[col['key']] for run in runs], col['format'])}**" for col in columns)])
    return markdown(["model", "seed", *(col["header"] for col in columns)], rows), [stem]


def summary_view(records: Mapping[str, dict], args: Sequence[str]) -> tuple[list[str], list[str]]:
    """One row per model of each record; per-seed values in brackets; the reference record's means beside.
    A first argument `columns=a,b` picks the figures (default: the first record's columns)."""
    keys = args[0].removeprefix("columns=").split(",") if args[0].startswith("columns=") else None
    args = args[1:] if keys else args
    known = {col["key"]: col for stem in args for col in reversed(records[stem]["columns"])}
    header_columns = [known[key] for key in keys] if keys else records[args[0]]["columns"]
    rows, used = [], []
    shared_title = len(args) > 1 and len({records[stem]["title"] for stem in args}) == 1  # then the model names it
    for stem in args:
        record = records[stem]
        used.append(stem)
        reference = record["settings"].get("reference")
        against = ""
        if reference:
            used.append(reference)
            ref_runs = next(iter(by_model(records[reference]).values()))
            against = " / ".join(mean_sd([run[col["key"]] for run in ref_runs], col["format"])
                                 for col in header_columns)
        models = by_model(record)
        for model, runs in models.items():
            cells = []
            for col in header_columns:
                values = [run[col["key"]] for run in runs]
                each = f" ({' / '.join(format(v, col['format']) for v in values)})" if len(values) > 1 else ""
                cells.append(mean_sd(values, col["format"]) + each)
            setting = " ".join(record["settings"].get("overrides", []))
            title = model if shared_title else record["title"] + (f", {model}" if len(models) > 1 else "")
            rows.append([title, f"`{setting}`" if setting else "", str(len(runs)), *cells, against])
    compared = any(records[stem]["settings"].get("reference") for stem in args)
    header = ["run", "settings", "seeds", *(col["header"] for col in header_columns)] + (["reference"] if compared
                                                                                         else [])
    return markdown(header, [row if compared else row[:-1] for row in rows]), list(dict.fromkeys(used))


def table_view(records: Mapping[str, dict], args: Sequence[str]) -> tuple[list[str], list[str]]:
    (stem,) = args
    record = records[stem]
    return markdown(record["columns"], record["rows"]), [stem]


def breakdown_view(records: Mapping[str, dict], args: Sequence[str]) -> tuple[list[str], list[str]]:
    """`breakdown PATH RECORD...`: a figure each run keeps per item (PATH, dotted: `per_corruption.medmnistc`
    is each run's `run["per_corruption"]["medmnistc"]`), one row per item, one column per model of each record
    (named by the model and the record's overrides): the mean over its seeds."""
    path, stems = args[0].split("."), args[1:]
    columns, rows = [], {}
    for stem in stems:
        for model, runs in by_model(records[stem]).items():
            tables = [_dig(run, path) for run in runs]
            if any(table is None for table in tables):
                continue  # a model without these figures (a baseline without the copy) has no column
            columns.append(", ".join([model, *records[stem]["settings"].get("overrides", [])]))
            for item in tables[0]:
                rows.setdefault(item, []).append(f"{np.mean([table[item] for table in tables]):.4f}")
    width = len(columns)
    return markdown([path[0].replace("per_", "").replace("_", " "), *columns],
                    [[item, *cells] for item, cells in rows.items() if len(cells) == width]), list(stems)


def _dig(run: Mapping, path: Sequence[str]):
    for key in path:
        if not isinstance(run, Mapping) or key not in run:
            return None
        run = run[key]
    return run


def slug(name: str) -> str:
    """A model's name as one word of a view's arguments: `kit local, bn_adapt=set` -> `kit-local-bn-adapt-set`."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")


def headline_view(records: Mapping[str, dict], args: Sequence[str]) -> tuple[list[str], list[str]]:
    rows, used = [], []
    for arg in args:
        task, stem, keys, link, *model = arg.split(":")
        record = records[stem]
        used.append(stem)
        models = {slug(name): runs for name, runs in by_model(record).items()}
        if model and model[0] not in models:
            raise RecordError(f"{stem}: no model {model[0]!r} for the headline; the record has {', '.join(models)}")
        runs = models[model[0]] if model else next(iter(models.values()))
        formats = {col["key"]: col for col in record["columns"]}
        scores = "; ".join(f"{formats[key]['header']} {mean_sd([run[key] for run in runs], formats[key]['format'])}"
                           for key in keys.split(","))
        rows.append([task, f"`{record['settings'].get('profile', '')}`", f"`{record['command']}`",
                     f"{scores} ({len(runs)} seeds)", f"[{Path(link).stem} results]({link})"])
    return markdown(["task", "profile", "command", "held-out score, mean ± sd", "full tables"], rows), used


VIEWS: dict[str, Callable[[Mapping[str, dict], Sequence[str]], tuple[list[str], list[str]]]] = {
    "seeds": seeds_view, "summary": summary_view, "table": table_view, "breakdown": breakdown_view,
    "headline": headline_view,
}


def render(text: str, records: Mapping[str, dict], path: Path, root: Path) -> str:
    """`text` with every generated block rendered again from `records`."""
    link_root = Path("docs", RECORDS_LINK).as_posix() if path.parent == root else \
        _relative(root / "docs" / RECORDS_LINK, path.parent)

    def block(match: re.Match) -> str:
        view, args = match.group(2), match.group(3).split()
        if view not in VIEWS:
            raise RecordError(f"{path}: unknown results view {view!r}; choose one of {', '.join(VIEWS)}")
        stems = [arg.split(":")[1] for arg in args] if view == "headline" else args[1:] if view == "breakdown" \
            else [arg for arg in args if not arg.startswith("columns=")]
        missing = [stem for stem in stems if stem not in records]
        if missing:
            raise RecordError(f"{path}: no record {missing[0]!r} in docs/results/records")
        lines, used = VIEWS[view](records, args)
        parts = ["\n".join(lines)]
        if view != "headline":
            parts += [records[stem]["notes"] for stem in used if records[stem]["notes"]]
            parts.append("\n".join(f"- {provenance(stem, records[stem], link_root)}" for stem in used))
        return match.group(1) + "\n\n".join(parts) + "\n" + match.group(5)

    return BLOCK.sub(block, text)


def _relative(target: Path, start: Path) -> str:
    import os

    return Path(os.path.relpath(target, start)).as_posix()


def stale(root: Path | None = None) -> dict[Path, str]:
    """Files whose generated tables differ from what the records give: path -> the text they should hold."""
    root = root or REPO
    records = load_records(root / "docs" / RECORDS_LINK)
    out = {}
    for path in documents(root):
        if not path.exists():
            continue
        text = path.read_text(encoding="utf-8")
        rendered = render(text, records, path, root)
        if rendered != text:
            out[path] = rendered
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.results", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if a table is stale")
    args = parser.parse_args(argv)
    try:
        changed = stale()
    except RecordError as error:
        print(f"results: error: {error}", file=sys.stderr)
        return 2
    from an2dl_kit.files import write_text

    for path, text in changed.items():
        if args.check:
            print(f"stale: {path.relative_to(REPO)} (run `make results`)")
        else:
            write_text(path, text)
            print(f"wrote {path.relative_to(REPO)}")
    if not changed:
        print("results: every generated table matches its records")
    return 1 if args.check and changed else 0


if __name__ == "__main__":
    raise SystemExit(main())
