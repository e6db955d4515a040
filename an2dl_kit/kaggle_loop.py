"""The Kaggle loop: push a bundled kernel, wait for it, download its outputs, submit a leaderboard CSV.

Every request goes through the official `kaggle` package (imported only when a command runs: importing it
authenticates) and every reply is checked, because the kaggle CLI exits 0 on many failures (a push answered
with an `error` field, an upload refused, a submission not accepted). A refused request raises `KaggleError`
with one line naming the request and the server's message; no credential value ever appears in a message or a
log line. Files on disk are never left half-written: downloads go to a hidden `.part` file or folder that is
renamed once complete, and a run's outputs never replace an earlier run's.

Layout (relative to the working directory, normally the checkout): `build/kernels/<task>/` (the pushed
bundle), `submissions/<task>/last_push.json` (ref and version of the last push), `submissions/<task>/v<N>/`
(outputs of kernel version N), `submissions/ledger.csv` (one row per accepted submission).
Polling: `AN2DL_POLL_SECONDS` (first interval, default 10, growing x1.5 up to 60) and `AN2DL_WAIT_TIMEOUT`
(seconds, default 13 h: Kaggle stops a session at 12 h).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
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
from an2dl_kit.bundle import USERNAME_PLACEHOLDER, describe_bundle, load_template, write_bundle
from an2dl_kit.errors import KaggleError, KitError
from an2dl_kit.files import atomic_path, write_json
from an2dl_kit.kaggle_settings import credential_values, kaggle_config_path, kernel_config
from an2dl_kit.provenance import git_state, repo_root

BUILD_DIR = Path("build/kernels")
SUBMISSIONS_DIR = Path("submissions")
LEDGER_NAME = "ledger.csv"
LEDGER_COLUMNS = ("time", "task", "competition", "file", "sha256", "message", "kernel_version", "submission")
PUSH_RECORD = "last_push.json"
SUBMISSION_FILE = "submission.csv"
TERMINAL = ("COMPLETE", "ERROR", "CANCEL_REQUESTED", "CANCEL_ACKNOWLEDGED")
POLL_FIRST_S, POLL_GROWTH, POLL_MAX_S = 10.0, 1.5, 60.0
WAIT_TIMEOUT_S = 13 * 3600.0
HEARTBEAT_S = 300.0  # a status line at least this often while waiting, even without a change
LOG_TAIL_LINES = 30
MAX_OUTPUT_PAGES = 50
HTTP_TIMEOUT_S = (15, 300)  # connect, read
CHUNK_BYTES = 1 << 20


# ---- the requests -----------------------------------------------------------------------------------------
def warn_loose_permissions(path: Path | None = None) -> bool:
    """Warn (stderr) when kaggle.json can be read by other users; return whether it can."""
    path = path or kaggle_config_path()
    try:
        loose = path.is_file() and path.stat().st_mode & 0o077 != 0
    except OSError:
        return False
    if loose:
        print(f"an2dl: warning: {path} is readable by other users; run: chmod 600 {path}", file=sys.stderr)
    return loose


def _http_detail(error) -> str:
    """`HTTP <status>: <server message>` for a requests.HTTPError raised by the kaggle client."""
    response = error.response
    status, detail = (response.status_code if response is not None else "?"), str(error)
    if response is not None:
        try:
            body = response.json()
        except ValueError:
            text = re.sub(r"<[^>]+>", " ", response.text or "").strip()
            detail = text.splitlines()[0][:300] if text else (response.reason or detail)
        else:
            if isinstance(body, dict):
                status = body.get("code", status)
                detail = body.get("message") or body.get("error") or detail
    return f"HTTP {status}: {detail}"


class KaggleSession:
    """The requests the loop makes, one method each, every reply checked; messages are redacted."""

    def __init__(self, api, secrets: list[str]):
        self.api = api
        self.secrets = secrets

    @classmethod
    def connect(cls) -> KaggleSession:
        warn_loose_permissions()
        # Importing kaggle authenticates at once and prints help or its own warnings on stdout: keep them
        # out of the kit's output (the permission warning above covers the one that matters).
        with contextlib.redirect_stdout(io.StringIO()):
            try:
                import kaggle
            except ImportError as error:
                raise KaggleError(f"kaggle package: cannot import it ({error}); run `make test` once "
                                  "to install the dependencies") from None
        api = kaggle.api
        if not api.config_values.get("auth_method") or not api.get_config_value("username"):
            raise KaggleError(
                f"Kaggle credentials: none found; put the kaggle.json of your account's API settings in "
                f"{kaggle_config_path().parent} (chmod 600), or set KAGGLE_USERNAME and KAGGLE_KEY")
        return cls(api, credential_values())

    @property
    def username(self) -> str:
        return self.api.get_config_value("username")

    def redact(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text

    @contextlib.contextmanager
    def _request(self, what: str):
        """Turn any failure of the block into a one-line KaggleError naming `what`."""
        import requests

        try:
            yield
        except KitError as error:
            raise KaggleError(self.redact(str(error))) from None
        except requests.HTTPError as error:
            raise KaggleError(self.redact(f"{what}: {_http_detail(error)}")) from None
        except requests.RequestException as error:
            first = str(error).splitlines()[0] if str(error) else ""
            raise KaggleError(self.redact(f"{what}: {type(error).__name__}: {first}")) from None
        except (ValueError, KeyError, OSError) as error:  # the client's own checks, e.g. of the metadata
            raise KaggleError(self.redact(f"{what}: {error}")) from None

    def push(self, folder: Path, ref: str) -> dict:
        """SaveKernel with the folder's kernel-metadata.json and script; return ref, url and version."""
        with self._request(f"SaveKernel {ref}"):
            reply = self.api.kernels_push(str(folder))
        if reply.error:
            raise KaggleError(self.redact(f"SaveKernel {ref}: {reply.error}"))
        problems = [f"invalid {kind.replace('_', ' ')}: {', '.join(getattr(reply, 'invalid_' + kind))}"
                    for kind in ("competition_sources", "dataset_sources", "kernel_sources", "model_sources",
                                 "tags") if getattr(reply, "invalid_" + kind)]
        if problems:
            raise KaggleError(f"SaveKernel {ref}: version {reply.version_number} saved, but "
                              + "; ".join(problems))
        if not reply.version_number:
            raise KaggleError(f"SaveKernel {ref}: the reply carries no version number")
        return {"ref": ref, "url": reply.url, "version": int(reply.version_number)}

    def status(self, ref: str) -> tuple[str, str | None]:
        """GetKernelSessionStatus: (QUEUED | RUNNING | COMPLETE | ERROR | ..., failure message)."""
        with self._request(f"GetKernelSessionStatus {ref}"):
            reply = self.api.kernels_status(ref)
        return getattr(reply.status, "name", str(reply.status)), reply.failure_message

    def outputs(self, ref: str) -> tuple[list[tuple[str, str]], str]:
        """ListKernelSessionOutput, every page: ([(file name, signed url)], kernel log)."""
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        owner, slug = ref.split("/")
        files, log, token = [], "", None
        for _ in range(MAX_OUTPUT_PAGES):
            with self._request(f"ListKernelSessionOutput {ref}"), self.api.build_kaggle_client() as client:
                request = ApiListKernelSessionOutputRequest()
                request.user_name, request.kernel_slug = owner, slug
                if token:
                    request.page_token = token
                reply = client.kernels.kernels_api_client.list_kernel_session_output(request)
            for item in reply.files or []:
                if not item.file_name or not item.url:
                    raise KaggleError(f"ListKernelSessionOutput {ref}: a file without a name or url")
                files.append((item.file_name, item.url))
            log = log or reply.log or ""
            token = reply.next_page_token
            if not token:
                return files, log
        raise KaggleError(f"ListKernelSessionOutput {ref}: more than {MAX_OUTPUT_PAGES} pages of outputs")

    def download(self, url: str, dest: Path) -> int:
        """GET a signed output URL into dest via a temporary file; return the byte count."""
        import requests

        what = f"download {dest.name} from {url.split('?')[0]}"
        with self._request(what), requests.get(url, stream=True, timeout=HTTP_TIMEOUT_S) as response:
            if response.status_code != 200:
                raise KaggleError(f"{what}: HTTP {response.status_code}")
            expected = response.headers.get("Content-Length")
            size = 0
            with atomic_path(dest) as tmp, open(tmp, "wb") as handle:
                for chunk in response.iter_content(CHUNK_BYTES):
                    handle.write(chunk)
                    size += len(chunk)
                if expected and not response.headers.get("Content-Encoding") and int(expected) != size:
                    raise KaggleError(f"{what}: got {size} of {expected} bytes")
        return size

    def submit(self, competition: str, path: Path, message: str) -> dict:
        """StartSubmissionUpload, PUT the file, CreateSubmission; return the server's ref and message."""
        import requests
        from kagglesdk.competitions.types.competition_api_service import (
            ApiCreateSubmissionRequest,
            ApiStartSubmissionUploadRequest,
        )

        with self.api.build_kaggle_client() as client:
            with self._request(f"StartSubmissionUpload {competition}"):
                start = ApiStartSubmissionUploadRequest()
                start.competition_name, start.file_name = competition, path.name
                start.content_length = path.stat().st_size
                start.last_modified_epoch_seconds = int(path.stat().st_mtime)
                upload = client.competitions.competition_api_client.start_submission_upload(start)
            if not upload.token or not upload.create_url:
                raise KaggleError(f"StartSubmissionUpload {competition}: the reply has no upload URL")
            what = f"upload {path.name}"
            with self._request(what), open(path, "rb") as handle:
                response = requests.put(upload.create_url, data=handle, timeout=HTTP_TIMEOUT_S)
                if response.status_code not in (200, 201):
                    raise KaggleError(f"{what}: HTTP {response.status_code}")
            with self._request(f"CreateSubmission {competition}"):
                create = ApiCreateSubmissionRequest()
                create.competition_name, create.blob_file_tokens = competition, upload.token
                create.submission_description = message
                reply = client.competitions.competition_api_client.create_submission(create)
        if not reply.ref and "success" not in (reply.message or "").lower():
            raise KaggleError(self.redact(f"CreateSubmission {competition}: not accepted: "
                                          f"{reply.message or 'empty reply'}"))
        return {"ref": reply.ref, "message": reply.message}


