"""tables.tex: every table of the report as a booktabs `tabular`, each in its own macro.

`\\input{tables.tex}` once (with `\\usepackage{booktabs}` in the preamble), then write `\\ReportExperiments`,
`\\ReportPerclass`... where a table goes. Footnotes follow `\\bottomrule` as a row spanning every column. Text
is escaped (`\\ & % $ # _ { } ~ ^ < >`), so names such as `iou_big_rock` or `50%` print as written.
"""

from __future__ import annotations

from collections.abc import Sequence

from an2dl_kit.report.document import Table

SPECIALS = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_", "{": r"\{",
            "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}", "<": r"\textless{}",
            ">": r"\textgreater{}", "→": r"$\rightarrow$", "×": r"$\times$"}


def escape(text: str) -> str:
    return "".join(SPECIALS.get(char, char) for char in text)


def macro_name(key: str) -> str:
    """`Report` + the table's key capitalised (TeX command names are letters only)."""
    letters = "".join(char for char in key if char.isalpha())
    return "Report" + letters[:1].upper() + letters[1:]


def tabular(table: Table) -> str:
    notes = table.footnotes()
    spec = "".join("r" if numeric else "l" for numeric in table.numeric_columns())
    lines = [rf"\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(escape(column) for column in table.columns) + r" \\", r"\midrule"]
    for row in table.rows:
        lines.append(" & ".join(escape(item.text()) + (rf"\textsuperscript{{{notes[item.note]}}}" if item.note
                                                        else "") for item in row) + r" \\")
    lines.append(r"\bottomrule")
    lines += [rf"\multicolumn{{{len(table.columns)}}}{{l}}{{\footnotesize\textsuperscript{{{letter}}}~"
              rf"{escape(text)}}} \\" for text, letter in notes.items()]
    return "\n".join(lines + [r"\end{tabular}"])


def render(title: str, tables: Sequence[Table]) -> str:
    parts = [f"% Tables of {escape(title)}, written by `an2dl report`.",
             "% Needs \\usepackage{booktabs}. \\input this file once, then place a table with its macro:"]
    parts += [f"%   \\{macro_name(t.key)}: {escape(t.caption)}" for t in tables]
    for table in tables:
        parts += ["", f"% {escape(table.caption)}", rf"\newcommand{{\{macro_name(table.key)}}}{{%",
                  tabular(table) + "%", "}"]
    return "\n".join(parts) + "\n"
