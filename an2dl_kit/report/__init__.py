"""`an2dl report`: turn runs into the figures, tables and text of a homework report.

Reads run folders, downloaded kernel outputs, `compare` folders and ensemble folders of one task (`collect`),
with the public scores of `submissions/<task>/runs.csv`, and writes into `--out`:

- `report.html`: one self-contained page (figures embedded, no script, no network), sections data,
  augmentation, model, experiments, chosen run, ensemble, provenance (`sections.SECTIONS`);
- `report.md`: the same content, figures linked from `figures/`;
- `figures/`: every figure as PNG and PDF at print size (one column, 3.3 in wide, fonts of 8 pt and more,
  colour-blind-safe colours, one colour per class across figures);
- `tables.tex`: every table as a booktabs `tabular` in its own macro, ready to `\\input`.

The run the report details (learning curves, per-class scores, TTA and post-processing decisions, examples) is
`--chosen`, else the best public score, else the best validation score of the submitted predictions (a fold
set's: its out-of-fold score). A fold set is one run (`collect`); its curves, examples, data and model are its
first fold's.
"""

from __future__ import annotations

import argparse
import datetime
from collections.abc import Sequence
from pathlib import Path

from an2dl_kit.report.collect import Collection, Run, collect

REPORT_HTML = "report.html"
REPORT_MD = "report.md"
TABLES_TEX = "tables.tex"


def chosen_run(collection: Collection, name: str | None) -> tuple[Run, str]:
    """The run to detail and why it is the one."""
    from an2dl_kit.report.document import score_label

    run = collection.chosen(name)
    label = score_label(collection.task)
    if name is not None:
        return run, "chosen with --chosen"
    if run.public is not None:
        return run, f"the best public {label} of the runs ({run.public:.4f})"
    oof = ", out of fold" if run.oof is not None else ""
    return run, f"the best validation {label} of the submitted predictions ({run.submitted_validation():.4f}{oof})"


def written_by() -> str:
    """The kit version and, in a checkout, its commit."""
    from an2dl_kit import __version__
    from an2dl_kit.errors import KitError
    from an2dl_kit.kaggle.provenance import git_state, repo_root

    try:
        commit, dirty = git_state(repo_root())
    except KitError:
        commit, dirty = None, False
    where = f"commit {commit[:12]}{' (dirty)' if dirty else ''}" if commit else "not a git checkout"
    return f"an2dl-kit {__version__}, {where}, {datetime.date.today().isoformat()}"


def remove_stale_figures(folder: Path, kept: set[str]) -> None:
    """Figures an earlier report left in `folder` that this one does not draw (they would mislead)."""
    for path in folder.glob("*"):
        if path.suffix in (".png", ".pdf") and path.stem not in kept:
            path.unlink()


def write_report(task: str, folders: Sequence[Path], out: Path, chosen: str | None = None,
                 runs_csv: Path | None = None) -> Path:
    """Collect the folders and write the report into `out`; returns the path of report.html."""
    from an2dl_kit.files import write_text
    from an2dl_kit.report import html, latex, markdown, sections
    from an2dl_kit.report.document import all_tables
    from an2dl_kit.report.figures import FIGURES_DIR

    collection = collect(task, folders, runs_csv)
    run, reason = chosen_run(collection, chosen)
    out = Path(out)
    (out / FIGURES_DIR).mkdir(parents=True, exist_ok=True)
    built = sections.build(collection, run, reason, out, written_by())
    remove_stale_figures(out / FIGURES_DIR, {f.name for s in built for f in s.figures()})
    title = f"AN2DL {task}: report of {len(collection.runs)} run{'s' if len(collection.runs) > 1 else ''}"
    subtitle = f"Chosen run: {run.name}. Written by `an2dl report --task {task}`."
    write_text(out / REPORT_MD, markdown.render(title, subtitle, built, out))
    write_text(out / TABLES_TEX, latex.render(title, all_tables(built)))
    return write_text(out / REPORT_HTML, html.render(title, subtitle, built))


def cli(args: argparse.Namespace) -> int:
    """`an2dl report --task T RUN_OR_FOLDER... --out DIR [--chosen RUN] [--runs-csv FILE]`."""
    path = write_report(args.task, args.folders, args.out, args.chosen, args.runs_csv)
    print(f"wrote {path}, {Path(args.out) / REPORT_MD}, {Path(args.out) / TABLES_TEX} and figures/ (PNG, PDF)")
    return 0
