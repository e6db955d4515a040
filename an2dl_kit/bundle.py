"""Self-contained Kaggle kernels: one script that carries the kit's source, and a way to run it here.

`write_bundle` writes `<out>/<task>/kernel.py` and `kernel-metadata.json`. The script holds every
`an2dl_kit/**/*.py` as a readable raw string (one per module, in path order), a small import hook that is put
first on `sys.meta_path` so the embedded kit wins over any installed copy, a PROVENANCE dict (kit version, git
commit, dirty flag, a hash of the embedded sources, task, profile, configuration), and then the task's
`kernels/<task>/main.py` verbatim. Nothing else goes in: no environment variable, no credential, no data. The
same checkout gives byte-identical files (no timestamps, no absolute paths).

Configuration comes from environment (or make) variables; `SETTINGS` lists them with their defaults.
`run_local_cli` runs the exact bundled script with `python -I` on CPU in a Kaggle-like folder layout.
This module stays TensorFlow-free at import: the CLI imports it to parse and dispatch.
"""

from __future__ import annotations

import ast
import dataclasses
import hashlib
import importlib
import json
import os
import pprint
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from an2dl_kit import __version__
from an2dl_kit.errors import KitError
from an2dl_kit.files import write_json, write_text

TASKS = ("cells", "mars")
KIT_PACKAGE = "an2dl_kit"
KERNELS_DIR = "kernels"
SCRIPT_NAME = "kernel.py"
METADATA_NAME = "kernel-metadata.json"
USERNAME_PLACEHOLDER = "USERNAME"
# Tracebacks, `inspect` and tf.function's autograph see embedded modules under this made-up folder.
VIRTUAL_ROOT = "an2dl-kit-bundle/"
SHOWN_INPUTS = 10  # input files the kernel banner lists
RUN_LOCAL_DIR = Path("build/run-local")
RUN_LOCAL_MARKER = ".an2dl-run-local"
# Kaggle mounts competition data as /kaggle/input/<competition slug>/; datasets as /kaggle/input/<slug>/.
LOCAL_INPUT_SLUG = {"cells": "an2dl-cells", "mars": "an-2-dl-2024-2025-homework-2"}
MIN_SECRET_LENGTH = 8

# name -> (default, meaning). Read from the environment; an empty value means the default.
SETTINGS = {
    "KAGGLE_USERNAME": ("", "owner of the kernel (default: `username` in kaggle.json)"),
    "CELLS_COMPETITION": ("", "Kaggle competition attached to the cells kernel and submitted to "
                              "(none by default: the cells challenge was scored on Codabench)"),
    "MARS_COMPETITION": ("an-2-dl-2024-2025-homework-2", "Kaggle competition of the Mars challenge"),
    "CELLS_DATASETS": ("", "datasets attached to the cells kernel, `owner/slug` separated by commas"),
    "MARS_DATASETS": ("", "datasets attached to the Mars kernel, e.g. offline weights"),
    "CELLS_TEST_ROWS": ("", "rows a cells submission must have (empty: not checked)"),
    "MARS_TEST_ROWS": ("10022", "rows a Mars submission must have (the course test set)"),
    "ACCELERATOR": ("NvidiaTeslaT4", "Kaggle machine shape (NvidiaTeslaT4 = GPU T4 x2); `none` for CPU"),
    "INTERNET": ("true", "kernel internet access; false needs the weights in an attached dataset"),
}
TRUE_WORDS, FALSE_WORDS = ("1", "true", "yes", "on"), ("0", "false", "no", "off")
SOURCE_RE = re.compile(r"^[A-Za-z0-9_-]+/[A-Za-z0-9_.-]+$")


def setting(name: str, environ: Mapping[str, str] | None = None) -> str:
    """The value of a configuration variable, or its default when unset or empty."""
    value = (os.environ if environ is None else environ).get(name, "").strip()
    return value or SETTINGS[name][0]