# ---- helpers ----------------------------------------------------------------------------------------------
def _hms(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def wait_for(poll: Callable[[], tuple[str, str | None]], *, first_s: float, timeout_s: float,
             what: str = "kernel", max_s: float = POLL_MAX_S, growth: float = POLL_GROWTH,
             report: Callable[[str], None] = print, sleep: Callable[[float], None] = time.sleep,
             clock: Callable[[], float] = time.monotonic) -> tuple[str, str | None, float]:
    """Poll until a terminal status, with growing intervals; report changes with the elapsed time.

    Returns (status, failure message, seconds waited); raises KaggleError past `timeout_s`.
    """
    start = last_report = clock()
    delay, last = first_s, None
    while True:
        status, failure = poll()
        now = clock()
        if status != last or now - last_report >= HEARTBEAT_S:
            report(f"[{_hms(now - start)}] {what}: {status}")
            last, last_report = status, now
        if status in TERMINAL:
            return status, failure, now - start
        if now - start + delay > timeout_s:
            raise KaggleError(f"{what}: still {status} after {_hms(now - start)} (AN2DL_WAIT_TIMEOUT "
                              f"{timeout_s:.0f} s); `make wait` again to keep waiting")
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


def _push_record_path(task: str) -> Path:
    return SUBMISSIONS_DIR / task / PUSH_RECORD


def _kernel(task: str, session: KaggleSession) -> tuple[str, int | None]:
    """(owner/slug, version) of the task's kernel: the last push if recorded, else from the template."""
    path = _push_record_path(task)
    if path.is_file():
        record = json.loads(path.read_text())
        return record["ref"], record.get("version")
    slug = str(load_template(repo_root(), task)["id"]).split("/")[-1]
    return f"{session.username}/{slug}", None


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


def _version_dirs(task: str) -> list[tuple[int, Path]]:
    found = [(int(p.name[1:]), p) for p in (SUBMISSIONS_DIR / task).glob("v*")
             if p.is_dir() and p.name[1:].isdigit()]
    return sorted(found)


def _kernel_version_of(path: Path) -> int | None:
    """N when `path` lies in an output folder submissions/<task>/v<N>/."""
    name = path.resolve().parent.name
    return int(name[1:]) if re.fullmatch(r"v\d+", name) else None


def _kit_tag(csv_path: Path) -> tuple[str, str]:
    """(`an2dl-kit <version> <commit>[+dirty]`, profile) of the run that wrote the CSV (else the checkout)."""
    metrics = csv_path.parent / "metrics.json"
    prov, profile = {}, ""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        data = json.loads(metrics.read_text())
        prov, profile = data.get("provenance") or {}, data.get("profile") or ""
    if prov.get("version"):
        version, commit, dirty = prov["version"], prov.get("commit"), prov.get("dirty")
    else:
        version, (commit, dirty) = __version__, git_state(repo_root())
    return f"an2dl-kit {version} {(commit or 'uncommitted')[:12]}{'+dirty' if dirty else ''}", profile


def append_ledger(row: dict) -> Path:
    """Append one row to submissions/ledger.csv (header first if new), flushed to disk before returning."""
    path = SUBMISSIONS_DIR / LEDGER_NAME
    path.parent.mkdir(parents=True, exist_ok=True)
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=LEDGER_COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in LEDGER_COLUMNS})
        handle.flush()
        os.fsync(handle.fileno())
    return path


