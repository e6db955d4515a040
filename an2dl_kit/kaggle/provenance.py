"""Provenance: what a kernel was built from (kit version, git commit, dirty flag, sources hash, task, profile,
overrides and the configuration they resolve to).

Computed from the checkout at bundle time and baked into the script, or at run time by a kernel started
unbundled from a checkout. A kernel prints it first and `run` records it in metrics.json, so any output can
be traced to the exact sources that wrote it. TensorFlow-free: bundling and pushing import it.
"""

from __future__ import annotations

import hashlib
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path

from an2dl_kit import __version__
from an2dl_kit import config as cfg
from an2dl_kit.errors import KitError
from an2dl_kit.kaggle.settings import KernelConfig
from an2dl_kit.tasks import profile_settings, resolve_config

KIT_PACKAGE = "an2dl_kit"
KERNELS_DIR = "kernels"
MAIN_PATH = f"{KERNELS_DIR}/main.py"  # the kernel entry template both tasks share


def repo_root() -> Path:
    """The checkout this module lives in; bundling needs its `kernels/` folder."""
    root = Path(__file__).resolve().parents[2]
    if not (root / KERNELS_DIR).is_dir():
        raise KitError(f"{root}: no {KERNELS_DIR}/ folder; bundling needs a checkout of an2dl-kit")
    return root


def kit_sources(root: Path) -> dict[str, str]:
    """Every `an2dl_kit/**/*.py` of the checkout: relative POSIX path -> text, in path order."""
    paths = sorted((root / KIT_PACKAGE).rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in paths if "__pycache__" not in p.parts}


def checkout_sources(root: Path) -> dict[str, str]:
    """What a bundle carries from the checkout: the kit's modules, then the entry template at MAIN_PATH."""
    return {**kit_sources(root), MAIN_PATH: (root / MAIN_PATH).read_text(encoding="utf-8")}


def git_state(root: Path) -> tuple[str | None, bool]:
    """(HEAD commit or None, whether the kit or the kernels differ from it).

    Untracked and ignored files count as changes too (an ignored module would still be embedded); only
    `__pycache__` is left out.
    """

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=30)

    try:
        head = git("rev-parse", "--verify", "--quiet", "HEAD")
        status = git("status", "--porcelain", "--ignored", "--", KIT_PACKAGE, KERNELS_DIR)
    except (OSError, subprocess.TimeoutExpired):
        return None, True
    commit = head.stdout.strip() if head.returncode == 0 else None
    changes = [line for line in status.stdout.splitlines() if "__pycache__" not in line]
    return commit, commit is None or status.returncode != 0 or bool(changes)


def sources_digest(sources: Mapping[str, str]) -> str:
    """One hash of every path and text: tells two bundles of a dirty checkout apart, which the commit cannot."""
    digest = hashlib.sha256()
    for path in sorted(sources):
        digest.update(path.encode() + b"\0" + sources[path].encode() + b"\0")
    return digest.hexdigest()


def canonical_overrides(task: str, profile: str,
                        overrides: Mapping[str, object] | Iterable[str] | None) -> dict[str, object]:
    """`overrides` validated against the task's profile, keyed by plain field name, sorted.

    Raises the one-line `KitError` of `resolve_config` on an unknown field, a bad type or an unknown registry
    name, so callers run it before writing or sending anything. `training.loss=focal` and `loss=focal` give
    the same result (field names are unique within a task), so equal settings make byte-identical bundles.
    Values are kept as given (the strings of `--set`): the kernel hands them to `run`, which parses them as
    `an2dl train --set` does, so metrics.json records them the same way.
    """
    resolve_config(task, profile, overrides)
    values = cfg.parse_assignments(overrides) if overrides is not None and not isinstance(overrides, Mapping) \
        else dict(overrides or {})
    plain = {key.rpartition(".")[2]: value for key, value in values.items() if value is not None}
    return dict(sorted(plain.items()))


def provenance(task: str, profile: str, config: KernelConfig, sources: Mapping[str, str],
               commit: str | None, dirty: bool, overrides: Mapping[str, object] | None = None) -> dict:
    """What a kernel prints first and `run` records in metrics.json: enough to rebuild it exactly.

    `overrides` are canonical (`canonical_overrides`); `config` is the profile resolved with them (as
    metrics.json's own `config`), `kernel` where the kernel runs.
    """
    overrides = dict(overrides or {})
    return {"kit": "an2dl-kit", "version": __version__, "commit": commit, "dirty": dirty,
            "sources_sha256": sources_digest(sources), "task": task, "profile": profile,
            "overrides": overrides, "config": profile_settings(task, profile, overrides),
            "kernel": config.as_dict()}


def checkout_provenance(task: str, profile: str, config: KernelConfig, root: Path | None = None) -> dict:
    """The provenance a bundle made now from the checkout would carry (also that of an unbundled run)."""
    root = root or repo_root()
    return provenance(task, profile, config, checkout_sources(root), *git_state(root))
