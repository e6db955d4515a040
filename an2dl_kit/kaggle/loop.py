"""The Kaggle loop: push a bundled kernel, wait for it, download its outputs, submit a leaderboard CSV.

Every request goes through `KaggleSession` (`session.py`: the official `kaggle` package, every reply
checked, one-line errors without credentials). Files on disk are never left half-written: downloads go to a
hidden `.part` file or folder that is renamed once complete, and a run's outputs never replace an earlier
run's.

Variants: `--name N` pushes, polls, downloads and submits the task's kernel `<slug>-N` instead of the default
one, so variants run side by side (`variants.py`); `--set FIELD=VALUE` overrides are validated before any file
or request, baked into the bundle, and recorded with the push, in the ledger row and in the submission message.

Layout (relative to the working directory, normally the checkout): `build/kernels/<task>[-<name>]/` (the pushed
bundle), `submissions/<task>/[<name>/]last_push.json` (the variant's last push), `.../v<N>/` (outputs of kernel
version N), `submissions/<task>/pushes.jsonl` (every push), `submissions/ledger.csv` (`ledger.py`).
Polling: `AN2DL_POLL_SECONDS` (first interval, default 10, growing x1.5 up to 60) and `AN2DL_WAIT_TIMEOUT`
(seconds, default 13 h: Kaggle stops a session at 12 h).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from an2dl_kit import __version__
from an2dl_kit.errors import KaggleError, KitError
from an2dl_kit.files import write_json
from an2dl_kit.kaggle.bundle import USERNAME_PLACEHOLDER, describe_bundle, load_template, write_bundle
from an2dl_kit.kaggle.ledger import append_ledger
from an2dl_kit.kaggle.provenance import canonical_overrides, git_state, repo_root
from an2dl_kit.kaggle.quota import check_push, estimate_hours
from an2dl_kit.kaggle.session import CHUNK_BYTES, KaggleSession
from an2dl_kit.kaggle.settings import kernel_config, setting
from an2dl_kit.kaggle.variants import (
    SUBMISSIONS_DIR,
    check_name,
    format_overrides,
    push_record_path,
    read_pushes,
    record_push,
    shown_name,
    variant_dir,
)

BUILD_DIR = Path("build/kernels")
SUBMISSION_FILE = "submission.csv"
CODABENCH_ZIP = "submission.zip"  # the cells kernel's Codabench submission (tasks/cells.py)
TERMINAL = ("COMPLETE", "ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
POLL_FIRST_S, POLL_GROWTH, POLL_MAX_S = 10.0, 1.5, 60.0
WAIT_TIMEOUT_S = 13 * 3600.0
HEARTBEAT_S = 300.0  # a status line at least this often while waiting, even without a change
LOG_TAIL_LINES = 30


# ---- helpers ----------------------------------------------------------------------------------------------
def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def wait_for(poll: Callable[[], tuple[str, str | None]], *, first_s: float, timeout_s: float,
             what: str = "kernel", max_s: float = POLL_MAX_S, growth: float = POLL_GROWTH,
             report: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic, terminal: tuple[str, ...] = TERMINAL,
             again: str = "`make wait` again") -> tuple[str, str | None, float]:
    """Poll until a `terminal` status, with growing intervals; report changes with the elapsed time.

    Returns (status, failure message, seconds waited); raises KaggleError past `timeout_s`, naming `again`,
    the command that resumes the wait.
    """
    start = last_report = clock()
    delay, last = first_s, None
    while True:
        status, failure = poll()
        now = clock()
        if status != last or now - last_report >= HEARTBEAT_S:
            report(f"[{_hms(now - start)}] {what}: {status}")
            last, last_report = status, now
        if status in terminal:
            return status, failure, now - start
        if now - start + delay > timeout_s:
            raise KaggleError(f"{what}: still {status} after {_hms(now - start)} (AN2DL_WAIT_TIMEOUT "
                              f"{timeout_s:.0f} s); {again} to keep waiting")
        sleep(delay)
        delay = min(delay * growth, max(max_s, first_s))


def log_text(log: str) -> str:
    """A kernel log as text: Kaggle sends a JSON list of {stream_name, time, data} entries."""
    try:
        entries = json.loads(log)
    except ValueError:
        return log
    if not isinstance(entries, list):
        return log
    return "".join(str(e.get("data", "")) for e in entries if isinstance(e, dict))


def log_tail(log: str, lines: int = LOG_TAIL_LINES) -> list[str]:
    return log_text(log).rstrip("\n").splitlines()[-lines:] if log else []


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name, "").strip()
    try:
        return float(value) if value else default
    except ValueError:
        raise KitError(f"{name}: {value!r} is not a number of seconds") from None




def _kernel(task: str, name: str | None, session: KaggleSession) -> tuple[str, int | None]:
    """(owner/slug, version) of a variant's kernel: its last push if recorded, else from the template."""
    path = push_record_path(task, name)
    if path.is_file():
        record = json.loads(path.read_text())
        return record["ref"], record.get("version")
    slug = str(load_template(repo_root(), task)["id"]).split("/")[-1]
    return f"{session.username}/{slug}{f'-{name}' if name else ''}", None


