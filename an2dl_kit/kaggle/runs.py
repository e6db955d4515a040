"""`an2dl runs --task T`: one row per pushed version of every variant, to keep the one that scores.

Read from what the loop keeps on disk: the push history (`submissions/<task>/pushes.jsonl`: variant, version,
overrides), each version's downloaded `metrics.json` (validation score with and without TTA) and the ledger
(submitted or not, public score after `an2dl scores`). Only the kernel status of versions whose outputs are
not downloaded yet is asked of Kaggle (one GetKernelSessionStatus per version, versioned, so an older
version of a variant is not reported with its newest's status). The table is printed and written as
`submissions/<task>/runs.md` and `runs.csv`. Fold ensembles (`an2dl ensemble-folds`, kept as versions of the
`folds` or `<name>-folds` variant) get a row each, after the pushes, and an `OOF` column carries their
out-of-fold score (the column is left out while no row has one). TensorFlow-free.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

from an2dl_kit.files import write_table
from an2dl_kit.kaggle.ledger import read_ledger
from an2dl_kit.kaggle.variants import SUBMISSIONS_DIR, format_overrides, read_pushes, shown_name, variant_dir
from an2dl_kit.task import TASKS

METRICS_FILE = "metrics.json"
DOWNLOADED = "downloaded"


def find_metrics(folder: Path) -> Path | None:
    """The run's metrics.json: at the top of the outputs (where the kernel writes it), else the shallowest."""
    found = sorted(folder.rglob(METRICS_FILE), key=lambda p: (len(p.parts), p.as_posix())) if folder.is_dir() else []
    return found[0] if found else None


def read_metrics(folder: Path) -> dict:
    """The run's metrics.json as a dict ({} where missing or unreadable)."""
    path = find_metrics(folder)
    metrics = {}
    if path is not None:
        with contextlib.suppress(OSError, ValueError):
            metrics = json.loads(path.read_text(encoding="utf-8"))
    return metrics if isinstance(metrics, dict) else {}


def oof_score(folder: Path) -> float | None:
    """The out-of-fold score of a fold ensemble (or a fold set run), None for other runs."""
    oof = read_metrics(folder).get("oof")
    return float(oof["value"]) if isinstance(oof, dict) and isinstance(oof.get("value"), (int, float)) else None


def validation_scores(folder: Path, score: str) -> tuple[float | None, float | None]:
    """(validation, validation+TTA) headline scores from a downloaded metrics.json; None where missing."""
    metrics = read_metrics(folder)
    values = []
    for key in ("validation", "validation_tta"):
        value = (metrics.get(key) or {}).get(score) if isinstance(metrics, dict) else None
        values.append(float(value) if isinstance(value, (int, float)) else None)
    return values[0], values[1]


def _best_public(rows: list[dict]) -> float | None:
    scores = []
    for row in rows:
        with contextlib.suppress(ValueError):
            scores.append(float(row["public_score"]))
    return max(scores) if scores else None


def latest_pushes(task: str) -> list[dict]:
    """One push record per (variant, version), the last recorded one winning, sorted by variant then version."""
    records = {(r.get("name") or "", int(r["version"])): r for r in read_pushes(task)}
    return [records[key] for key in sorted(records)]


def run_rows(task: str, status_of) -> list[dict]:
    """The table's rows; `status_of(record)` gives the kernel status of a version not downloaded yet."""
    score = TASKS[task].score
    ledger = [row for row in read_ledger() if row["task"] == task]
    rows = []
    for record in latest_pushes(task):
        name, version = record.get("name") or "", int(record["version"])
        folder = variant_dir(task, name) / f"v{version}"
        validation, validation_tta = validation_scores(folder, score)
        submitted = [row for row in ledger if row["name"] == name and row["kernel_version"] == str(version)]
        rows.append({
            "name": shown_name(name), "version": version, "overrides": format_overrides(record.get("overrides")),
            "status": DOWNLOADED if folder.is_dir() else status_of(record),
            f"validation {score}": validation, f"validation+TTA {score}": validation_tta,
            "submitted": "yes" if submitted else "no", "public score": _best_public(submitted),
            "OOF": oof_score(folder)})
    rows += ensemble_rows(task, ledger)
    if all(row["OOF"] is None for row in rows):
        rows = [{k: v for k, v in row.items() if k != "OOF"} for row in rows]
    return rows


def ensemble_rows(task: str, ledger: list[dict]) -> list[dict]:
    """One row per fold ensemble: every `v<N>/` of a `*folds` variant whose metrics.json is an ensemble's."""
    score, rows = TASKS[task].score, []
    for folder in sorted((SUBMISSIONS_DIR / task).glob("*folds/v*"), key=lambda p: (p.parent.name, p.name)):
        metrics = read_metrics(folder)
        if metrics.get("kind") != "ensemble" or not folder.name[1:].isdigit():
            continue
        name, version = folder.parent.name, int(folder.name[1:])
        submitted = [row for row in ledger if row["name"] == name and row["kernel_version"] == str(version)]
        rows.append({
            "name": name, "version": version, "overrides": format_overrides(metrics.get("overrides")),
            "status": f"ensemble of {len(metrics.get('members') or [])}", f"validation {score}": None,
            f"validation+TTA {score}": None, "submitted": "yes" if submitted else "no",
            "public score": _best_public(submitted), "OOF": oof_score(folder)})
    return rows


def runs_cli(args) -> int:
    """`an2dl runs --task T`: print the runs table and write submissions/<task>/runs.md and .csv."""
    session = None

    def status_of(record: dict) -> str:
        """Connects on first use only: a table of downloaded versions needs no credentials."""
        nonlocal session
        from an2dl_kit.kaggle.session import KaggleSession

        session = session or KaggleSession.connect()
        return session.status(record["ref"], int(record["version"]))[0]

    rows = run_rows(args.task, status_of)
    if not rows:
        print(f"{SUBMISSIONS_DIR / args.task}: no pushes recorded; push with `make push-{args.task}`")
        return 0
    md, csv_path = write_table([{k: "" if v is None else v for k, v in row.items()} for row in rows],
                               SUBMISSIONS_DIR / args.task / "runs")
    print(md.read_text(encoding="utf-8"), end="")
    print(f"wrote {md} and {csv_path}")
    return 0
