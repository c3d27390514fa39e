#!/usr/bin/env python3
"""Browser check of the HTTP index page, in headless Chromium.

Starts ``python -m muxserver`` on a throw-away root, opens its index page in headless
Chromium, uploads a file through the page (the file input, the Upload button, the
progress bar reaching "done"), checks the server stored it byte for byte, then clicks
the file's link to download it and compares the download; then it opens the same
server as ``localhost`` (a Host name it answers to) and downloads from there too, and
checks the browser logged no error (a Content-Security-Policy violation would show
there). A screenshot of the page after the upload is written to the path given
(default: browser_check.png).

    python scripts/browser_check.py [--screenshot PATH] [--keep-open]

Needs: apt-get install chromium chromium-driver; pip install selenium.
Exit status 0 when every check passes; it prints SKIP and exits 0 if a tool is missing.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--window-size=1100,800"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise SystemExit(f"FAIL: {what}")


def size_of(path: Path) -> int:
    """The size of a file the browser may rename or remove at any moment (-1: gone)."""
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--screenshot", default="browser_check.png")
    args = parser.parse_args()
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver_path = shutil.which("chromedriver")
    try:
        from selenium import webdriver
        from selenium.webdriver.common.by import By
    except ImportError:
        print("SKIP: selenium is not installed (pip install selenium)")
        return 0
    if not chromium or not driver_path:
        print("SKIP: chromium or chromedriver missing (apt-get install chromium "
              "chromium-driver)")
        return 0
    work = Path(tempfile.mkdtemp(prefix="muxserver-browser-"))
    root, downloads, profile = work / "root", work / "downloads", work / "profile"
    for path in (root, downloads, profile):
        path.mkdir()
    (root / "existing <b>bold.txt").write_text("already here")
    upload = work / "from the browser.bin"
    data = os.urandom(3 * 1024 * 1024 + 11)
    upload.write_bytes(data)
    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "muxserver", "--port", str(port),
                               "--root", str(root), "--no-console"], cwd=REPO,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    browser = None
    try:
        for line in server.stdout:
            if line.startswith("listening on"):
                break
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for flag in FLAGS + [f"--user-data-dir={profile}"]:
            options.add_argument(flag)
        options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
        options.add_experimental_option("prefs", {
            "download.default_directory": str(downloads),
            "download.prompt_for_download": False})
        browser = webdriver.Chrome(options=options,
                                   service=webdriver.ChromeService(executable_path=driver_path))
        base = f"http://127.0.0.1:{port}/"
        browser.get(base)
        if "existing <b>bold.txt" not in browser.page_source.replace("&lt;", "<").replace(
                "&gt;", ">"):
            raise SystemExit("FAIL: the index does not list the existing file")
        if browser.find_elements(By.TAG_NAME, "b"):
            raise SystemExit("FAIL: a file name was rendered as HTML")
        browser.find_element(By.ID, "files").send_keys(str(upload))
        browser.find_element(By.ID, "send").click()
        wait_for(lambda: "from the browser.bin: done" in browser.find_element(
            By.ID, "uploads").text, 30, "the upload never reported done")
        bar = browser.find_element(By.CSS_SELECTOR, "#uploads progress")
        if bar.get_attribute("value") != bar.get_attribute("max"):
            raise SystemExit("FAIL: the progress bar did not reach its end")
        browser.save_screenshot(args.screenshot)
        stored = root / "from the browser.bin"
        if not stored.exists() or stored.read_bytes() != data:
            raise SystemExit("FAIL: the server did not store the uploaded bytes")
        browser.get(base)  # (the page reloads itself after uploads; be explicit)
        wait_for(lambda: browser.find_elements(By.LINK_TEXT, "from the browser.bin"), 10,
                 "the uploaded file is not listed")
        browser.find_element(By.LINK_TEXT, "from the browser.bin").click()
        got = wait_for(lambda: [p for p in downloads.iterdir()
                                if p.suffix != ".crdownload" and size_of(p) == len(data)],
                       30, "the download never finished")
        if hashlib.sha256(got[0].read_bytes()).digest() != hashlib.sha256(data).digest():
            raise SystemExit("FAIL: the downloaded file differs")
        # The same server by name: localhost is one of the Host names it answers to.
        browser.get(f"http://localhost:{port}/")
        wait_for(lambda: browser.find_elements(By.LINK_TEXT, "existing <b>bold.txt"), 10,
                 "the index is not served on localhost")
        browser.find_element(By.LINK_TEXT, "existing <b>bold.txt").click()  # shown inline
        wait_for(lambda: browser.find_element(By.TAG_NAME, "body").text == "already here", 10,
                 "the text file is not shown from localhost")
        errors = [entry["message"] for entry in browser.get_log("browser")
                  if entry["level"] == "SEVERE"]
        if errors:
            raise SystemExit("FAIL: the page logged errors: " + "; ".join(errors))
        print(f"PASS: uploaded and downloaded {len(data)} bytes through the index page in "
              f"headless Chromium, on 127.0.0.1 and on localhost, with no console errors; "
              f"screenshot: {args.screenshot}")
        return 0
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait(timeout=15)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