def _variant_flags(task: str, name: str | None) -> str:
    """The make variables that address a variant, for the `next:` hints."""
    return f"TASK={task}{f' NAME={name}' if name else ''}"


def _print_failure(session: KaggleSession, ref: str, failure: str | None) -> None:
    print(f"failure message: {session.redact(failure or '(none given)')}")
    try:
        _, log = session.outputs(ref)
    except KaggleError as error:
        print(f"(no kernel log: {error})")
        return
    tail = log_tail(log)
    print(f"---- last {len(tail)} lines of the kernel log ----")
    for line in tail:
        print(session.redact(line))


def _safe_join(root: Path, name: str) -> Path:
    parts = PurePosixPath(name).parts
    if not parts or PurePosixPath(name).is_absolute() or ".." in parts or "\\" in name:
        raise KaggleError(f"kernel output {name!r}: not a relative file name; refusing to write it")
    return root.joinpath(*parts)


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK_BYTES), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _version_dirs(task: str, name: str | None) -> list[tuple[int, Path]]:
    found = [(int(p.name[1:]), p) for p in variant_dir(task, name).glob("v*")
             if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found)


def _variant_of(task: str, path: Path) -> tuple[str | None, int | None]:
    """(variant name, N) when `path` lies in an output folder submissions/<task>/[<name>/]v<N>/."""
    folder = path.resolve().parent
    if not re.fullmatch(r"v\d+", folder.name):
        return None, None
    owner = folder.parent
    name = owner.name if owner.parent.name == task and owner.parent.parent.name == SUBMISSIONS_DIR.name else None
    return name, int(folder.name[1:])


def _run_details(csv_path: Path, task: str, name: str | None, version: int | None) -> tuple[str, str, dict]:
    """(`an2dl-kit <version> <commit>[+dirty]`, profile, overrides) of the run that wrote the CSV: from the
    metrics.json beside it, else the push history, else the checkout."""
    prov, profile, overrides = {}, "", None
    with contextlib.suppress(OSError, ValueError, AttributeError):
        data = json.loads((csv_path.parent / "metrics.json").read_text())
        prov, profile, overrides = data.get("provenance") or {}, data.get("profile") or "", data.get("overrides")
    if overrides is None:
        pushed = [r for r in read_pushes(task) if (r.get("name") or None) == name and r.get("version") == version]
        overrides = pushed[-1].get("overrides") if pushed and version else {}
    if prov.get("version"):
        kit, commit, dirty = prov["version"], prov.get("commit"), prov.get("dirty")
    else:
        kit, (commit, dirty) = __version__, git_state(repo_root())
    return f"an2dl-kit {kit} {(commit or 'uncommitted')[:12]}{'+dirty' if dirty else ''}", profile, overrides or {}


# ---- commands ---------------------------------------------------------------------------------------------
def push_cli(args) -> int:
    """`an2dl push --task T [--profile P] [--name N] [--set FIELD=VALUE ...] [--force]`.

    Order matters: the name, the overrides and the settings are checked before any file is written or any
    request sent; then the quota (refused before SaveKernel when the run may not fit); then bundle and push.
    """
    name = check_name(args.name)
    overrides = canonical_overrides(args.task, args.profile, args.set or None)
    config = source_config(args.task)
    estimate, kind = estimate_hours(args.task, args.profile, overrides, config.accelerator)
    session = KaggleSession.connect()
    check_push(session, estimate, kind, args.force)
    push_variant(session, args.task, args.profile, name, overrides, config)
    print(f"next: make wait {_variant_flags(args.task, name)}, then make output-{args.task}"
          f"{f' NAME={name}' if name else ''}")
    return 0


