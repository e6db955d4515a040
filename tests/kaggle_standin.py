"""A loopback stand-in for the part of the Kaggle API that the kit's Kaggle loop uses.

The real `kaggle` client (2.2.x with kagglesdk 0.1.x) sends every call as
`POST <base>/v1/<service>/<Method>` with a camelCase JSON body. With `KAGGLE_API_ENVIRONMENT=LOCALHOST`
its base is `http://localhost/api`; with `HTTP_PROXY=http://127.0.0.1:<port>` and `NO_PROXY=` every plain
HTTP request, including the signed download and upload URLs this stand-in hands out, reaches this server as a
proxy request (absolute URL in the request line), so the server can listen on any free loopback port.
`client_env()` builds exactly that environment for a subprocess.

Implemented: SaveKernel, GetKernelSessionStatus (of the latest version, or of `versionLabel` "v<N>" from
`version_statuses`), ListKernelSessionOutput (+ the signed file URLs), StartSubmissionUpload, the upload
`PUT`, CreateSubmission (which adds to `submissions`), ListSubmissions (newest first, paged by
`pageSize`/`pageToken`) and GetAcceleratorQuotaStatistics (from `quota`, the endpoint `kaggle quota` calls).
Datasets, as the client's `dataset_create_new`, `dataset_create_version` and `dataset_status` call them:
StartBlobUpload (+ the same upload `PUT`, which also answers the client's resume probe), CreateDataset and
CreateDatasetVersion (which store the uploaded files in `datasets`), GetDatasetStatus (404 for an unknown
dataset; otherwise the next of `dataset_statuses`, the last one repeating) and GetDataset (its version).
Tests score a submission by editing its entry in `submissions` ({ref, description, fileName, date, status,
publicScore, privateScore}). Every request is recorded in `requests`.
Failure switches:
  `fail[name] = (http_status, body)`  answer `name` with that status (body: dict -> JSON, str -> text);
  `extra[name] = {...}`               merge fields into a 200 reply (e.g. SaveKernel's `error`).
Names are the RPC method names plus "download" (signed output URLs) and "upload" (the PUT).

The server binds 127.0.0.1 only, serves from a daemon thread, refuses requests past `max_requests`, and
shuts itself down after `timeout_s` or when the `with` block ends.
"""

from __future__ import annotations

import base64
import json
import os
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

PUBLIC_BASE = "http://localhost"  # what the client believes it talks to; the proxy route brings it here
RPC_PREFIXES = ("/api/v1/kernels.KernelsApiService/", "/api/v1/competitions.CompetitionApiService/",
                "/api/v1/datasets.DatasetApiService/", "/api/v1/blobs.BlobApiService/")
SIGNED_PREFIX = "/signed-output/"
UPLOAD_PREFIX = "/signed-upload/"
FAKE_USERNAME = "standin-user"
FAKE_KEY = "f4k3-k3y-0123456789abcdef0123456789"  # must never show up in a bundle or in any output
PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


@dataclass
class Recorded:
    """One request as the stand-in received it."""

    name: str  # RPC method name, "download", "upload" or "other"
    method: str
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body or b"{}")


