"""report.md: the same sections as report.html, figures linked from `figures/`, footnotes as [a] marks."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from an2dl_kit.report.document import Figure, Section, Table, Text


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def table(block: Table) -> str:
    notes = block.footnotes()
    numeric = block.numeric_columns()
    lines = [f"*{_escape(block.caption)}*", "", "| " + " | ".join(_escape(c) for c in block.columns) + " |",
             "|" + "".join("---:|" if n else "---|" for n in numeric)]
    for row in block.rows:
        lines.append("| " + " | ".join(_escape(item.text()) + (f" [{notes[item.note]}]" if item.note else "")
                                       for item in row) + " |")
    lines += [""] + [f"[{letter}] {_escape(text)}  " for text, letter in notes.items()]
    return "\n".join(lines).rstrip() + "\n"


def _block(block, root: Path) -> str:
    if isinstance(block, Table):
        return table(block)
    if isinstance(block, Figure):
        return f"![{block.caption}]({block.png.relative_to(root).as_posix()})\n\n*{block.caption}*\n"
    assert isinstance(block, Text)
    return block.text + "\n"


def render(title: str, subtitle: str, sections: Sequence[Section], root: Path) -> str:
    parts = [f"# {title}\n\n{subtitle}\n"]
    for section in sections:
        parts.append(f"## {section.title}\n")
        parts += [_block(block, root) for block in section.blocks]
    return "\n".join(parts)