def source_config(task: str):
    """The task's kernel settings with the dataset `upload-data` recorded when none is set, refused without a
    data source (before any request)."""
    from an2dl_kit.kaggle.datasets import with_recorded_dataset  # it imports this module

    config = with_recorded_dataset(kernel_config(task))
    if not config.competition and not config.datasets:
        prefix = task.upper()
        raise KitError(f"{task} kernel: no data source; run `make upload-data TASK={task} DATA=DIR` "
                       f"(a private dataset of the task's files), or set {prefix}_COMPETITION or {prefix}_DATASETS")
    return config


def push_variant(session: KaggleSession, task: str, profile: str, name: str | None, overrides: dict,
                 config) -> dict:
    """Bundle and push one variant's kernel, then record the push (`last_push.json`, `pushes.jsonl`)."""
    bundle = write_bundle(task, profile, BUILD_DIR, config=config, username=session.username,
                          overrides=overrides, name=name)
    if bundle.ref.startswith(USERNAME_PLACEHOLDER + "/"):
        raise KaggleError("Kaggle username: unknown; set KAGGLE_USERNAME")
    for line in describe_bundle(bundle)[:2]:
        print(line)
    if bundle.provenance["dirty"]:
        print("note: the kit has uncommitted changes; the kernel records dirty=True")
    info = session.push(bundle.folder, bundle.ref)
    record = {**info, "task": task, "name": name or "", "profile": profile, "overrides": overrides,
              "commit": bundle.provenance["commit"], "dirty": bundle.provenance["dirty"],
              "pushed_at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json(push_record_path(task, name), record)
    record_push(task, record)
    print(f"pushed {info['ref']} version {info['version']}: {info['url']}")
    return record


def status_cli(args) -> int:
    """`an2dl status --task T [--name N]`: one status line; on ERROR the failure message and the log's tail."""
    session = KaggleSession.connect()
    ref, version = _kernel(args.task, check_name(args.name), session)
    status, failure = session.status(ref)
    print(f"{ref}{f' version {version}' if version else ''}: {status}")
    if status == "ERROR":
        _print_failure(session, ref, failure)
    return 1 if status in TERMINAL and status != "COMPLETE" else 0


def wait_cli(args) -> int:
    """`an2dl wait --task T [--name N]`: poll with backoff until COMPLETE (exit 0) or ERROR/cancelled (exit 1)."""
    name = check_name(args.name)
    session = KaggleSession.connect()
    ref, version = _kernel(args.task, name, session)
    what = f"{ref}{f' version {version}' if version else ''}"
    status, failure, elapsed = wait_for(
        lambda: session.status(ref), what=what, first_s=_env_float("AN2DL_POLL_SECONDS", POLL_FIRST_S),
        timeout_s=_env_float("AN2DL_WAIT_TIMEOUT", WAIT_TIMEOUT_S),
        report=lambda line: print(line, flush=True))
    if status == "COMPLETE":
        print(f"{what} completed after {_hms(elapsed)} of waiting; next: make output-{args.task}"
              f"{f' NAME={name}' if name else ''}")
        return 0
    if status == "ERROR":
        _print_failure(session, ref, failure)
    return 1


def _download_outputs(session: KaggleSession, ref: str, target: Path) -> dict[str, int]:
    """Every output file and the log into a hidden folder, renamed onto `target` once all are complete."""
    files, log = session.outputs(ref)
    staging = target.parent / f".{target.name}.part"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        sizes = {name: session.download(url, _safe_join(staging, name)) for name, url in files}
        if log:  # what `kaggle kernels output` also saves
            slug = ref.split("/")[1]
            (staging / f"{slug}.log").write_text(log, encoding="utf-8")
            sizes[f"{slug}.log"] = len(log.encode())
        os.replace(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sizes


def output_cli(args) -> int:
    """`an2dl output --task T [--name N]`: download the pushed version's outputs into .../v<N>/."""
    name = check_name(args.name)
    session = KaggleSession.connect()
    ref, version = _kernel(args.task, name, session)
    if version is None:
        raise KaggleError(f"{push_record_path(args.task, name)}: no push recorded, so the kernel version is "
                          f"unknown; push with `make push-{args.task}`, or fetch by hand: "
                          f"kaggle kernels output {ref} -p {variant_dir(args.task, name)}/DIR")
    target = variant_dir(args.task, name) / f"v{version}"
    if target.exists():
        raise KaggleError(f"{target}: already downloaded; an earlier run's outputs are never replaced "
                          "(delete the folder to download again)")
    status, _ = session.status(ref)
    if status not in TERMINAL:
        raise KaggleError(f"{ref} version {version}: still {status}; `make wait {_variant_flags(args.task, name)}` "
                          "first")
    if status != "COMPLETE":
        print(f"an2dl: warning: {ref} version {version} ended {status}; downloading what it left",
              file=sys.stderr)
    sizes = _download_outputs(session, ref, target)
    print(f"downloaded {len(sizes)} files of {ref} version {version} into {target}:")
    for file_name, size in sorted(sizes.items()):
        print(f"  {file_name} ({size / 1024:.1f} KiB)")
    if SUBMISSION_FILE in sizes and setting(f"{args.task.upper()}_COMPETITION"):
        print(f"next: make submit {_variant_flags(args.task, name)}  (submits {target / SUBMISSION_FILE})")
    elif CODABENCH_ZIP in sizes:
        print(f"next: upload {target / CODABENCH_ZIP} on the challenge's Codabench page")
    return 0


def _default_file(task: str, name: str | None) -> Path:
    for _, folder in reversed(_version_dirs(task, name)):
        if (folder / SUBMISSION_FILE).is_file():
            return folder / SUBMISSION_FILE
    raise KitError(f"{variant_dir(task, name)}: no downloaded {SUBMISSION_FILE}; run "
                   f"`make output-{task}{f' NAME={name}' if name else ''}` or pass FILE=path/to/{SUBMISSION_FILE}")


def _oof_text(csv_path: Path) -> str:
    """`OOF miou 0.7012 over 5 of 5 folds` for a fold ensemble's CSV (its metrics.json's `oof`); else ""."""
    with contextlib.suppress(OSError, ValueError, AttributeError, KeyError, TypeError):
        oof = json.loads((csv_path.parent / "metrics.json").read_text()).get("oof")
        if oof:
            return f"OOF {oof['score']} {oof['value']:.4f} over {len(oof['present'])} of {oof['folds']} folds"
    return ""


def _submission_id(session: KaggleSession, competition: str, reply: dict, message: str) -> str:
    """The server's id of an accepted submission: from CreateSubmission's reply, else the newest submission
    listed with this message (the reply's `ref` is optional on the wire); "" with a warning if neither."""
    if reply["ref"]:
        return str(reply["ref"])
    for submission in session.submissions(competition):
        if submission.description == message:
            return str(submission.ref)
    print("an2dl: warning: the server gave no submission id; `an2dl scores` cannot match this ledger row",
          file=sys.stderr)
    return ""


def _submission_target(args) -> tuple[Path, str | None, int | None]:
    """(CSV, variant, kernel version): --file or the variant's newest download; a file inside a variant's
    output folder belongs to that variant."""
    name = check_name(args.name)
    path = Path(args.file) if args.file else _default_file(args.task, name)
    if not path.is_file():
        raise KitError(f"{path}: no such file")
    path_name, version = _variant_of(args.task, path)
    if version is not None and args.file and name and path_name != name:
        raise KitError(f"{path}: lies in the outputs of variant {shown_name(path_name)}, not {name}")
    return path, (path_name if version is not None else name), version


def submit_cli(args) -> int:
    """`an2dl submit --task T [--name N] [--file F] [--message M]`: validate, submit, record in the ledger."""
    from an2dl_kit.submission import check_submission

    config = kernel_config(args.task)
    if not config.competition:
        raise KitError(f"{args.task}: no Kaggle competition configured; set {args.task.upper()}_COMPETITION "
                       "(the cells challenge itself was scored on Codabench)")
    path, name, version = _submission_target(args)
    summary = check_submission(path, args.task, config.test_rows)  # raises before any request is made
    print(f"checked {summary}")
    tag, profile, overrides = _run_details(path, args.task, name, version)
    default = f"{args.task} {name or 'kernel'} v{version}" if version else path.name
    extras = "; ".join(filter(None, [f"{profile} profile" if profile else "", format_overrides(overrides),
                                     _oof_text(path)]))
    message = f"{args.message or default}{f' ({extras})' if extras else ''} [{tag}]"
    digest = sha256_file(path)
    session = KaggleSession.connect()
    reply = session.submit(config.competition, path, message)
    ledger = append_ledger({
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "task": args.task,
        "competition": config.competition, "file": path.as_posix(), "sha256": digest, "message": message,
        "kernel_version": version or "", "submission": _submission_id(session, config.competition, reply, message),
        "name": name or ""})
    print(f"submitted {path} to {config.competition}: {reply['message']}")
    print(f"  message: {message}")
    print(f"  recorded in {ledger}; scores later: make scores TASK={args.task}")
    return 0
