"""Open written reports in headless Chromium: no console errors, no network requests, every image
decoded. Chromium is driven over the DevTools protocol on a pipe (--remote-debugging-pipe), so no
extra Python package is needed. Install the browser with scripts/install-browser."""
from __future__ import annotations

import base64
import json
import os
import queue
import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any, Optional

import pytest

import tinyvision as tv
from tinyvision.report import write_report

pytestmark = pytest.mark.slow  # the quick loop (-m 'not slow') leaves it out: drives a real Chromium

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-extensions", "--mute-audio", "--hide-scrollbars"]
TIMEOUT = 30.0  # seconds for any one protocol answer


def chromium_binary() -> Optional[str]:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Chromium:
    """A headless Chromium speaking the DevTools protocol over fds 3 (in) and 4 (out), NUL-delimited."""

    def __init__(self, binary: str, profile: Path) -> None:
        to_browser_r, self._to_browser = os.pipe()
        self._from_browser, from_browser_w = os.pipe()
        self.log = profile.with_suffix(".log")
        with self.log.open("wb") as log:
            # bash puts the pipe ends on fds 3 and 4, where --remote-debugging-pipe expects them
            self.proc = subprocess.Popen(
                ["bash", "-c", f'exec "$0" "$@" 3<&{to_browser_r} 4>&{from_browser_w}', binary, *FLAGS,
                 f"--user-data-dir={profile}", "--remote-debugging-pipe", "about:blank"],
                pass_fds=(to_browser_r, from_browser_w), stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        os.close(to_browser_r)
        os.close(from_browser_w)
        self.messages: queue.Queue = queue.Queue()
        self.events: list[dict[str, Any]] = []
        self._next_id = 0
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        buffer = b""
        while chunk := os.read(self._from_browser, 1 << 16):
            buffer += chunk
            *complete, buffer = buffer.split(b"\0")
            for raw in complete:
                self.messages.put(json.loads(raw))
        os.close(self._from_browser)
        self.messages.put(None)  # the browser closed its end

    def send(self, method: str, params: Optional[dict] = None, session: Optional[str] = None) -> dict:
        """Call one protocol method and wait for its answer; events that arrive meanwhile are kept."""
        self._next_id += 1
        message = {"id": self._next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self._to_browser, json.dumps(message).encode() + b"\0")
        while True:
            reply = self._get(f"answer to {method}")
            if reply.get("id") == self._next_id:
                if "error" in reply:
                    raise AssertionError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def wait_event(self, method: str) -> dict:
        for i, event in enumerate(self.events):
            if event.get("method") == method:
                return self.events.pop(i)
        while True:
            event = self._get(method)
            if event.get("method") == method:
                return event
            self.events.append(event)

    def _get(self, what: str) -> dict:
        try:
            message = self.messages.get(timeout=TIMEOUT)
        except queue.Empty:
            raise AssertionError(f"Chromium gave no {what} in {TIMEOUT:.0f} s; log:\n{self._log_tail()}") from None
        if message is None:
            raise AssertionError(f"Chromium exited while waiting for {what}; log:\n{self._log_tail()}")
        return message

    def _log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""

    def close(self) -> None:
        try:
            self.send("Browser.close")
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()  # only the browser this test started
            self.proc.wait()
        os.close(self._to_browser)


@pytest.fixture
def browser(tmp_path):
    binary = chromium_binary()
    if binary is None:
        pytest.skip("Chromium is not installed (run scripts/install-browser as root)")
    chrome = Chromium(binary, tmp_path / "chromium-profile")
    yield chrome
    chrome.close()


def render(chrome: Chromium, page: Path, screenshot: Path) -> dict[str, Any]:
    """Load the page, wait for its images to decode; return what the page and the browser reported."""
    target = chrome.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = chrome.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Page", "Runtime", "Log", "Network"):
        chrome.send(f"{domain}.enable", session=session)
    chrome.send("Emulation.setDeviceMetricsOverride",
                {"width": 1200, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session=session)
    chrome.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
    chrome.wait_event("Page.loadEventFired")
    images = chrome.send("Runtime.evaluate", {
        "expression": "Promise.all([...document.images].map(i => i.decode().catch(() => null)))"
                      ".then(() => [...document.images].map(i => [i.complete, i.naturalWidth, i.alt]))",
        "awaitPromise": True, "returnByValue": True}, session=session)["result"]["value"]
    size = chrome.send("Page.getLayoutMetrics", session=session)["cssContentSize"]
    shot = chrome.send("Page.captureScreenshot", {
        "format": "png", "captureBeyondViewport": True,
        "clip": {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}}, session=session)
    screenshot.write_bytes(base64.b64decode(shot["data"]))
    return {"images": images, "events": chrome.events, "height": size["height"]}


def errors_in(events: list[dict]) -> list[str]:
    found = []
    for e in events:
        method, params = e.get("method"), e.get("params", {})
        if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
            found.append(f"console: {params.get('args')}")
        elif method == "Runtime.exceptionThrown":
            found.append(f"exception: {params.get('exceptionDetails', {}).get('text')}")
        elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
            found.append(f"log: {params['entry'].get('text')} {params['entry'].get('url', '')}")
        elif method == "Network.loadingFailed":
            found.append(f"network: {params.get('errorText')}")
    return found


def requested_urls(events: list[dict]) -> list[str]:
    return [e["params"]["request"]["url"] for e in events if e.get("method") == "Network.requestWillBeSent"]


def make_experiment(root: Path) -> Path:
    """Two models, one seed each, plus a run named in the manifest that never started."""
    points = []
    for i, model in enumerate(["digits-mlp", "digits-cnn"]):
        rel = f"runs/p{i:02d}/seed0"
        tv.train(dict(dataset="digits", model=model, epochs=2, threads=1), run_dir=root / rel, quiet=True)
        runs = [{"seed": 0, "dir": rel}] + ([{"seed": 1, "dir": "runs/p01/seed1"}] if i else [])
        points.append({"id": f"p{i:02d}", "label": model, "values": {"model": model}, "runs": runs})
    manifest = {"name": "browser-compare", "kind": "compare", "axes": ["model"], "points": points}
    (root / "manifest.json").write_text(json.dumps(manifest))
    return root


def check_page(browser: Chromium, page: Path, screenshot: Path, min_images: int) -> dict[str, Any]:
    seen = render(browser, page, screenshot)
    assert errors_in(seen["events"]) == []
    foreign = [u for u in requested_urls(seen["events"]) if not u.startswith(("file:", "data:"))]
    assert foreign == [], "the report must not reach the network"
    assert len(seen["images"]) >= min_images
    for complete, width, alt in seen["images"]:
        assert complete and width > 0, f"image {alt!r} did not load"
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and seen["height"] > 900
    return seen


def test_run_report_renders_in_chromium(browser, tmp_path) -> None:
    run_dir = tmp_path / "run"
    tv.train(dict(dataset="digits", model="digits-mlp", epochs=3, threads=1), run_dir=run_dir, quiet=True)
    html, _ = write_report(run_dir)
    seen = check_page(browser, html, tmp_path / "run-report.png", min_images=6)
    decoded = {alt.split(":")[0].split(",")[0]: width for _, width, alt in seen["images"]}
    # the reliability diagram and the training images the run kept, decoded at the size they were drawn
    assert decoded["Reliability diagram"] == 650 and decoded["Training images"] > 500


def test_experiment_report_renders_in_chromium(browser, tmp_path) -> None:
    html, _ = write_report(make_experiment(tmp_path / "exp"))
    check_page(browser, html, tmp_path / "experiment-report.png", min_images=3)
