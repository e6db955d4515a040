"""Load a local page in headless Chromium, offline, and report what a reader would meet: console errors,
broken images, the element ids present, and a screenshot.

Chromium is driven over the DevTools protocol on a pipe (`--remote-debugging-pipe`: JSON messages ending in a
NUL byte on file descriptors 3 and 4), so neither a WebSocket library nor a driver binary is needed. The
network is cut twice: the browser gets an unreachable proxy, and the page's network is emulated offline; any
request other than the file itself or a data: URI is reported too.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
TIMEOUT_S = 60.0
# What the page is asked after loading: every image's state and every element id.
PROBE = """JSON.stringify({
  images: Array.from(document.images).map(i => ({alt: i.alt, complete: i.complete, width: i.naturalWidth})),
  ids: Array.from(document.querySelectorAll('[id]')).map(e => e.id),
  scripts: document.scripts.length})"""


def find_browser() -> str | None:
    """The first Chromium-family browser on PATH (None: the browser test skips)."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    return None


@dataclass
class PageCheck:
    """What loading the page showed."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    ids: list[str] = field(default_factory=list)
    scripts: int = 0

    @property
    def broken_images(self) -> list[str]:
        return [image["alt"] for image in self.images if not image["complete"] or image["width"] == 0]


class _Pipe:
    """The DevTools connection: numbered commands, replies matched by id, events kept in order."""

    def __init__(self, write_fd: int, read_fd: int):
        self.write_fd, self.read_fd = write_fd, read_fd
        self.buffer = b""
        self.events: list[dict] = []
        self.next_id = 0

    def _message(self, deadline: float) -> dict:
        while b"\0" not in self.buffer:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.read_fd], [], [], left)[0]:
                raise TimeoutError("the browser did not answer in time")
            chunk = os.read(self.read_fd, 1 << 20)
            if not chunk:
                raise ConnectionError("the browser closed the DevTools pipe")
            self.buffer += chunk
        raw, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(raw)

    def call(self, method: str, session: str | None = None, **params) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.write_fd, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + TIMEOUT_S
        while True:
            reply = self._message(deadline)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_for(self, method: str) -> dict:
        deadline = time.monotonic() + TIMEOUT_S
        seen = len(self.events)
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method:
                    return event
            seen = len(self.events)
            self.events.append(self._message(deadline))


def _launch(browser: str, profile: str) -> tuple[subprocess.Popen, _Pipe]:
    to_browser_read, to_browser_write = os.pipe()
    from_browser_read, from_browser_write = os.pipe()
    # Move the child's ends above 3 and 4 first, so placing them on 3 and 4 never overwrites the other.
    child_read = fcntl.fcntl(to_browser_read, fcntl.F_DUPFD, 10)
    child_write = fcntl.fcntl(from_browser_write, fcntl.F_DUPFD, 10)

    def on_fds_3_and_4():
        os.dup2(child_read, 3)
        os.dup2(child_write, 4)

    flags = ["--headless=new", "--remote-debugging-pipe", "--disable-gpu", "--no-first-run",
             "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={profile}",
             "--proxy-server=127.0.0.1:9", "--window-size=1100,900"]
    if os.geteuid() == 0:
        flags.append("--no-sandbox")  # Chromium refuses to run its sandbox as root (containers, CI)
    process = subprocess.Popen([browser, *flags, "about:blank"], pass_fds=(3, 4), preexec_fn=on_fds_3_and_4,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for fd in (to_browser_read, from_browser_write, child_read, child_write):
        os.close(fd)
    return process, _Pipe(to_browser_write, from_browser_read)


def _collect(pipe: _Pipe, session: str, page_url: str, check: PageCheck) -> None:
    for event in pipe.events:
        if event.get("sessionId") != session:
            continue
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.exceptionThrown":
            check.errors.append(json.dumps(params.get("exceptionDetails", {}))[:300])
        elif method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            check.errors.append(" ".join(str(arg.get("value", arg.get("description"))) for arg in params["args"]))
        elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
            check.errors.append(params["entry"]["text"])
        elif method == "Network.requestWillBeSent":
            url = params["request"]["url"]
            if url != page_url and not url.startswith("data:"):
                check.requests.append(url)


def check_page(page: Path, screenshot: Path, browser: str | None = None) -> PageCheck:
    """Load `page` offline in headless Chromium, save a full-page screenshot, report what it showed."""
    page_url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory(prefix="an2dl-browser-") as profile:
        process, pipe = _launch(browser or find_browser(), profile)
        try:
            target = pipe.call("Target.createTarget", url="about:blank")["targetId"]
            session = pipe.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
            for domain in ("Page", "Runtime", "Log", "Network"):
                pipe.call(f"{domain}.enable", session)
            pipe.call("Network.emulateNetworkConditions", session, offline=True, latency=0,
                      downloadThroughput=-1, uploadThroughput=-1)
            pipe.call("Page.navigate", session, url=page_url)
            pipe.wait_for("Page.loadEventFired")
            probe = json.loads(pipe.call("Runtime.evaluate", session, expression=PROBE,
                                         returnByValue=True)["result"]["value"])
            size = pipe.call("Page.getLayoutMetrics", session)["cssContentSize"]
            shot = pipe.call("Page.captureScreenshot", session, format="png", captureBeyondViewport=True,
                             clip={"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1})
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
            check = PageCheck(images=probe["images"], ids=probe["ids"], scripts=probe["scripts"])
            _collect(pipe, session, page_url, check)
            pipe.call("Browser.close")
        finally:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
            os.close(pipe.write_fd)
            os.close(pipe.read_fd)
    return check
