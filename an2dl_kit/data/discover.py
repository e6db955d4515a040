"""Find the competition files under an input root.

Kaggle mounts inputs as `/kaggle/input/<slug>/<file>` or `/kaggle/input/competitions/<slug>/<file>`
depending on the image; the synthetic data and `../shared/data` use `<root>/cells/<file>` and
`<root>/mars/<file>`. One recursive search for the file names finds them all. The root is `--data DIR`,
else `$AN2DL_INPUT`, else `/kaggle/input`.

`shared_data_root` finds the real stand-in files (`../shared/data`) for the tests and benchmarks.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from an2dl_kit.errors import DataError
from an2dl_kit.task import CELLS, MARS, TASKS

ENV_VAR = "AN2DL_INPUT"
KAGGLE_INPUT = Path("/kaggle/input")
SHARED_DATA_ENV = "AN2DL_SHARED_DATA"
# Where the real stand-in files are looked for after $AN2DL_SHARED_DATA: `<repo>/../shared/data` (the repo being
# the checkout holding this package), then /work/shared/data.
SHARED_DATA_CANDIDATES = (Path(__file__).resolve().parents[2].parent / "shared" / "data", Path("/work/shared/data"))
# Deep enough for /kaggle/input/competitions/<slug>/<folder>/<file>; bounded so a root holding model
# weights or a home folder is not walked for minutes.
MAX_DEPTH = 6

# Which `Inputs` field holds each task's training file, and what that file is called in messages.
REQUIRED = {CELLS.name: ("cells_train", CELLS.train_file), MARS.name: ("mars", MARS.train_file)}
# The `Inputs` field of each task's test file (Mars keeps its test set inside the training file).
TEST_FIELD = {CELLS.name: "cells_test", MARS.name: "mars"}


@dataclass(frozen=True)
class Inputs:
    """The competition files found under `root`; a field is None when that file is absent."""

    root: Path
    cells_train: Path | None
    cells_test: Path | None
    mars: Path | None

    def require(self, task: str) -> Path:
        """Return the training file of `task` ("cells" or "mars"), or raise DataError naming the root.

        The cells test set is optional (the real challenge scored it on Codabench): read `cells_test`.
        """
        field, name = REQUIRED[TASKS.check(task)]
        path = getattr(self, field)
        if path is None:
            where = "" if self.root.is_dir() else " (the folder does not exist)"
            raise DataError(
                f"{self.root}: no {name} found for {task} under this folder{where}; "
                f"pass --data DIR or set {ENV_VAR} (an2dl synth --out DIR writes synthetic files)"
            )
        return path

    def test_file(self, task: str) -> Path | None:
        """The file holding `task`'s test set, or None when absent (the cells test set is optional)."""
        return getattr(self, TEST_FIELD[TASKS.check(task)])

    def files(self, task: str) -> list[Path]:
        """Every competition file of `task` that was found, each once: what a kernel needs mounted.

        Raises like `require` when the training file is missing.
        """
        return list(dict.fromkeys(p for p in (self.require(task), self.test_file(task)) if p is not None))


def input_root(data: str | os.PathLike | None = None) -> Path:
    """The folder to search: the argument, else $AN2DL_INPUT, else /kaggle/input."""
    if data is not None:
        return Path(data)
    env = os.environ.get(ENV_VAR)
    return Path(env) if env else KAGGLE_INPUT


def _walk(root: Path) -> list[Path]:
    """All files under root (sorted, depth-limited, hidden folders skipped)."""
    found: list[Path] = []
    base_depth = len(root.parts)
    for folder, dirs, files in os.walk(root, followlinks=True):
        depth = len(Path(folder).parts) - base_depth
        dirs[:] = sorted(d for d in dirs if not d.startswith(".")) if depth < MAX_DEPTH else []
        found.extend(Path(folder) / name for name in sorted(files))
    return found


def _pick(candidates: list[Path], near: Path | None = None) -> Path | None:
    """Prefer a file beside `near`, then the shallowest, then alphabetical: deterministic on any layout."""
    if not candidates:
        return None
    if near is not None:
        beside = [c for c in candidates if c.parent == near.parent]
        if beside:
            return beside[0]
    return min(candidates, key=lambda p: (len(p.parts), str(p)))


def find_inputs(data: str | os.PathLike | None = None) -> Inputs:
    """Search the input root recursively for the competition files; never raises (see `Inputs.require`).

    `data` may also name one of the files directly; its folder is searched.
    """
    root = input_root(data)
    if root.is_file():
        root = root.parent
    files = _walk(root) if root.is_dir() else []
    by_name: dict[str, list[Path]] = {}
    for path in files:
        by_name.setdefault(path.name, []).append(path)
    cells_train = _pick(by_name.get(CELLS.train_file, []))
    return Inputs(
        root=root,
        cells_train=cells_train,
        cells_test=_pick(by_name.get(CELLS.test_file, []), near=cells_train),
        mars=_pick(by_name.get(MARS.train_file, [])),
    )


def shared_data_root() -> Path | None:
    """The folder of the real stand-in files (`cells/`, `mars/`) used by the tests and benchmarks, or None.

    Candidates, first match wins: `$AN2DL_SHARED_DATA`, then `shared/data` beside the repository that holds
    this package (`<repo>/../shared/data`), then `/work/shared/data`. A candidate matches when it holds both
    `cells/training_set.npz` and `mars/mars_for_students.npz`; a caller that needs more (test labels) checks
    for those files itself. Never raises.
    """
    env = os.environ.get(SHARED_DATA_ENV)
    for root in ([Path(env)] if env else []) + list(SHARED_DATA_CANDIDATES):
        if (root / CELLS.name / CELLS.train_file).is_file() and (root / MARS.name / MARS.train_file).is_file():
            return root
    return None