# ---- configuration ----------------------------------------------------------------------------------------
@dataclass(frozen=True)
class KernelConfig:
    """Where a task's kernel runs and what it is attached to; recorded in the provenance."""

    task: str
    competition: str  # "" when the task has no Kaggle competition
    datasets: tuple[str, ...]
    accelerator: str  # a Kaggle machine shape, or "none"
    internet: bool
    test_rows: int | None

    def as_dict(self) -> dict:
        return {**dataclasses.asdict(self), "datasets": list(self.datasets)}


def kernel_config(task: str, environ: Mapping[str, str] | None = None) -> KernelConfig:
    prefix = task.upper()
    datasets = tuple(s for s in re.split(r"[,\s]+", setting(f"{prefix}_DATASETS", environ)) if s)
    for source in datasets:
        if not SOURCE_RE.match(source):
            raise KitError(f"{prefix}_DATASETS: {source!r} is not an `owner/slug` dataset name")
    internet = setting("INTERNET", environ).lower()
    if internet not in TRUE_WORDS + FALSE_WORDS:
        raise KitError(f"INTERNET: {internet!r} is not one of {', '.join(TRUE_WORDS + FALSE_WORDS)}")
    rows = setting(f"{prefix}_TEST_ROWS", environ)
    if rows and not rows.isdigit():
        raise KitError(f"{prefix}_TEST_ROWS: {rows!r} is not a row count")
    return KernelConfig(task=task, competition=setting(f"{prefix}_COMPETITION", environ), datasets=datasets,
                        accelerator=setting("ACCELERATOR", environ), internet=internet in TRUE_WORDS,
                        test_rows=int(rows) if rows else None)


def kaggle_config_path(environ: Mapping[str, str] | None = None) -> Path:
    """kaggle.json where the kaggle client looks for it: $KAGGLE_CONFIG_DIR, ~/.kaggle, ~/.config/kaggle."""
    environ = os.environ if environ is None else environ
    if environ.get("KAGGLE_CONFIG_DIR"):
        return Path(environ["KAGGLE_CONFIG_DIR"]) / "kaggle.json"
    legacy = Path(environ.get("HOME", "~")).expanduser() / ".kaggle"
    if legacy.exists() or not sys.platform.startswith("linux"):
        return legacy / "kaggle.json"
    xdg = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".config")
    return Path(xdg) / "kaggle" / "kaggle.json"