# ---- commands ---------------------------------------------------------------------------------------------
def push_cli(args) -> int:
    """`an2dl push --task T --profile P`: bundle, SaveKernel, print the kernel URL and version."""
    config = kernel_config(args.task)
    if not config.competition and not config.datasets:
        prefix = args.task.upper()
        raise KitError(f"{args.task} kernel: no data source; set {prefix}_COMPETITION or {prefix}_DATASETS "
                       "(e.g. a private dataset holding the competition files)")
    session = KaggleSession.connect()
    bundle = write_bundle(args.task, args.profile, BUILD_DIR, config=config, username=session.username)
    if bundle.ref.startswith(USERNAME_PLACEHOLDER + "/"):
        raise KaggleError("Kaggle username: unknown; set KAGGLE_USERNAME")
    for line in describe_bundle(bundle)[:2]:
        print(line)
    if bundle.provenance["dirty"]:
        print("note: the kit has uncommitted changes; the kernel records dirty=True")
    info = session.push(bundle.folder, bundle.ref)
    record = {**info, "task": args.task, "profile": args.profile, "commit": bundle.provenance["commit"],
              "dirty": bundle.provenance["dirty"], "pushed_at": datetime.now(timezone.utc).isoformat(
                  timespec="seconds")}
    write_json(_push_record_path(args.task), record)
    print(f"pushed {info['ref']} version {info['version']}: {info['url']}")
    print(f"next: make wait TASK={args.task}, then make output-{args.task}")
    return 0


