"""What a report holds, independent of its format: sections of paragraphs, tables and figures.

The HTML, Markdown and LaTeX writers render the same `Section`s, so the three can never disagree. A table cell
holds a value (text, an integer or a float with its decimals) or nothing; an empty cell carries a note saying
why, which every writer prints as a lettered footnote under its table (a missing value is never made up).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Cell:
    """One table cell.

    Args:
        value: text, an int, a float, or None (empty: `note` says why).
        note: footnote text, printed once under the table and marked in every cell that has it.
        digits: decimals of a float.
    """

    value: str | int | float | None
    note: str | None = None
    digits: int = 4

    @property
    def numeric(self) -> bool:
        return isinstance(self.value, (int, float)) and not isinstance(self.value, bool)

    def text(self) -> str:
        """The value as printed: floats with their decimals, ints with thousands separators, None empty."""
        if self.value is None:
            return ""
        if isinstance(self.value, bool):
            return "yes" if self.value else "no"
        if isinstance(self.value, int):
            return f"{self.value:,}"
        if isinstance(self.value, float):
            return f"{self.value:,.{self.digits}f}"
        return str(self.value)


def cell(value, note: str | None = None, digits: int = 4) -> Cell:
    """A cell from a metrics value: numbers kept, NaN and None empty with `note`, anything else as text."""
    if isinstance(value, float) and value != value:  # NaN: undefined, e.g. the IoU of an absent class
        return Cell(None, note)
    return Cell(value, note if value is None else None, digits)


@dataclass
class Table:
    """A table: `key` names it (LaTeX macro, tests), `caption` describes it, `columns` head the rows."""

    key: str
    caption: str
    columns: list[str]
    rows: list[list[Cell]]

    def __post_init__(self):
        for row in self.rows:
            if len(row) != len(self.columns):
                raise ValueError(f"table {self.key}: a row of {len(row)} cells under {len(self.columns)} columns")

    def footnotes(self) -> dict[str, str]:
        """Note text -> its letter (a, b, ...), in order of first appearance."""
        notes: dict[str, str] = {}
        for row in self.rows:
            for item in row:
                if item.note and item.note not in notes:
                    notes[item.note] = chr(ord("a") + len(notes))
        return notes

    def numeric_columns(self) -> list[bool]:
        """Whether each column holds only numbers (or empty cells): such columns align right."""
        return [all(row[i].numeric or row[i].value is None for row in self.rows) and
                any(row[i].numeric for row in self.rows) for i in range(len(self.columns))]


@dataclass(frozen=True)
class Figure:
    """A figure written into the report's `figures/` as `<name>.png` and `<name>.pdf`."""

    name: str
    caption: str
    png: Path


@dataclass(frozen=True)
class Text:
    """A paragraph of plain text."""

    text: str


Block = Text | Table | Figure


@dataclass
class Section:
    """A report section: `key` is its HTML id (the browser check looks for every one)."""

    key: str
    title: str
    blocks: list[Block] = field(default_factory=list)

    def tables(self) -> list[Table]:
        return [block for block in self.blocks if isinstance(block, Table)]

    def figures(self) -> list[Figure]:
        return [block for block in self.blocks if isinstance(block, Figure)]


def missing_figure(what: str, why: str) -> Text:
    """The paragraph that stands where a figure cannot be drawn."""
    return Text(f"No {what} figure: {why}.")


def all_tables(sections: Sequence[Section]) -> list[Table]:
    return [table for section in sections for table in section.tables()]


def score_label(task: str) -> str:
    """The task's headline score as a reader writes it (mIoU, accuracy)."""
    from an2dl_kit.task import TASKS

    score = TASKS[task].score
    return {"miou": "mIoU"}.get(score, score)