def _kaggle_json(environ: Mapping[str, str] | None = None) -> dict:
    try:
        data = json.loads(kaggle_config_path(environ).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def kaggle_username(environ: Mapping[str, str] | None = None) -> str | None:
    """$KAGGLE_USERNAME, else the `username` of kaggle.json, else None. Never reads the key."""
    return setting("KAGGLE_USERNAME", environ) or _kaggle_json(environ).get("username") or None


def credential_values(environ: Mapping[str, str] | None = None) -> list[str]:
    """Every Kaggle secret this machine holds, so that writers can refuse and loggers can redact them."""
    environ = os.environ if environ is None else environ
    values = [environ.get("KAGGLE_KEY", ""), environ.get("KAGGLE_API_TOKEN", ""),
              str(_kaggle_json(environ).get("key", ""))]
    home = Path(environ.get("HOME", "~")).expanduser()
    for token_file in (environ.get("KAGGLE_API_TOKEN", ""), home / ".kaggle" / "access_token"):
        try:
            values.append(Path(token_file).read_text().strip() if token_file else "")
        except OSError:
            pass
    return sorted({v for v in values if len(v) >= MIN_SECRET_LENGTH})


def check_no_credentials(text: str, where: str, environ: Mapping[str, str] | None = None) -> None:
    if any(secret in text for secret in credential_values(environ)):
        raise KitError(f"{where}: contains a Kaggle credential value; refusing to write it")


# ---- provenance -------------------------------------------------------------------------------------------
def repo_root() -> Path:
    """The checkout this module lives in; bundling needs its `kernels/` folder."""
    root = Path(__file__).resolve().parents[1]
    if not (root / KERNELS_DIR).is_dir():
        raise KitError(f"{root}: no {KERNELS_DIR}/ folder; bundling needs a checkout of an2dl-kit")
    return root


def kit_sources(root: Path) -> dict[str, str]:
    """Every `an2dl_kit/**/*.py` of the checkout: relative POSIX path -> text, in path order."""
    paths = sorted((root / KIT_PACKAGE).rglob("*.py"), key=lambda p: p.relative_to(root).as_posix())
    return {p.relative_to(root).as_posix(): p.read_text(encoding="utf-8")
            for p in paths if "__pycache__" not in p.parts}


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
    digest = hashlib.sha256()
    for path in sorted(sources):
        digest.update(path.encode() + b"\0" + sources[path].encode() + b"\0")
    return digest.hexdigest()


def profile_config(task: str, profile: str) -> dict:
    """The fields of the task's profile, from `an2dl_kit.tasks.<task>.PROFILES` (imports no TensorFlow)."""
    try:
        chosen = importlib.import_module(f"{KIT_PACKAGE}.tasks.{task}").PROFILES[profile]
    except (ImportError, AttributeError, KeyError) as error:
        raise KitError(f"{KIT_PACKAGE}/tasks/{task}.py: no profile {profile!r} "
                       f"({type(error).__name__}: {error})") from None
    return dataclasses.asdict(chosen) if dataclasses.is_dataclass(chosen) else dict(vars(chosen))


def provenance(task: str, profile: str, config: KernelConfig, sources: Mapping[str, str],
               commit: str | None, dirty: bool) -> dict:
    """What a kernel prints first and `run` records in metrics.json: enough to rebuild it exactly.

    `config` is the profile's fields (as metrics.json's own `config`), `kernel` where the kernel runs.
    """
    return {"kit": "an2dl-kit", "version": __version__, "commit": commit, "dirty": dirty,
            "sources_sha256": sources_digest(sources), "task": task, "profile": profile,
            "config": profile_config(task, profile), "kernel": config.as_dict()}


# ---- the script -------------------------------------------------------------------------------------------
HEADER = """\
# an2dl-kit kernel: {task} challenge, {profile} profile. Generated by `an2dl bundle`; do not edit here,
# change the kit and bundle again. Kit {version}, commit {commit}{dirty}, sources sha256 {digest}.
#
# The kit's modules follow as source text, one raw string each, and are imported from memory by the hook
# below, so this one file runs on a bare Kaggle image: no pip install, no repository. Inputs are searched
# under $AN2DL_INPUT (default /kaggle/input); outputs go to $AN2DL_OUTPUT (default /kaggle/working).
"""

# The hook, as written into every kernel. No docstrings here: this text sits inside the bundle verbatim.
BOOTSTRAP = """
class EmbeddedKit(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    # Imports an2dl_kit from KIT_SOURCES. It sits first on sys.meta_path, so an installed an2dl_kit never
    # replaces the code this kernel was built from. Every source goes into linecache, so tracebacks,
    # `inspect` and tf.function's autograph see the real lines.

    def __init__(self, sources):
        # Each literal opens with a newline so that its text starts on a line of its own: drop it.
        self.sources = {path: text[1:] for path, text in sources.items()}
        self.modules = {}  # module name -> (path, is_package)
        for path in self.sources:
            parts = path[:-len(".py")].split("/")
            for depth in range(1, len(parts)):
                self.modules[".".join(parts[:depth])] = ("/".join(parts[:depth]) + "/__init__.py", True)
        for path in self.sources:
            parts = path[:-len(".py")].split("/")
            if parts[-1] != "__init__":
                self.modules[".".join(parts)] = (path, False)

    def find_spec(self, fullname, path=None, target=None):
        if fullname not in self.modules:
            return None
        path, is_package = self.modules[fullname]
        spec = importlib.util.spec_from_loader(fullname, self, origin=VIRTUAL_ROOT + path,
                                               is_package=is_package)
        spec.has_location = True
        return spec

    def create_module(self, spec):
        return None

    def get_source(self, fullname):
        return self.sources.get(self.modules[fullname][0], "")

    def exec_module(self, module):
        origin = module.__spec__.origin
        source = self.get_source(module.__name__)
        linecache.cache[origin] = (len(source), None, source.splitlines(True), origin)
        exec(compile(source, origin, "exec"), module.__dict__)


for _name in [name for name in sys.modules if name.split(".")[0] == KIT_PACKAGE]:
    del sys.modules[_name]
sys.meta_path.insert(0, EmbeddedKit(KIT_SOURCES))
"""


def _literal(path: str, text: str) -> str:
    """A raw string literal holding "\\n" + text, checked to read back exactly."""
    for quotes in ("'" * 3, '"' * 3):
        literal = f"r{quotes}\n{text}{quotes}"
        try:
            if quotes not in text and ast.literal_eval(literal) == "\n" + text:
                return literal
        except (SyntaxError, ValueError):
            pass
    raise KitError(f"{path}: cannot be embedded as a raw string; it must not contain three single quotes "
                   "(use triple double quotes for docstrings) or end with a backslash")


def render_script(task: str, main_path: str, main_source: str, sources: Mapping[str, str],
                  prov: Mapping) -> str:
    """The whole kernel script. Pure: the same inputs always give the same text."""
    if re.search(r"^from __future__ import", main_source, re.MULTILINE):
        raise KitError(f"{main_path}: `from __future__` imports are not allowed in a kernel main file "
                       "(it is appended below the embedded kit, not at the top of the script)")
    header = HEADER.format(task=task, profile=prov["profile"], version=prov["version"],
                           commit=(prov["commit"] or "none")[:12], dirty=" (dirty)" if prov["dirty"] else "",
                           digest=prov["sources_sha256"][:16])
    modules = "".join(f"    {path!r}: {_literal(path, sources[path])},\n" for path in sorted(sources))
    return (
        header
        + "\nimport importlib.abc\nimport importlib.util\nimport linecache\nimport sys\n\n"
        + f"KIT_PACKAGE = {KIT_PACKAGE!r}\nVIRTUAL_ROOT = {VIRTUAL_ROOT!r}\n"
        + f"PROVENANCE = {pprint.pformat(dict(prov), sort_dicts=True, width=110)}\n\n"
        + f"KIT_SOURCES = {{\n{modules}}}\n\n"
        + BOOTSTRAP
        + f"\n\n# ---- {main_path} " + "-" * max(0, 100 - len(main_path)) + "\n"
        + main_source
    )


def load_template(root: Path, task: str) -> dict:
    path = root / KERNELS_DIR / task / METADATA_NAME
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as error:
        raise KitError(f"{path}: cannot read the metadata template ({error})") from None


def render_metadata(template: Mapping, config: KernelConfig, username: str | None) -> dict:
    """kernel-metadata.json for the kaggle client: the template with the owner, accelerator and sources."""
    from slugify import slugify  # the kaggle client's own slug rule (python-slugify, a kaggle dependency)

    slug = str(template["id"]).split("/")[-1]
    if slugify(template["title"]) != slug:
        raise KitError(f"{config.task} metadata template: title {template['title']!r} slugifies to "
                       f"{slugify(template['title'])!r}, not to the id's slug {slug!r}")
    meta = dict(template)
    meta["id"] = f"{username or USERNAME_PLACEHOLDER}/{slug}"
    shape = config.accelerator
    meta["enable_gpu"] = shape.lower() not in ("none", "cpu") and not shape.lower().startswith("tpu")
    meta["enable_tpu"] = shape.lower().startswith("tpu")
    meta["machine_shape"] = shape if meta["enable_gpu"] or meta["enable_tpu"] else None
    if meta["machine_shape"] is None:
        del meta["machine_shape"]
    meta["enable_internet"] = config.internet
    meta["competition_sources"] = [config.competition] if config.competition else []
    meta["dataset_sources"] = list(config.datasets)
    return meta


@dataclass(frozen=True)
class Bundle:
    script: Path
    metadata: Path
    provenance: dict
    ref: str  # owner/slug

    @property
    def folder(self) -> Path:
        return self.script.parent


def write_bundle(task: str, profile: str, out: Path, *, config: KernelConfig | None = None,
                 username: str | None = None, environ: Mapping[str, str] | None = None) -> Bundle:
    """Write `<out>/<task>/kernel.py` and `kernel-metadata.json`; refuse if either holds a credential."""
    if task not in TASKS:
        raise KitError(f"{task}: unknown task, expected one of {', '.join(TASKS)}")
    root = repo_root()
    config = config or kernel_config(task, environ)
    main_path = f"{KERNELS_DIR}/{task}/main.py"
    main_source = (root / main_path).read_text(encoding="utf-8")
    sources = kit_sources(root)
    commit, dirty = git_state(root)
    prov = provenance(task, profile, config, {**sources, main_path: main_source}, commit, dirty)
    script = render_script(task, main_path, main_source, sources, prov)
    meta = render_metadata(load_template(root, task), config, username or kaggle_username(environ))
    meta_text = json.dumps(meta, indent=2)
    folder = Path(out) / task
    check_no_credentials(script, str(folder / SCRIPT_NAME), environ)
    check_no_credentials(meta_text, str(folder / METADATA_NAME), environ)
    write_text(folder / SCRIPT_NAME, script)
    write_json(folder / METADATA_NAME, meta)
    return Bundle(folder / SCRIPT_NAME, folder / METADATA_NAME, prov, meta["id"])


def describe_bundle(bundle: Bundle) -> list[str]:
    data = bundle.script.read_bytes()
    prov = bundle.provenance
    commit = (prov["commit"] or "none")[:12] + (" dirty" if prov["dirty"] else "")
    digest = hashlib.sha256(data).hexdigest()[:16]
    lines = [f"wrote {bundle.script} ({len(data) / 1024:.0f} KiB, sha256 {digest}; "
             f"kit {prov['version']} commit {commit}, profile {prov['profile']})",
             f"wrote {bundle.metadata} (id {bundle.ref})"]
    if bundle.ref.startswith(USERNAME_PLACEHOLDER + "/"):
        lines.append("note: no Kaggle username found (set KAGGLE_USERNAME or create kaggle.json); "
                     f"the id keeps the {USERNAME_PLACEHOLDER} placeholder")
    config = prov["kernel"]
    if not config["competition"] and not config["datasets"]:
        lines.append(f"note: the {prov['task']} kernel has no data source; set "
                     f"{prov['task'].upper()}_COMPETITION or {prov['task'].upper()}_DATASETS before pushing")
    return lines


def cli(args) -> int:
    """`an2dl bundle --task T --profile P [--out DIR]`."""
    bundle = write_bundle(args.task, args.profile, args.out)
    for line in describe_bundle(bundle):
        print(line)
    return 0


# ---- inside the kernel ------------------------------------------------------------------------------------
def kernel_provenance(task: str, baked: Mapping | None = None) -> dict:
    """The bundle's PROVENANCE, or for an unbundled run (main.py from a checkout) the checkout's own."""
    if baked:
        return dict(baked)
    root = Path(__file__).resolve().parents[1]
    sources = kit_sources(root)
    commit, dirty = git_state(root)
    profile = os.environ.get("AN2DL_PROFILE", "local")
    return provenance(task, profile, kernel_config(task), sources, commit, dirty)


def _gpu_lines() -> list[str]:
    """GPUs as the driver lists them, without importing TensorFlow."""
    if not shutil.which("nvidia-smi"):
        return []
    try:
        result = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
                                capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [line.strip() for line in result.stdout.splitlines() if line.strip()]


def environment_lines(prov: Mapping, input_dir: Path, output_dir: Path) -> Iterator[str]:
    """The banner a kernel prints first: provenance, then library versions, GPUs, inputs and output."""
    yield (f"an2dl-kit {prov['version']} | commit {prov['commit'] or 'none'}"
           f"{' (dirty)' if prov['dirty'] else ''} | task {prov['task']} | profile {prov['profile']}")
    yield "kernel: " + ", ".join(f"{k}={v}" for k, v in prov["kernel"].items() if k != "task")
    yield "config: " + ", ".join(f"{k}={v}" for k, v in prov["config"].items())
    yield f"sources sha256: {prov['sources_sha256']}"
    from an2dl_kit.runtime import library_versions

    yield "versions: " + ", ".join(f"{k} {v}" for k, v in library_versions().items())
    gpus = _gpu_lines()
    yield f"GPUs ({len(gpus)}): " + ("; ".join(gpus) if gpus else "none, training runs on the CPU")
    files = _some_files(Path(input_dir))
    shown = ", ".join(f"{p.relative_to(input_dir)} ({p.stat().st_size / 2**20:.1f} MiB)"
                      for p in files[:SHOWN_INPUTS])
    more = f" and {len(files) - SHOWN_INPUTS} more" if len(files) > SHOWN_INPUTS else ""
    yield f"input {input_dir}: {shown or 'no files'}{more}"
    yield f"output {output_dir}"


def _some_files(root: Path, depth: int = 4, limit: int = 1000) -> list[Path]:
    """Up to `limit` files under root, sorted, at most `depth` folders down: /kaggle/input may hold
    datasets of many thousand images, and the banner must not wait for them."""
    found: list[Path] = []
    for folder, dirs, files in os.walk(root, followlinks=True):
        level = len(Path(folder).relative_to(root).parts)
        dirs[:] = sorted(dirs) if level < depth else []
        found.extend(Path(folder) / name for name in sorted(files))
        if len(found) >= limit:
            break
    return sorted(found)


# ---- run the bundled script here --------------------------------------------------------------------------
def _input_files(task: str, data: Path | None) -> list[Path]:
    from an2dl_kit.data.discover import find_inputs

    inputs = find_inputs(data)
    inputs.require(task)
    files = [inputs.cells_train, inputs.cells_test] if task == "cells" else [inputs.mars]
    return [f.resolve() for f in files if f is not None]


def _prepare_output(out: Path) -> None:
    """Empty a folder an earlier run-local made; refuse to write into any other non-empty folder."""
    if out.is_dir() and any(out.iterdir()):
        if not (out / RUN_LOCAL_MARKER).exists():
            raise KitError(f"{out}: not empty and not made by `an2dl run-local`; choose another --out")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_LOCAL_MARKER).write_text("outputs of `an2dl run-local`; emptied by the next run\n")


