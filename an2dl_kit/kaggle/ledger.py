"""The ledger of accepted submissions (`submissions/ledger.csv`) and `an2dl scores`, which fills in the scores.

`make submit` adds a row only after Kaggle accepts the file, with the server's submission id; the scores come
later (Kaggle scores a submission in the background), so `an2dl scores --task T` lists the competition's
submissions and copies each one's status, public score and private score (once the competition has ended)
into the row with the same id. The file is rewritten atomically and only when something changed, so running
`scores` twice changes nothing the second time. A row whose id the server does not list (another account, a
deleted submission) is reported and kept: the ledger is a record, never pruned. A ledger written before the
score columns existed is read as is and gains them the next time it is written. TensorFlow-free.
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

from an2dl_kit.errors import KitError
from an2dl_kit.files import write_text
from an2dl_kit.kaggle.settings import kernel_config
from an2dl_kit.kaggle.variants import SUBMISSIONS_DIR

LEDGER_NAME = "ledger.csv"
LEDGER_COLUMNS = ("time", "task", "competition", "file", "sha256", "message", "kernel_version", "submission",
                  "name", "status", "public_score", "private_score")
SCORE_COLUMNS = ("status", "public_score", "private_score")


def ledger_path() -> Path:
    return SUBMISSIONS_DIR / LEDGER_NAME


def read_ledger() -> list[dict]:
    """Every row, with every column of LEDGER_COLUMNS ("" where an older ledger lacks it)."""
    path = ledger_path()
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as handle:
        return [{column: row.get(column) or "" for column in LEDGER_COLUMNS} for row in csv.DictReader(handle)]


def write_ledger(rows: list[dict]) -> Path:
    """Write every row atomically: an interrupted write leaves the previous ledger whole."""
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=LEDGER_COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows({column: row.get(column, "") for column in LEDGER_COLUMNS} for row in rows)
    return write_text(ledger_path(), text.getvalue())


def append_ledger(row: dict) -> Path:
    """Add one accepted submission (the whole file is rewritten atomically, so the header stays current)."""
    return write_ledger([*read_ledger(), row])


def server_scores(submission) -> dict[str, str]:
    """The ledger's score columns from one ApiSubmission (scores are strings on the wire; "" when unset)."""
    status = getattr(submission.status, "name", str(submission.status or ""))
    return {"status": status, "public_score": submission.public_score or "",
            "private_score": submission.private_score or ""}


def apply_scores(rows: list[dict], submissions: list, task: str, competition: str) -> tuple[list[dict], dict]:
    """The rows with the server's scores filled in by submission id; pure, so idempotence is easy to see.

    Returns (new rows, report) where report holds the ids `updated`, `unchanged`, `unknown` (not listed by the
    server: kept as they are) and `unmatched` (rows without an id), and `untracked`: ids on the server that no
    row names (submitted from the website, say).
    """
    by_id = {str(s.ref): s for s in submissions}
    report = {"updated": [], "unchanged": [], "unknown": [], "unmatched": 0, "untracked": []}
    new_rows, seen = [], set()
    for row in rows:
        if row["task"] != task or row["competition"] != competition:
            new_rows.append(row)
            continue
        sid = row["submission"]
        if not sid:
            report["unmatched"] += 1
        elif sid not in by_id:
            report["unknown"].append(sid)
        else:
            seen.add(sid)
            scores = server_scores(by_id[sid])
            changed = any(row[column] != scores[column] for column in SCORE_COLUMNS)
            report["updated" if changed else "unchanged"].append(sid)
            row = {**row, **scores}
        new_rows.append(row)
    report["untracked"] = [sid for sid in by_id if sid not in seen]
    return new_rows, report


def _print_rows(rows: list[dict], task: str, competition: str) -> None:
    print(f"{'submission':>12}  {'variant':<16} {'version':>7}  {'status':<8} {'public':>8} {'private':>8}  message")
    for row in rows:
        if row["task"] == task and row["competition"] == competition:
            print(f"{row['submission'] or '?':>12}  {row['name'] or 'default':<16} {row['kernel_version'] or '-':>7}  "
                  f"{row['status'] or '?':<8} {row['public_score'] or '-':>8} {row['private_score'] or '-':>8}  "
                  f"{row['message']}")


def scores_cli(args) -> int:
    """`an2dl scores --task T`: fill the ledger's status and scores from the competition's submission list."""
    from an2dl_kit.kaggle.session import KaggleSession

    competition = kernel_config(args.task).competition
    if not competition:
        raise KitError(f"{args.task}: no Kaggle competition configured; set {args.task.upper()}_COMPETITION")
    rows = read_ledger()
    submissions = KaggleSession.connect().submissions(competition)
    new_rows, report = apply_scores(rows, submissions, args.task, competition)
    if report["updated"]:
        write_ledger(new_rows)
    _print_rows(new_rows, args.task, competition)
    print(f"{len(report['updated'])} rows updated, {len(report['unchanged'])} unchanged in {ledger_path()}")
    if report["unknown"]:
        print(f"not listed by the server (kept as they are): submissions {', '.join(report['unknown'])}")
    if report["unmatched"]:
        print(f"{report['unmatched']} rows have no submission id and cannot be matched")
    if report["untracked"]:
        print(f"{len(report['untracked'])} submissions on the server are not in the ledger: "
              f"{', '.join(report['untracked'])}")
    return 0