@dataclass
class KaggleStandIn:
    """The fake server's state: scripted replies, failure switches and the recorded requests."""

    username: str = FAKE_USERNAME
    key: str = FAKE_KEY
    statuses: list[str] = field(default_factory=lambda: ["RUNNING", "COMPLETE"])
    failure_message: str | None = None
    outputs: dict[str, bytes] = field(default_factory=dict)
    log: str = ""
    timeout_s: float = 120.0
    max_requests: int = 500
    fail: dict[str, tuple[int, object]] = field(default_factory=dict)
    extra: dict[str, dict] = field(default_factory=dict)
    requests: list[Recorded] = field(default_factory=list)
    uploads: dict[str, bytes] = field(default_factory=dict)
    version: int = 0
    version_statuses: dict[int, str] = field(default_factory=dict)
    submissions: list[dict] = field(default_factory=list)
    # hours: used, reserved by running sessions, allowed this week; refresh time as the server writes it
    quota: dict = field(default_factory=lambda: {"used_h": 4.5, "reserved_h": 0.0, "total_h": 30.0,
                                                 "refresh": "2030-01-04T00:00:00Z"})
    # datasets: "owner/slug" -> {"version", "private", "title", "files": {name: bytes}}
    datasets: dict[str, dict] = field(default_factory=dict)
    dataset_statuses: list[str] = field(default_factory=lambda: ["BLOBS_RECEIVED", "READY"])
    blobs: dict[str, str] = field(default_factory=dict)  # blob token -> file name, from StartBlobUpload

    # ---- lifecycle -------------------------------------------------------------------------------------
    def __enter__(self) -> KaggleStandIn:
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_class(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        daemon=True)
        self._thread.start()
        self._timer = threading.Timer(self.timeout_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def stop(self) -> None:
        self._timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def proxy(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client_env(self, home: str | os.PathLike, base: dict[str, str] | None = None) -> dict[str, str]:
        """An environment in which the real kaggle client talks to this stand-in and nothing else."""
        env = {k: v for k, v in (os.environ if base is None else base).items()
               if not k.startswith("KAGGLE_") and k.lower() not in PROXY_VARIABLES and k != "VERBOSE"}
        config_dir = os.path.join(home, ".kaggle")
        os.makedirs(config_dir, exist_ok=True)
        env.update(HOME=str(home), KAGGLE_CONFIG_DIR=config_dir, KAGGLE_USERNAME=self.username,
                   KAGGLE_KEY=self.key, KAGGLE_API_ENVIRONMENT="LOCALHOST",
                   HTTP_PROXY=self.proxy, http_proxy=self.proxy,
                   # An https request must not leave the machine either: the stand-in refuses CONNECT.
                   HTTPS_PROXY=self.proxy, https_proxy=self.proxy, NO_PROXY="", no_proxy="")
        return env

    # ---- queries for tests -----------------------------------------------------------------------------
    def calls(self, name: str) -> list[Recorded]:
        return [r for r in self.requests if r.name == name]

    def names(self) -> list[str]:
        return [r.name for r in self.requests]

    # ---- request handling ------------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes):
        """Return (status, content_type, payload bytes) for one request."""
        name = _request_name(method, path)
        with self._lock:
            self.requests.append(Recorded(name, method, path, headers, body))
            if len(self.requests) > self.max_requests:
                return _json(429, {"code": 429, "message": "stand-in request limit reached"})
            if name in RPC_NAMES and not self._authorised(headers):
                return _json(401, {"code": 401, "message": "Unauthenticated"})
            if name in self.fail:
                status, payload = self.fail[name]
                return _json(status, payload) if isinstance(payload, dict) else _text(status, str(payload))
            reply = getattr(self, f"_{name}", None)
            if reply is None:
                return _text(404, f"stand-in: no route for {method} {path}")
            return reply(path, body, headers) if name == "upload" else reply(path, body)

    def _authorised(self, headers: dict[str, str]) -> bool:
        expected = base64.b64encode(f"{self.username}:{self.key}".encode()).decode()
        return headers.get("authorization", "") == f"Basic {expected}"

    def _SaveKernel(self, path, body):
        request = json.loads(body)
        self.version += 1
        slug = request.get("slug", "")
        reply = {"ref": f"/code/{slug}", "url": f"{PUBLIC_BASE}/code/{slug}", "versionNumber": self.version,
                 "kernelId": 1}
        return _json(200, {**reply, **self.extra.get("SaveKernel", {})})

    def _GetKernelSessionStatus(self, path, body):
        label = json.loads(body or b"{}").get("versionLabel") or ""
        if label[1:].isdigit() and int(label[1:]) in self.version_statuses:
            return _json(200, {"status": self.version_statuses[int(label[1:])]})
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        reply = {"status": status}
        if status == "ERROR" and self.failure_message:
            reply["failureMessage"] = self.failure_message
        return _json(200, {**reply, **self.extra.get("GetKernelSessionStatus", {})})

    def _ListKernelSessionOutput(self, path, body):
        files = [{"fileName": name, "url": f"{PUBLIC_BASE}{SIGNED_PREFIX}{name}?X-Goog-Signature=standin"}
                 for name in sorted(self.outputs)]
        reply = {"files": files, "log": self.log}
        return _json(200, {**reply, **self.extra.get("ListKernelSessionOutput", {})})

    def _download(self, path, body):
        name = path[len(SIGNED_PREFIX):]
        if name not in self.outputs:
            return _text(404, "NoSuchKey")
        return 200, "application/octet-stream", self.outputs[name]

    def _StartSubmissionUpload(self, path, body):
        token = f"blob-token-{len(self.uploads) + 1}"
        reply = {"token": token, "createUrl": f"{PUBLIC_BASE}{UPLOAD_PREFIX}{token}?upload_id=standin"}
        return _json(200, {**reply, **self.extra.get("StartSubmissionUpload", {})})

    def _upload(self, path, body, headers=None):
        token = path[len(UPLOAD_PREFIX):]
        if (headers or {}).get("content-range", "").startswith("bytes */"):  # the client's resume probe
            return _json(200, {}) if token in self.uploads else _text(404, "no such upload session")
        self.uploads[token] = body
        return _json(200, {})

    def _CreateSubmission(self, path, body):
        request = json.loads(body)
        if request.get("blobFileTokens") not in self.uploads:
            return _json(400, {"code": 400, "message": "blob token does not name an upload"})
        ref = 1000 + len(self.submissions) + 1
        reply = {"message": f"Successfully submitted to {request.get('competitionName')}", "ref": ref,
                 **self.extra.get("CreateSubmission", {})}
        # A scripted refusal (no ref, no success message) is not listed; a success without a ref still is.
        if reply.get("ref") or "success" in reply.get("message", "").lower():
            self.submissions.insert(0, {
                "ref": ref, "description": request.get("submissionDescription", ""), "fileName": "submission.csv",
                "date": "2030-01-01T00:00:00.000Z", "status": "PENDING"})
        return _json(200, reply)

    def _ListSubmissions(self, path, body):
        request = json.loads(body or b"{}")
        start, size = int(request.get("pageToken") or 0), int(request.get("pageSize") or 20)
        page = self.submissions[start:start + size]
        token = str(start + size) if start + size < len(self.submissions) else ""
        return _json(200, {"submissions": page, "nextPageToken": token, **self.extra.get("ListSubmissions", {})})

    def _GetAcceleratorQuotaStatistics(self, path, body):
        def hours(name):
            return f"{int(self.quota[name] * 3600)}s"

        gpu = {"timeUsed": hours("used_h"), "timeReserved": hours("reserved_h"),
               "totalTimeAllowed": hours("total_h"), "hasEverRun": True}
        reply = {"quotaRefreshTime": self.quota["refresh"], "gpuQuota": gpu}
        return _json(200, {**reply, **self.extra.get("GetAcceleratorQuotaStatistics", {})})

    # ---- datasets ------------------------------------------------------------------------------------------
    def _StartBlobUpload(self, path, body):
        request = json.loads(body)
        token = f"dataset-blob-{len(self.blobs) + 1}"
        self.blobs[token] = request.get("name", "")
        reply = {"token": token, "createUrl": f"{PUBLIC_BASE}{UPLOAD_PREFIX}{token}?upload_id=standin"}
        return _json(200, {**reply, **self.extra.get("StartBlobUpload", {})})

    def _uploaded_files(self, request: dict) -> dict[str, bytes] | None:
        """name -> bytes of the request's `files` (blob tokens); None if a token names no finished upload."""
        tokens = [item.get("token") for item in request.get("files") or []]
        if not all(token in self.uploads and token in self.blobs for token in tokens):
            return None
        return {self.blobs[token]: self.uploads[token] for token in tokens}

    def _dataset_reply(self, name: str, ref: str, files: dict[str, bytes] | None):
        if files is None:
            return _json(400, {"code": 400, "message": "a file token names no finished upload"})
        reply = {"ref": ref, "url": f"{PUBLIC_BASE}/datasets/{ref}", "status": "Ok", **self.extra.get(name, {})}
        return _json(200, reply)

    def _CreateDataset(self, path, body):
        request = json.loads(body)
        ref = f"{request.get('ownerSlug')}/{request.get('slug')}"
        if ref in self.datasets:
            return _json(409, {"code": 409, "message": f"dataset {ref} already exists"})
        files = self._uploaded_files(request)
        if files is not None and not self.extra.get("CreateDataset", {}).get("error"):
            self.datasets[ref] = {"version": 1, "private": request.get("isPrivate", False),
                                  "title": request.get("title"), "files": files}
        return self._dataset_reply("CreateDataset", ref, files)

    def _CreateDatasetVersion(self, path, body):
        request = json.loads(body)
        ref = f"{request.get('ownerSlug')}/{request.get('datasetSlug')}"
        if ref not in self.datasets:
            return _json(404, {"code": 404, "message": f"dataset {ref} not found"})
        files = self._uploaded_files(request.get("body") or {})
        if files is not None and not self.extra.get("CreateDatasetVersion", {}).get("error"):
            self.datasets[ref].update(version=self.datasets[ref]["version"] + 1, files=files)
        return self._dataset_reply("CreateDatasetVersion", ref, files)

    def _known_dataset(self, body) -> str | None:
        request = json.loads(body or b"{}")
        ref = f"{request.get('ownerSlug')}/{request.get('datasetSlug')}"
        return ref if ref in self.datasets else None

    def _GetDatasetStatus(self, path, body):
        if self._known_dataset(body) is None:
            return _json(404, {"code": 404, "message": "dataset not found"})
        status = self.dataset_statuses.pop(0) if len(self.dataset_statuses) > 1 else self.dataset_statuses[0]
        return _json(200, {"status": status, **self.extra.get("GetDatasetStatus", {})})

    def _GetDataset(self, path, body):
        ref = self._known_dataset(body)
        if ref is None:
            return _json(404, {"code": 404, "message": "dataset not found"})
        reply = {"ref": ref, "currentVersionNumber": self.datasets[ref]["version"],
                 "isPrivate": self.datasets[ref]["private"]}
        return _json(200, {**reply, **self.extra.get("GetDataset", {})})


RPC_NAMES = ("SaveKernel", "GetKernelSessionStatus", "ListKernelSessionOutput", "StartSubmissionUpload",
             "CreateSubmission", "ListSubmissions", "GetAcceleratorQuotaStatistics", "StartBlobUpload",
             "CreateDataset", "CreateDatasetVersion", "GetDatasetStatus", "GetDataset")


def _request_name(method: str, path: str) -> str:
    for prefix in RPC_PREFIXES:
        if method == "POST" and path.startswith(prefix):
            return path[len(prefix):]
    if method == "GET" and path.startswith(SIGNED_PREFIX):
        return "download"
    if method == "PUT" and path.startswith(UPLOAD_PREFIX):
        return "upload"
    return "other"


def _json(status: int, payload: dict):
    return status, "application/json", json.dumps(payload).encode()


def _text(status: int, payload: str):
    return status, "text/plain", payload.encode()


def _handler_class(standin: KaggleStandIn):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _body(self) -> bytes:
            if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                chunks = []
                while True:
                    size = int(self.rfile.readline().split(b";")[0], 16)
                    chunk = self.rfile.read(size + 2)[:size]
                    if size == 0:
                        return b"".join(chunks)
                    chunks.append(chunk)
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def _serve(self) -> None:
            path = urlsplit(self.path).path  # proxy requests carry an absolute URL
            headers = {k.lower(): v for k, v in self.headers.items()}
            status, content_type, payload = standin.handle(self.command, path, headers, self._body())
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = _serve

        def do_CONNECT(self) -> None:  # an https request: record it and refuse, nothing leaves loopback
            standin.requests.append(Recorded("connect", "CONNECT", self.path, {}, b""))
            self.send_response(403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args) -> None:  # keep test output clean
            pass

    return Handler
