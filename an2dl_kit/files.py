"""Small file helpers shared by every writer: atomic writes, JSON, Markdown/CSV tables."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any


def _default_file_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


_DEFAULT_FILE_MODE = _default_file_mode()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    An interrupted or failed write never leaves a half file under the final name, and never
    clobbers an earlier complete file. The temporary name ends with the final name's suffixes
    (".part.weights.h5"), so writers that check extensions, such as Keras' savers, accept it.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part" + "".join(path.suffixes), dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, _DEFAULT_FILE_MODE)  # mkstemp makes owner-only files; outputs are for sharing
        os.replace(tmp_path, path)
    finally:
        tmp_path.unlink(missing_ok=True)


def write_text(path: str | os.PathLike, text: str) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def _jsonable(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    return write_text(path, json.dumps(obj, indent=2, sort_keys=False, default=_jsonable) + "\n")


def markdown_table(rows: Sequence[dict[str, Any]]) -> str:
    """Render rows (dicts sharing keys) as a GitHub Markdown table; floats get 4 decimals."""
    if not rows:
        return ""
    columns = list(rows[0])

    def cell(value: Any) -> str:
        return f"{value:.4f}" if isinstance(value, float) else str(value)

    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(cell(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_table(rows: Sequence[dict[str, Any]], stem: str | os.PathLike) -> tuple[Path, Path]:
    """Write rows as `<stem>.md` and `<stem>.csv`; return both paths."""
    import pandas as pd

    stem = Path(stem)
    md = write_text(stem.with_suffix(".md"), markdown_table(rows))
    csv_path = stem.with_suffix(".csv")
    with atomic_path(csv_path) as tmp:
        pd.DataFrame(list(rows)).to_csv(tmp, index=False)
    return md, csv_path
