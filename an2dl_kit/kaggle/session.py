"""The requests of the Kaggle loop, one method each, through the official `kaggle` package.

Every reply is checked, because the kaggle CLI exits 0 on many failures (a push answered with an `error`
field, an upload refused, a submission not accepted): a refused request raises `KaggleError` with one line
naming the request and the server's message, and no credential value ever appears in a message. `kaggle` is
imported only when a command connects, because importing it authenticates. TensorFlow-free.
"""

from __future__ import annotations

import contextlib
import io
import re
import sys
from collections.abc import Iterator
from pathlib import Path

from an2dl_kit.errors import KaggleError, KitError
from an2dl_kit.files import atomic_path
from an2dl_kit.kaggle.settings import credential_values, kaggle_config_path

MAX_PAGES = 50
HTTP_TIMEOUT_S = (15, 300)  # connect, read
CHUNK_BYTES = 1 << 20
SUBMISSIONS_PAGE_SIZE = 100


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

    def status(self, ref: str, version: int | None = None) -> tuple[str, str | None]:
        """GetKernelSessionStatus of the latest version, or of `version` (the client sends it as `v<N>`):
        (QUEUED | RUNNING | COMPLETE | ERROR | ..., failure message)."""
        with self._request(f"GetKernelSessionStatus {ref}{f' version {version}' if version else ''}"):
            reply = self.api.kernels_status(f"{ref}/{version}" if version else ref)
        return getattr(reply.status, "name", str(reply.status)), reply.failure_message

    def _pages(self, label: str, request, call) -> Iterator:
        """Every reply of a paginated request: `call(client, request)` sends it, each next page with the last
        reply's `next_page_token`; more than MAX_PAGES pages is an error rather than an endless loop."""
        for _ in range(MAX_PAGES):
            with self._request(label), self.api.build_kaggle_client() as client:
                reply = call(client, request)
            yield reply
            if not reply.next_page_token:
                return
            request.page_token = reply.next_page_token
        raise KaggleError(f"{label}: more than {MAX_PAGES} pages")

    def outputs(self, ref: str) -> tuple[list[tuple[str, str]], str]:
        """ListKernelSessionOutput, every page: ([(file name, signed url)], kernel log)."""
        from kagglesdk.kernels.types.kernels_api_service import ApiListKernelSessionOutputRequest

        request = ApiListKernelSessionOutputRequest()
        request.user_name, request.kernel_slug = ref.split("/")
        files, log = [], ""
        label = f"ListKernelSessionOutput {ref}"
        for reply in self._pages(label, request,
                                 lambda client, r: client.kernels.kernels_api_client.list_kernel_session_output(r)):
            for item in reply.files or []:
                if not item.file_name or not item.url:
                    raise KaggleError(f"{label}: a file without a name or url")
                files.append((item.file_name, item.url))
            log = log or reply.log or ""
        return files, log

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


    def submissions(self, competition: str) -> list:
        """ListSubmissions, every page: the account's submissions (ApiSubmission: ref, description, status,
        public_score, private_score), newest first. The client's `competition_submissions` returns one page
        and drops the next-page token, so the pages are walked here."""
        from kagglesdk.competitions.types.competition_api_service import ApiListSubmissionsRequest

        request = ApiListSubmissionsRequest()
        request.competition_name, request.page_size = competition, SUBMISSIONS_PAGE_SIZE
        replies = self._pages(f"ListSubmissions {competition}", request,
                              lambda client, r: client.competitions.competition_api_client.list_submissions(r))
        return [item for reply in replies for item in reply.submissions or [] if item is not None]

    def dataset_status(self, ref: str) -> str | None:
        """GetDatasetStatus: `ready`, `failed`, `blobs_received`, ... (the client's lowercase enum names), or
        None when the server does not know the dataset (HTTP 404)."""
        import requests

        with self._request(f"GetDatasetStatus {ref}"):
            try:
                return self.api.dataset_status(ref)
            except requests.HTTPError as error:
                if error.response is not None and error.response.status_code == 404:
                    return None
                raise

    def dataset_info(self, ref: str) -> tuple[int, bool]:
        """GetDataset: (current version number, whether the dataset is private)."""
        from kagglesdk.datasets.types.dataset_api_service import ApiGetDatasetRequest

        request = ApiGetDatasetRequest()
        request.owner_slug, request.dataset_slug = ref.split("/")
        with self._request(f"GetDataset {ref}"), self.api.build_kaggle_client() as client:
            reply = client.datasets.dataset_api_client.get_dataset(request)
        if not reply.current_version_number:
            raise KaggleError(f"GetDataset {ref}: the reply carries no version number")
        return int(reply.current_version_number), bool(reply.is_private)

    def create_dataset(self, folder: Path, ref: str, public: bool) -> str:
        """StartBlobUpload and PUT per file, then CreateDataset (the client's `dataset_create_new`, which sends
        every file of `folder` but its dataset-metadata.json); return the dataset's URL."""
        with self._request(f"CreateDataset {ref}"):
            reply = self.api.dataset_create_new(str(folder), public=public, quiet=False)
        return self._dataset_reply("CreateDataset", ref, reply)

    def create_dataset_version(self, folder: Path, ref: str, notes: str) -> str:
        """The same uploads, then CreateDatasetVersion (`dataset_create_version`); return the dataset's URL."""
        with self._request(f"CreateDatasetVersion {ref}"):
            reply = self.api.dataset_create_version(str(folder), notes, quiet=False)
        return self._dataset_reply("CreateDatasetVersion", ref, reply)

    def _dataset_reply(self, what: str, ref: str, reply) -> str:
        """The URL of an accepted dataset request; a reply whose status is not `ok` or that carries an error
        (the client returns those rather than raising) is a KaggleError with the server's message."""
        if reply.error or (reply.status or "").lower() != "ok":
            raise KaggleError(self.redact(f"{what} {ref}: not accepted: "
                                          f"{reply.error or f'status {reply.status or None!r}'}"))
        return reply.url or ""

    def quota(self):
        """GetAcceleratorQuotaStatistics (`kaggle quota`): this week's GPU and TPU hours and the refresh time."""
        with self._request("GetAcceleratorQuotaStatistics"):
            reply = self.api.quota_view()
        if reply.gpu_quota is None and reply.tpu_quota is None:
            raise KaggleError("GetAcceleratorQuotaStatistics: the reply holds no GPU or TPU quota")
        return reply