def status_cli(args) -> int:
    """`an2dl status --task T`: one status line; on ERROR the failure message and the log's tail."""
    session = KaggleSession.connect()
    ref, version = _kernel(args.task, session)
    status, failure = session.status(ref)
    print(f"{ref}{f' version {version}' if version else ''}: {status}")
    if status == "ERROR":
        _print_failure(session, ref, failure)
    return 1 if status in TERMINAL and status != "COMPLETE" else 0


def wait_cli(args) -> int:
    """`an2dl wait --task T`: poll with backoff until COMPLETE (exit 0) or ERROR/cancelled (exit 1)."""
    session = KaggleSession.connect()
    ref, version = _kernel(args.task, session)
    what = f"{ref}{f' version {version}' if version else ''}"
    status, failure, elapsed = wait_for(
        lambda: session.status(ref), what=what, first_s=_env_float("AN2DL_POLL_SECONDS", POLL_FIRST_S),
        timeout_s=_env_float("AN2DL_WAIT_TIMEOUT", WAIT_TIMEOUT_S),
        report=lambda line: print(line, flush=True))
    if status == "COMPLETE":
        print(f"{what} completed after {_hms(elapsed)} of waiting; next: make output-{args.task}")
        return 0
    if status == "ERROR":
        _print_failure(session, ref, failure)
    return 1


