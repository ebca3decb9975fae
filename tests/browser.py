"""Opening a page in headless Chromium (Debian's) through the DevTools protocol, for the HTML report's test: the
console messages and uncaught exceptions the page gives, its rendered text and a screenshot."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Page:
    messages: list[tuple[str, str]] = field(default_factory=list)  # (level, text): console calls, log entries
    exceptions: list[str] = field(default_factory=list)
    text: str = ""


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def open_page(url: str, screenshot: Path, settle: float = 3.0, timeout: float = 60.0) -> Page:
    """Load `url`, wait for its load event and `settle` seconds more, and return what the page said; the
    screenshot (1400 x 1000) goes to `screenshot`."""
    import websocket

    with tempfile.TemporaryDirectory(ignore_cleanup_errors=True) as profile:
        args = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--remote-debugging-port=0",
                f"--user-data-dir={profile}", "--window-size=1400,1000", "about:blank"]  # fmt: skip
        log = Path(profile) / "stderr.log"
        with open(log, "w") as stderr:
            browser = subprocess.Popen(args, stderr=stderr, stdout=subprocess.DEVNULL, start_new_session=True)
        try:
            port = _devtools_port(browser, log, timeout)
            targets = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10).read())
            target = next(t for t in targets if t["type"] == "page")
            socket = websocket.create_connection(target["webSocketDebuggerUrl"], suppress_origin=True)
            try:
                return _visit(socket, url, screenshot, settle, timeout)
            finally:
                socket.close()
        finally:  # chromium's helper processes too: the whole session
            os.killpg(browser.pid, signal.SIGKILL)
            browser.wait()


def _devtools_port(browser: subprocess.Popen, log: Path, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = re.search(r"DevTools listening on ws://[^:]+:(\d+)/", log.read_text())
        if found:
            return int(found.group(1))
        if browser.poll() is not None:
            raise RuntimeError(f"chromium exited with {browser.returncode} before DevTools started:\n{log.read_text()}")
        time.sleep(0.1)
    raise TimeoutError("chromium did not start DevTools")


def _visit(socket, url: str, screenshot: Path, settle: float, timeout: float) -> Page:
    import websocket

    page, calls = Page(), iter(range(1, 1_000_000))

    def send(method: str, **params) -> int:
        call = next(calls)
        socket.send(json.dumps({"id": call, "method": method, "params": params}))
        return call

    def handle(event: dict) -> None:
        method, params = event.get("method"), event.get("params", {})
        if method == "Runtime.consoleAPICalled":
            text = " ".join(str(a.get("value", a.get("description", ""))) for a in params.get("args", []))
            page.messages.append((params["type"], text))
        elif method == "Runtime.exceptionThrown":
            details = params["exceptionDetails"]
            page.exceptions.append(details.get("exception", {}).get("description", details.get("text", "")))
        elif method == "Log.entryAdded":
            page.messages.append((params["entry"]["level"], params["entry"]["text"]))

    def until(predicate, seconds: float) -> dict | None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            socket.settimeout(max(0.05, deadline - time.monotonic()))
            try:
                event = json.loads(socket.recv())
            except websocket.WebSocketTimeoutException:
                return None
            handle(event)
            if predicate(event):
                return event
        return None

    for method in ("Runtime.enable", "Log.enable", "Page.enable"):
        send(method)
    send("Page.navigate", url=url)
    if until(lambda e: e.get("method") == "Page.loadEventFired", timeout) is None:
        raise TimeoutError(f"{url} did not finish loading in {timeout} s")
    until(lambda e: False, settle)
    call = send("Runtime.evaluate", expression="document.body.innerText", returnByValue=True)
    page.text = until(lambda e: e.get("id") == call, timeout)["result"]["result"].get("value", "")
    call = send("Page.captureScreenshot", format="png")
    screenshot.write_bytes(base64.b64decode(until(lambda e: e.get("id") == call, timeout)["result"]["data"]))
    return page