def kernel_env(input_dir: Path, output_dir: Path, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment a local kernel run gets: no Kaggle settings or credentials, no GPU, the folders."""
    env = {k: v for k, v in (os.environ if environ is None else environ).items()
           if not k.startswith("KAGGLE_")}
    env.update(AN2DL_INPUT=str(input_dir), AN2DL_OUTPUT=str(output_dir), CUDA_VISIBLE_DEVICES="")
    return env


def run_local(task: str, profile: str, data: Path | None, out: Path,
              python: str = sys.executable, budget_s: float | None = None) -> list[Path]:
    """Bundle, then run the script with `python -I` on CPU; return the files it wrote under `out`.

    `budget_s` overrides the profile's training budget (through $AN2DL_BUDGET).
    """
    out = Path(out).resolve()
    files = _input_files(task, data)
    _prepare_output(out)
    with tempfile.TemporaryDirectory(prefix=f"an2dl-{task}-") as scratch:
        scratch = Path(scratch)
        bundle = write_bundle(task, profile, scratch / "kernel")
        input_dir = scratch / "input"
        (input_dir / LOCAL_INPUT_SLUG[task]).mkdir(parents=True)
        for file in files:
            (input_dir / LOCAL_INPUT_SLUG[task] / file.name).symlink_to(file)
        for line in describe_bundle(bundle)[:1]:
            print(line, flush=True)
        env = kernel_env(input_dir, out)
        if budget_s is not None:
            env["AN2DL_BUDGET"] = str(budget_s)
        result = subprocess.run([python, "-I", "-u", str(bundle.script)], cwd=out, env=env)
    if result.returncode != 0:
        raise KitError(f"{task} kernel: exited with status {result.returncode} (outputs so far in {out})")
    return sorted(p for p in out.rglob("*") if p.is_file() and p.name != RUN_LOCAL_MARKER)


def run_local_cli(args) -> int:
    """`an2dl run-local --task T --profile P [--data D] [--out O]`."""
    out = args.out or RUN_LOCAL_DIR / args.task
    written = run_local(args.task, args.profile, args.data, out)
    print(f"{args.task} kernel finished; {len(written)} files in {out}:")
    for path in written:
        print(f"  {path.relative_to(Path(out).resolve())} ({path.stat().st_size / 1024:.1f} KiB)")
    return 0