def output_cli(args) -> int:
    """`an2dl output --task T`: download the outputs of the pushed version into submissions/T/v<N>/."""
    session = KaggleSession.connect()
    ref, version = _kernel(args.task, session)
    if version is None:
        raise KaggleError(f"{_push_record_path(args.task)}: no push recorded, so the kernel version is "
                          f"unknown; push with `make push-{args.task}`, or fetch by hand: "
                          f"kaggle kernels output {ref} -p submissions/{args.task}/DIR")
    target = SUBMISSIONS_DIR / args.task / f"v{version}"
    if target.exists():
        raise KaggleError(f"{target}: already downloaded; an earlier run's outputs are never replaced "
                          "(delete the folder to download again)")
    status, _ = session.status(ref)
    if status not in TERMINAL:
        raise KaggleError(f"{ref} version {version}: still {status}; `make wait TASK={args.task}` first")
    if status != "COMPLETE":
        print(f"an2dl: warning: {ref} version {version} ended {status}; downloading what it left",
              file=sys.stderr)
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
    print(f"downloaded {len(sizes)} files of {ref} version {version} into {target}:")
    for name, size in sorted(sizes.items()):
        print(f"  {name} ({size / 1024:.1f} KiB)")
    if SUBMISSION_FILE in sizes:
        print(f"next: make submit TASK={args.task}  (submits {target / SUBMISSION_FILE})")
    return 0


def _default_file(task: str) -> Path:
    for _, folder in reversed(_version_dirs(task)):
        if (folder / SUBMISSION_FILE).is_file():
            return folder / SUBMISSION_FILE
    raise KitError(f"{SUBMISSIONS_DIR / task}: no downloaded {SUBMISSION_FILE}; run "
                   f"`make output-{task}` or pass FILE=path/to/{SUBMISSION_FILE}")


def submit_cli(args) -> int:
    """`an2dl submit --task T [--file F] [--message M]`: validate, submit, then record in the ledger."""
    from an2dl_kit.submission import check_submission

    config = kernel_config(args.task)
    if not config.competition:
        raise KitError(f"{args.task}: no Kaggle competition configured; set {args.task.upper()}_COMPETITION "
                       "(the cells challenge itself was scored on Codabench)")
    path = Path(args.file) if args.file else _default_file(args.task)
    if not path.is_file():
        raise KitError(f"{path}: no such file")
    summary = check_submission(path, args.task, config.test_rows)  # raises before any request is made
    print(f"checked {summary}")
    version = _kernel_version_of(path)
    tag, profile = _kit_tag(path)
    default = f"{args.task} kernel v{version}" if version else path.name
    message = f"{args.message or default}{f' ({profile} profile)' if profile else ''} [{tag}]"
    digest = sha256_file(path)
    session = KaggleSession.connect()
    reply = session.submit(config.competition, path, message)
    ledger = append_ledger({
        "time": datetime.now(timezone.utc).isoformat(timespec="seconds"), "task": args.task,
        "competition": config.competition, "file": path.as_posix(), "sha256": digest, "message": message,
        "kernel_version": version or "", "submission": reply["ref"] or ""})
    print(f"submitted {path} to {config.competition}: {reply['message']}")
    print(f"  message: {message}")
    print(f"  recorded in {ledger}")
    return 0
