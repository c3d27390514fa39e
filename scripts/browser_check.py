#!/usr/bin/env python3
"""A tour of the HTTP index page in headless Chromium, checking each feature.

Starts ``python -m muxserver --allow-delete`` on a throw-away root with a few files
and folders, opens its index page in headless Chromium (driven by Selenium) and checks,
one after the other:

* the listing: names escaped (a name with HTML in it stays text), human sizes, sorting
  by a column, the filter box, the SHA-256 of a file on demand, the upload buttons
  reached with the Tab key;
* uploads: a file through the file picker (its bar reaches the end, "verified"), a
  whole folder dropped on the page (relative paths kept, an empty file too), the
  listing refreshed without a reload;
* an upload interrupted by reloading the page: the page names it as unfinished, the
  server holds part of it under no final name, and choosing the file again resumes it
  where it stopped (the page says "resuming at ..."); the stored bytes are identical;
* an upload whose network goes away mid-way (the browser set offline): the page says
  so, asks again by itself once it is back, and finishes;
* an upload to a taken name: refused, said once in words;
* "new folder", rename and delete through the page's own buttons and dialogs;
* a folder downloaded as one zip through its row's link, every member compared;
* a drop box (``--upload-only``, a second server): no names, no listing controls, a
  second file of a taken name stored beside the first;
* the same server by name (``localhost``), a file shown inline;
* no error in the browser's console at any point but the one refusal provoked above.

Screenshots of the page in light mode, dark mode and at a phone's width go to a folder
(default ``browser-check/``), for a person to look at.

    python scripts/browser_check.py [--shots DIR]

Needs: apt-get install chromium chromium-driver; pip install selenium. Exit status 0
when every check passes (a line each, then PASS); it prints SKIP and exits 0 if a tool
is missing. ``tests/test_browser.py`` runs the same checks one test each.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import http.client
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import zipfile
from pathlib import Path
from typing import Any, Callable

REPO = Path(__file__).resolve().parent.parent
FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", "--disable-dev-shm-usage", "--window-size=1100,1000"]
PIECE = 8 * 1024 * 1024  # the page's tus piece (index_page.py)
UPLOAD_KEY = "muxserver-upload:"  # the page's localStorage prefix for unfinished uploads
#: How long any one thing may take before the check fails: generous, for busy machines.
PATIENCE = 90.0


class CheckFailed(Exception):
    """A feature of the page did not do what it should."""


def missing_tools() -> str:
    """Why the tour cannot run here ("" when it can)."""
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install selenium)"
    if not (shutil.which("chromium") or shutil.which("chromium-browser")):
        return "chromium is not installed (apt-get install chromium chromium-driver)"
    if not shutil.which("chromedriver"):
        return "chromedriver is not installed (apt-get install chromium-driver)"
    return ""


def wait_for(predicate: Callable[[], Any], what: str, timeout: float = PATIENCE) -> Any:
    """Poll ``predicate`` until it gives something true; fail with ``what`` if it never does."""
    from selenium.common.exceptions import (NoSuchElementException,
                                            StaleElementReferenceException)

    deadline = time.monotonic() + timeout
    while True:
        try:
            value = predicate()
        except (NoSuchElementException, StaleElementReferenceException):
            value = None  # not there yet, or replaced by the page meanwhile: look again
        if value:
            return value
        if time.monotonic() > deadline:
            raise CheckFailed(what)
        time.sleep(0.05)


def sha256_of(path: Path) -> str:
    with open(path, "rb") as handle:
        return hashlib.file_digest(handle, "sha256").hexdigest()


def start_server(root: Path, log: Path, *flags: str) -> tuple[subprocess.Popen, int]:
    """``python -m muxserver`` on ``root``, on a port the system picks; its log to ``log``."""
    with open(log, "w") as out:
        server = subprocess.Popen([sys.executable, "-m", "muxserver", "--port", "0", "--root",
                                   str(root), "--no-console", *flags],
                                  cwd=REPO, stdout=out, stderr=subprocess.STDOUT, text=True)
    try:
        line = wait_for(lambda: server.poll() is not None or next(
            (l for l in log.read_text().splitlines() if l.startswith("listening on")), None),
            "the server did not start")
        if server.poll() is not None:
            raise CheckFailed("the server stopped: " + log.read_text())
        return server, int(line.split()[2].rsplit(":", 1)[1])
    except BaseException:
        stop(server)
        raise


def stop(server: subprocess.Popen) -> None:
    server.terminate()
    try:
        server.wait(timeout=15)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


def files_below(folder: Path) -> dict[str, str]:
    """Relative path -> SHA-256 of every file below ``folder`` (hidden ones included)."""
    return {path.relative_to(folder).as_posix(): sha256_of(path)
            for path in sorted(folder.rglob("*")) if path.is_file()}


class Tour:
    """A muxserver on a scratch root and a headless Chromium looking at it."""

    #: how the server is started (a subclass serves otherwise)
    FLAGS: tuple[str, ...] = ("--allow-delete", "--allow-overwrite")

    def __init__(self, work: Path) -> None:
        from selenium import webdriver

        self.work = work
        self.root, self.downloads, self.source = work / "root", work / "downloads", work / "src"
        for path in (self.root, self.downloads, self.source, work / "profile"):
            path.mkdir(parents=True)
        self.populate()
        self.server = None
        self.browser = None
        try:
            self.server, self.port = start_server(self.root, work / "server.log",
                                                  *self.server_flags())
            options = webdriver.ChromeOptions()
            options.binary_location = shutil.which("chromium") or shutil.which(
                "chromium-browser")
            for flag in FLAGS + [f"--user-data-dir={work / 'profile'}"]:
                options.add_argument(flag)
            options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
            options.add_experimental_option("prefs", {
                "download.default_directory": str(self.downloads),
                "download.prompt_for_download": False})
            self.browser = webdriver.Chrome(options=options, service=webdriver.ChromeService(
                executable_path=shutil.which("chromedriver")))
            self.browser.set_script_timeout(PATIENCE)
            self.base = f"http://127.0.0.1:{self.port}/"
            self.browser.get(self.base)
        except BaseException:
            self.close()
            raise

    def server_flags(self) -> list[str]:
        return list(self.FLAGS)

    def populate(self) -> None:
        """What a person's shared folder might hold, and a folder to upload."""
        (self.root / "existing <b>bold.txt").write_text("already here")
        (self.root / "notes.txt").write_text("milk, eggs, the SHA-256 of everything\n")
        (self.root / "report 2026.pdf").write_bytes(os.urandom(1_400_000))
        photos = self.root / "holiday photos"
        (photos / "day 2").mkdir(parents=True)
        for index in range(1, 4):
            (photos / f"IMG_00{index}.jpg").write_bytes(os.urandom(200_000 * index))
        (photos / "day 2" / "beach.jpg").write_bytes(os.urandom(321_000))
        (photos / "day 2" / "empty.txt").write_bytes(b"")
        album = self.source / "album"
        (album / "inner").mkdir(parents=True)
        (album / "a.txt").write_text("first\n")
        (album / "inner" / "b.bin").write_bytes(os.urandom(150_000))
        (album / "inner" / "empty").write_bytes(b"")
        (album / "ünïcode name.txt").write_text("names as typed\n")
        (album / "inner" / "empty folder").mkdir()

    def close(self) -> None:
        try:
            if self.browser is not None:
                self.browser.quit()
        finally:
            if self.server is not None:
                stop(self.server)

    # -- helpers

    def by(self, css: str):
        from selenium.webdriver.common.by import By
        return self.browser.find_elements(By.CSS_SELECTOR, css)

    def one(self, css: str):
        found = self.by(css)
        if not found:
            raise CheckFailed(f"the page has no {css}")
        return found[0]

    def open(self, path: str = "") -> None:
        self.browser.get(self.base + path)
        wait_for(lambda: self.browser.execute_script("return document.readyState") ==
                 "complete", f"/{path} did not load")

    def row(self, name: str):
        """The listing's row of ``name`` (looked up in the page in one step: the page
        replaces its rows when it refreshes the listing)."""
        return self.browser.execute_script(
            "return Array.from(document.querySelectorAll('#entries tr[data-name]'))"
            ".find(r => r.dataset.name === arguments[0]) || null", name)

    def names(self) -> list[str]:
        """The names the listing shows, top to bottom."""
        return self.browser.execute_script(
            "return Array.from(document.querySelectorAll('#entries tr[data-name]'))"
            ".filter(r => !r.hidden).map(r => r.dataset.name)")

    def upload_states(self) -> list[str]:
        """Each upload's line: its name, two spaces, its state."""
        return self.browser.execute_script(
            "return Array.from(document.querySelectorAll('#uploads li')).map(li => "
            "li.children[0].textContent + '  ' + li.children[1].textContent)")

    def press(self, name: str, css: str) -> None:
        """Click the element ``css`` in the row of ``name`` (once the row is there)."""
        def attempt():
            row = self.row(name)
            if row is None:
                return False
            row.find_element("css selector", css).click()
            return True
        wait_for(attempt, f"no {css} in the row of {name}")

    def console_errors(self, allowed: tuple[str, ...] = ()) -> list[str]:
        """The console's errors since the last look, but those expected (``allowed``)."""
        return [entry["message"] for entry in self.browser.get_log("browser")
                if entry["level"] == "SEVERE"
                and not any(text in entry["message"] for text in allowed)]

    def quiet(self, allowed: tuple[str, ...] = ()) -> None:
        errors = self.console_errors(allowed)
        if errors:
            raise CheckFailed("the page logged errors: " + "; ".join(errors))

    def tus(self, method: str, url: str) -> http.client.HTTPResponse:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PATIENCE)
        connection.request(method, url, headers={"Tus-Resumable": "1.0.0"})
        response = connection.getresponse()
        response.read()
        connection.close()
        return response

    def cdp(self, command: str, **params: Any) -> Any:
        return self.browser.execute_cdp_cmd(command, params)

    def wait_uploads_done(self, count: int) -> list[str]:
        def finished():
            states = self.upload_states()
            failed = self.browser.execute_script(
                "return Array.from(document.querySelectorAll('#uploads .state.err'))"
                ".map(s => s.textContent)")
            if failed:
                raise CheckFailed("an upload failed: " + " | ".join(failed))
            done = [s for s in states if "done" in s]
            return states if len(done) >= count else None
        return wait_for(finished, f"{count} upload(s) never reported done: "
                                  f"{self.upload_states()}")

    # -- the checks, in the order the tour takes them

    def check_listing(self) -> str:
        from selenium.webdriver.common.keys import Keys

        self.open()
        source = self.browser.page_source.replace("&lt;", "<").replace("&gt;", ">")
        if "existing <b>bold.txt" not in source or self.by("td.name b"):
            raise CheckFailed("a name with HTML in it was not shown as text")
        size = self.row("report 2026.pdf").find_element("css selector", "td.num").text
        if size != "1.3 MiB":
            raise CheckFailed(f"report 2026.pdf shows its size as {size!r}, not 1.3 MiB")
        if self.names()[0] != "holiday photos":
            raise CheckFailed(f"folders do not come first: {self.names()}")
        self.one('th[data-key="size"] button').click()
        files = [n for n in self.names() if n != "holiday photos"]
        wanted = sorted(files, key=lambda n: (self.root / n).stat().st_size)
        if files != wanted:
            raise CheckFailed(f"sorted by size: {files}, not {wanted}")
        self.one('th[data-key="size"] button').click()
        if [n for n in self.names() if n != "holiday photos"] != wanted[::-1]:
            raise CheckFailed("a second click does not reverse the order")
        self.one("#filter").send_keys("NOTE")
        if self.names() != ["notes.txt"]:
            raise CheckFailed(f"filtering by 'NOTE' leaves {self.names()}")
        for _ in "NOTE":  # (what a person does; clear() would fire no input event)
            self.one("#filter").send_keys(Keys.BACKSPACE)
        if len(self.names()) != len(list(self.root.iterdir())):
            raise CheckFailed(f"an empty filter leaves {self.names()}")
        self.press("notes.txt", 'button[title^="show the SHA"]')
        sha = wait_for(lambda: self.row("notes.txt").find_element(
            "css selector", "code.sha").text, "the SHA-256 was never shown")
        if sha != sha256_of(self.root / "notes.txt"):
            raise CheckFailed(f"the page shows SHA-256 {sha}, not the file's")
        self.keyboard_reaches("#pick-files", Keys)
        self.quiet()
        return ("listing: HTML in names stays text, 1.3 MiB, folders first, sort by size "
                "both ways, filter, SHA-256 on demand, the upload buttons reached by Tab")

    def keyboard_reaches(self, css: str, keys) -> None:
        """Tab from the filter box until ``css`` has the focus (every control on the way
        is one a keyboard can use)."""
        self.one("#filter").click()
        for _ in range(200):
            if self.browser.execute_script(
                    "return document.activeElement.matches(arguments[0])", css):
                return
            self.browser.switch_to.active_element.send_keys(keys.TAB)
        raise CheckFailed(f"Tab never reaches {css}")

    def check_upload_file(self) -> str:
        data = os.urandom(3 * 1024 * 1024 + 11)
        picked = self.work / "from the browser.bin"
        picked.write_bytes(data)
        self.one("#files").send_keys(str(picked))
        states = self.wait_uploads_done(1)
        if "verified" not in states[-1]:
            raise CheckFailed(f"the upload does not say it was verified: {states[-1]}")
        bar = self.one("#uploads li:last-child progress")
        if bar.get_attribute("value") != bar.get_attribute("max"):
            raise CheckFailed("the progress bar did not reach its end")
        stored = self.root / picked.name
        if not stored.exists() or stored.read_bytes() != data:
            raise CheckFailed("the server did not store the uploaded bytes")
        wait_for(lambda: self.row(picked.name), "the listing did not show the upload")
        self.quiet()
        return f"file picker: {len(data)} bytes stored, verified, listed without a reload"

    def drop(self, *paths: Path) -> None:
        """Drop files or folders from the disk on the page, as a person's mouse would."""
        data = {"items": [], "files": [str(p) for p in paths], "dragOperationsMask": 1}
        for kind in ("dragEnter", "dragOver", "drop"):
            self.cdp("Input.dispatchDragEvent", type=kind, x=400, y=400, data=data)

    def check_drop_folder(self) -> str:
        self.open()
        album = self.source / "album"
        self.drop(album)
        wanted = files_below(album)
        self.wait_uploads_done(len(wanted))
        got = files_below(self.root / "album")
        if got != wanted:
            raise CheckFailed(f"the dropped folder arrived as {sorted(got)}, not "
                              f"{sorted(wanted)} (or with other bytes)")
        wait_for(lambda: self.row("album"), "the listing did not show the dropped folder")
        wait_for(lambda: (self.root / "album" / "inner" / "empty folder").is_dir(),
                 "the dropped folder's empty folder was not made")
        self.quiet()
        return (f"dropped folder: {len(wanted)} files at their relative paths, byte for "
                "byte, and its empty folder")

    def unfinished_url(self) -> str | None:
        return self.browser.execute_script(
            "for (let i = 0; i < localStorage.length; i++) {"
            "  const k = localStorage.key(i);"
            "  if (k.startsWith(arguments[0])) return localStorage.getItem(k); }"
            "return null;", UPLOAD_KEY)

    def hidden_sizes(self) -> dict[str, int]:
        """The uploads the server holds under a hidden name in the served folder (partial
        files, or those a request is writing), with their sizes."""
        return {entry.name: entry.stat().st_size for entry in os.scandir(self.root)
                if entry.name.startswith(".muxserver-") and entry.is_file()}

    def hidden_bytes(self) -> int:
        """The size of the largest of them."""
        return max(self.hidden_sizes().values(), default=0)

    def link(self, offline: bool = False, upload: int = -1) -> None:
        """The browser's network: ``offline``, or ``upload`` bytes per second up (-1:
        as fast as it goes)."""
        self.cdp("Network.enable")
        self.cdp("Network.emulateNetworkConditions", offline=offline, latency=0,
                 downloadThroughput=-1, uploadThroughput=upload)

    @contextlib.contextmanager
    def slow_link(self, rate: int = 4 * 1024 * 1024):
        """``rate`` bytes/s up (4 MiB/s), capped by the browser: an upload of a few
        pieces then takes seconds, time enough to interrupt it once the server holds its
        first piece."""
        self.link(upload=rate)
        try:
            yield
        finally:
            self.link()

    def upload_one_piece_of(self, path: Path) -> str:
        """Pick ``path`` in the page; return its tus URL once the server holds a piece."""
        self.one("#files").send_keys(str(path))
        url = wait_for(self.unfinished_url, "the page did not remember the upload")
        # (the hidden file the pieces go to, on the server's disk: asking the server
        # (HEAD) races the page, which writes its next piece at once: 423 meanwhile)
        wait_for(lambda: self.hidden_bytes() >= PIECE, "the server never held a piece")
        return url

    def check_resume_after_reload(self) -> str:
        big = self.work / "big.bin"
        big.write_bytes(os.urandom(3 * PIECE + 12345))
        self.open()
        with self.slow_link():
            url = self.upload_one_piece_of(big)
            self.browser.refresh()
        # (the server may still be ending the piece the reload cut off: 423 until then)
        said = ["nothing"]  # (what HEAD said last: the message, if it never holds any)

        def held_now() -> int:
            response = self.tus("HEAD", url)
            said[0] = f"{response.status} Upload-Offset: {response.getheader('Upload-Offset')}"
            return int(response.getheader("Upload-Offset") or 0) if response.status == 200 else 0
        try:
            held = wait_for(held_now, "")
        except CheckFailed:
            raise CheckFailed(f"the server held nothing after the reload: HEAD said {said[0]}; "
                              f"hidden files {self.hidden_sizes()}") from None
        if not 0 < held < big.stat().st_size or (self.root / big.name).exists():
            raise CheckFailed(f"after the reload the server holds {held} bytes (or the "
                              f"file is visible under its name)")
        note = wait_for(lambda: self.one("#resumable").text, "no unfinished upload shown")
        if "big.bin" not in note:
            raise CheckFailed(f"the page does not name the unfinished upload: {note!r}")
        self.browser.execute_script(  # every state the upload passes through
            "window.seen = []; new MutationObserver(() => { for (const s of "
            "document.querySelectorAll('#uploads .state')) window.seen.push(s.textContent); })"
            ".observe(document.getElementById('uploads'), "
            "{subtree: true, childList: true, characterData: true});")
        self.one("#files").send_keys(str(big))
        self.wait_uploads_done(1)
        seen = self.browser.execute_script("return window.seen")
        if not any(s.startswith("resuming at") for s in seen):
            raise CheckFailed(f"the upload started over instead of resuming: {seen[:5]}")
        if sha256_of(self.root / big.name) != sha256_of(big):
            raise CheckFailed("the resumed upload stored other bytes")
        if self.one("#resumable").is_displayed() or self.unfinished_url():
            raise CheckFailed("the finished upload is still listed as unfinished")
        self.quiet()
        return (f"reload mid-upload: server held {held} of {big.stat().st_size} bytes under "
                f"no final name; picked again, it resumed there; stored bytes identical")

    def check_network_loss(self) -> str:
        lost = self.work / "over a bad link.bin"
        # (16 MiB still to go at 2 MiB/s when the first piece is held: 8 s to notice it
        # and cut the network, however busy the machine)
        lost.write_bytes(os.urandom(3 * PIECE + 999))
        self.open()
        with self.slow_link(2 * 1024 * 1024):
            self.upload_one_piece_of(lost)
            self.link(offline=True)
            wait_for(lambda: any("trying again" in s for s in self.upload_states()),
                     f"the page did not notice the lost network: {self.upload_states()}")
        self.wait_uploads_done(1)
        if sha256_of(self.root / lost.name) != sha256_of(lost):
            raise CheckFailed("the upload resumed after the network came back stored other "
                              "bytes")
        self.quiet(allowed=("ERR_INTERNET_DISCONNECTED",))
        return "network lost mid-upload: the page waited, asked again, and finished it"

    def check_same_name(self) -> str:
        """A name that is taken is asked about first, each answer doing what it says."""
        self.open()
        again = self.work / "notes.txt"
        before = (self.root / "notes.txt").read_text()
        again.write_text("another notes file")
        self.one("#files").send_keys(str(again))
        offered = self.answer("skip")
        if offered != ["replace", "both", "skip"]:
            raise CheckFailed(f"a taken name offers {offered}")
        if (self.root / "notes.txt").read_text() != before or self.upload_states():
            raise CheckFailed("skipped, and yet uploaded")
        self.one("#files").send_keys(str(again))
        self.answer("both")
        self.wait_uploads_done(1)
        kept = self.root / "notes (2).txt"
        if not kept.exists() or kept.read_text() != "another notes file" or (
                self.root / "notes.txt").read_text() != before:
            raise CheckFailed("keep both did not keep both")
        again.write_text("the notes, replaced")
        self.one("#files").send_keys(str(again))
        self.answer("replace")
        wait_for(lambda: (self.root / "notes.txt").read_text() == "the notes, replaced",
                 "replace did not replace")
        two = self.work / "two at once"
        two.mkdir()
        (two / "notes.txt").write_text("a third notes file")
        (two / "existing <b>bold.txt").write_text("not wanted")
        self.one("#files").send_keys("\n".join(str(p) for p in sorted(two.iterdir())))
        self.answer("skip")  # (the first question: each gets its own answer)
        self.answer("both")
        self.wait_uploads_done(3)
        if (self.root / "existing <b>bold (2).txt").exists() or not (
                self.root / "notes (3).txt").exists():
            raise CheckFailed("two taken names did not get an answer each")
        self.quiet()
        return ("a taken name asks first: skip, keep both (notes (2).txt), replace; two "
                "at once, an answer each")

    def check_queue(self, shots: Path | None = None) -> str:
        """Three files at once: each a row, and a line for the whole queue; the files'
        own times kept."""
        self.open()
        picked = []
        for index, size in enumerate((3 * PIECE, 2 * PIECE + 5, 4321)):
            path = self.work / f"queued {'for the picture ' if shots else ''}{index}.bin"
            path.write_bytes(os.urandom(size))
            os.utime(path, (1_600_000_000 + index, 1_600_000_000 + index))
            picked.append(path)
        self.browser.execute_script(  # every line the queue shows, as it changes
            "window.queueSaid = []; new MutationObserver(() => window.queueSaid.push("
            "document.getElementById('queue').textContent)).observe("
            "document.getElementById('queue'), {subtree: true, childList: true, "
            "characterData: true});")
        self.one("#files").send_keys("\n".join(str(p) for p in picked))
        if shots is not None:  # (held under way: the server paused once a piece is in)
            wait_for(lambda: any(p.stat().st_size >= PIECE for p in
                                 self.root.glob(".muxserver-*") if p.is_file()),
                     "the server never held a piece")
            os.kill(self.server.pid, signal.SIGSTOP)
            try:
                wait_for(lambda: " 0 B " not in self.one("#queue").text,
                         "the queue shows no progress")
                self.shoot_three(shots, "queue")
            finally:
                os.kill(self.server.pid, signal.SIGCONT)
        self.wait_uploads_done(3)
        done = wait_for(lambda: (lambda t: t if t.startswith("Uploaded: 3 of 3 files")
                                 else None)(self.one("#queue").text), "the queue did not end")
        said = self.browser.execute_script("return window.queueSaid")
        under_way = [line for line in said if line.startswith("Uploading: ")
                     and "of 3 files" in line and "/s, " in line]
        if not under_way:
            raise CheckFailed(f"no line for the whole queue while under way: {said[:5]}")
        line = under_way[len(under_way) // 2]
        for index, path in enumerate(picked):
            stored = self.root / path.name
            if sha256_of(stored) != sha256_of(path):
                raise CheckFailed(f"{path.name} arrived with other bytes")
            if abs(stored.stat().st_mtime - (1_600_000_000 + index)) > 0.01:
                raise CheckFailed(f"{path.name} lost its time: {stored.stat().st_mtime}")
        self.quiet()
        return f"queue of three: {line!r} while under way, then {done!r}; their times kept"

    def answer(self, choice: str, text: str | None = None) -> list[str]:
        """Answer the page's own question (``choice``: the value of one of its buttons;
        ``text``: typed into its field first); the choices it offered."""
        wait_for(lambda: self.browser.execute_script(
            "return document.getElementById('ask').open"), "the page asked nothing")
        offered = self.browser.execute_script(
            "return Array.from(document.querySelectorAll('#ask-buttons button'))"
            ".map(b => b.dataset.choice)")
        if text is not None:
            field = self.one("#ask-input")
            field.clear()
            field.send_keys(text)
        asked = self.one("#ask-title").text
        self.one(f'#ask-buttons button[data-choice="{choice}"]').click()
        wait_for(lambda: self.browser.execute_script(  # (closed, or the next question)
            "const d = document.getElementById('ask'); return !d.open || "
            "document.getElementById('ask-title').textContent !== arguments[0]", asked),
            "the question stayed open")
        return offered

    def check_folder_rename_delete(self) -> str:
        (self.root / "draft.txt").write_text("a first draft\n")
        self.open()
        self.one("#newfolder").click()
        self.answer("make", "made here")
        wait_for(lambda: self.row("made here"), "the new folder is not listed")
        if not (self.root / "made here").is_dir():
            raise CheckFailed("the new folder was not made")
        self.press("draft.txt", 'button[title^="rename"]')
        self.answer("rename", "renamed.bin")
        wait_for(lambda: self.row("renamed.bin") and not self.row("draft.txt"),
                 "the renamed file is not listed under its new name")
        if not (self.root / "renamed.bin").exists():
            raise CheckFailed("the file was not renamed on the server")
        self.press("renamed.bin", 'button[title^="delete"]')
        self.answer("delete")
        wait_for(lambda: not self.row("renamed.bin"), "the deleted file is still listed")
        if (self.root / "renamed.bin").exists():
            raise CheckFailed("the file was not deleted on the server")
        self.quiet()
        return "new folder, rename and delete through the page's buttons and its own dialogs"

    def check_folder_zip(self) -> str:
        self.open()
        before = set(self.downloads.iterdir())
        self.press("holiday photos", "td.acts a")

        def saved():
            new = [p for p in set(self.downloads.iterdir()) - before]
            return new if new and all(p.suffix == ".zip" for p in new) else None
        archive = wait_for(saved, "the folder's zip was never saved")[0]
        folder = self.root / "holiday photos"
        wanted = files_below(folder)
        with zipfile.ZipFile(archive) as opened:
            tops = {info.filename.split("/", 1)[0] for info in opened.infolist()}
            if tops != {folder.name}:
                raise CheckFailed(f"the zip's members are not all in one folder named "
                                  f"{folder.name!r}: {sorted(tops)}")
            got = {info.filename.split("/", 1)[1]: hashlib.sha256(opened.read(info)).hexdigest()
                   for info in opened.infolist() if not info.is_dir()}
        if got != wanted:
            raise CheckFailed(f"the zip holds {sorted(got)}, not {sorted(wanted)} (or other "
                              f"bytes)")
        self.quiet()
        return f"folder as zip: {archive.name}, all {len(wanted)} members identical"

    def check_drop_box(self) -> str:
        """A server that takes uploads and shows nothing (--upload-only): the page has
        no listing and no other controls; a second file of the same name lands beside
        the first instead of being refused (refusing would tell that the name exists)."""
        inbox = self.work / "inbox"
        inbox.mkdir()
        (inbox / "secret.txt").write_text("not for the uploader's eyes")
        server, port = start_server(inbox, self.work / "inbox.log", "--upload-only")
        try:
            self.browser.get(f"http://127.0.0.1:{port}/")
            if "secret.txt" in self.browser.page_source:
                raise CheckFailed("the drop box shows a name")
            shown = [css for css in ("#filter", "#newfolder", "#summary", "header .button")
                     if self.one(css).is_displayed()]
            if shown:
                raise CheckFailed(f"the drop box shows controls it cannot use: {shown}")
            handed = self.work / "report.txt"
            handed.write_text("first")
            self.one("#files").send_keys(str(handed))
            self.wait_uploads_done(1)
            handed.write_text("second, same name")
            self.one("#files").send_keys(str(handed))
            self.wait_uploads_done(2)
            stored = {p.name: p.read_text() for p in inbox.iterdir()}
            if stored != {"secret.txt": "not for the uploader's eyes", "report.txt": "first",
                          "report (2).txt": "second, same name"}:
                raise CheckFailed(f"the drop box holds {stored}")
            self.quiet()
        finally:
            stop(server)
        return "drop box: no names, no listing controls, a taken name stored beside"

    def check_search(self) -> str:
        """Enter in the filter box searches every folder below this one."""
        from selenium.webdriver.common.keys import Keys
        self.open()
        box = self.one("#filter")
        box.send_keys("BEACH", Keys.ENTER)
        wait_for(lambda: self.names() == ["holiday photos/day 2/beach.jpg"],
                 f"the search found {self.names()}")
        self.press("holiday photos/day 2/beach.jpg", "td.name a")
        wait_for(lambda: self.browser.current_url.endswith("/holiday%20photos/day%202/beach.jpg"),
                 "the found file's link leads elsewhere")
        self.open()
        self.one("#filter").send_keys("no such name anywhere", Keys.ENTER)
        wait_for(lambda: self.one("#nomatch").is_displayed(), "no 'nothing found' row")
        self.quiet()
        return "search below a folder: a match two folders down, its link; none said so"

    def check_folder_counts(self) -> str:
        """A folder's row says how many entries it holds."""
        self.open()
        said = wait_for(lambda: (lambda row: row and "items" in row.text and row.text)(
            self.row("holiday photos")), "the folder's row says nothing of its entries")
        if "4 items" not in said:  # (three photos and the folder day 2)
            raise CheckFailed(f"the folder's row says {said!r}")
        self.quiet()
        return "a folder's row says how many entries it holds: 4 items"

    def check_localhost(self) -> str:
        self.browser.get(f"http://localhost:{self.port}/")
        wait_for(lambda: self.row("existing <b>bold.txt"), "the index is not served on "
                                                            "localhost")
        self.press("existing <b>bold.txt", "td.name a")
        wait_for(lambda: self.browser.find_element("tag name", "body").text == "already here",
                 "the text file is not shown from localhost")
        self.quiet()
        return "localhost: the same index, a text file shown inline"

    def shoot_three(self, folder: Path, stem: str) -> None:
        """Light, dark and a phone's width of what is on the screen now."""
        folder.mkdir(parents=True, exist_ok=True)
        self.browser.save_screenshot(str(folder / f"{stem}-light.png"))
        self.cdp("Emulation.setEmulatedMedia", features=[
            {"name": "prefers-color-scheme", "value": "dark"}])
        self.browser.save_screenshot(str(folder / f"{stem}-dark.png"))
        self.cdp("Emulation.setDeviceMetricsOverride", width=390, height=844,
                 deviceScaleFactor=2, mobile=True)
        self.cdp("Emulation.setEmulatedMedia", features=[
            {"name": "prefers-color-scheme", "value": "light"}])
        self.browser.save_screenshot(str(folder / f"{stem}-phone.png"))
        self.cdp("Emulation.clearDeviceMetricsOverride")
        self.cdp("Emulation.setEmulatedMedia", features=[])

    def screenshots(self, folder: Path) -> str:
        """The page as a person sees it: light, dark, and a phone's width."""
        folder.mkdir(parents=True, exist_ok=True)
        self.open()
        shown = []
        for name, size in (("minutes 2026-11.odt", 48_213), ("scan 0042.png", 2_831_107)):
            shown.append(self.work / name)
            shown[-1].write_bytes(os.urandom(size))
        self.one("#files").send_keys("\n".join(str(p) for p in shown))
        self.wait_uploads_done(len(shown))
        self.press("notes.txt", 'button[title^="show the SHA"]')
        wait_for(lambda: self.by("code.sha"), "no SHA-256 for the screenshot")
        self.browser.save_screenshot(str(folder / "index-light.png"))
        self.cdp("Emulation.setEmulatedMedia", features=[
            {"name": "prefers-color-scheme", "value": "dark"}])
        self.browser.save_screenshot(str(folder / "index-dark.png"))
        self.cdp("Emulation.setDeviceMetricsOverride", width=390, height=844,
                 deviceScaleFactor=2, mobile=True)
        self.open()
        self.browser.save_screenshot(str(folder / "index-phone-dark.png"))
        self.cdp("Emulation.setEmulatedMedia", features=[
            {"name": "prefers-color-scheme", "value": "light"}])
        self.browser.save_screenshot(str(folder / "index-phone.png"))
        self.cdp("Emulation.clearDeviceMetricsOverride")
        self.cdp("Emulation.setEmulatedMedia", features=[])
        self.open()
        again = self.work / "notes.txt"
        again.write_text("yet another notes file")
        self.one("#files").send_keys(str(again))
        wait_for(lambda: self.browser.execute_script(
            "return document.getElementById('ask').open"), "the page asked nothing")
        self.shoot_three(folder, "same-name")
        self.answer("skip")
        self.check_queue(folder)
        self.quiet()
        return (f"screenshots: {folder}/index-{{light,dark,phone,phone-dark}}.png, "
                f"{folder}/{{same-name,queue}}-{{light,dark,phone}}.png")


class SharingTour(Tour):
    """A server with people who sign in (a user file), and the links they share."""

    FLAGS = ("--allow-delete", "--allow-overwrite")
    USERS = {"alice": ("alice's long password", "read,write,delete", "friends/alice"),
             "bob": ("bob's long password", "read,write,delete", "")}

    def server_flags(self) -> list[str]:
        users = self.work / "users"
        for name, (password, rights, folder) in self.USERS.items():
            command = [sys.executable, "-m", "muxserver", "user", "add", name, "--file",
                       str(users), "--rights", rights] + (["--path", folder] if folder else [])
            subprocess.run(command, input=password + "\n", text=True, check=True, cwd=REPO,
                           capture_output=True, timeout=PATIENCE)
        return [*self.FLAGS, "--token-file", str(users)]

    def populate(self) -> None:
        (self.root / "friends" / "alice" / "photos").mkdir(parents=True)
        (self.root / "friends" / "alice" / "from bob.txt").write_text("hello alice\n")
        (self.root / "friends" / "alice" / "photos" / "cat.jpg").write_bytes(os.urandom(90_000))
        (self.root / "friends" / "carol").mkdir()
        (self.root / "friends" / "carol" / "carol's.txt").write_text("not alice's\n")
        (self.root / "private").mkdir()
        (self.root / "private" / "taxes.pdf").write_bytes(os.urandom(120_000))
        (self.root / "notes.txt").write_text("milk, eggs\n")
        (self.root / "shared").mkdir()
        (self.root / "shared" / "poster.txt").write_text("the poster\n")
        (self.root / "inbox").mkdir()

    # -- helpers

    def page_title(self) -> str:
        from selenium.common.exceptions import WebDriverException
        try:  # (asked while a page is being replaced: no answer yet)
            return self.browser.execute_script("return document.querySelector('h1') ? "
                                               "document.querySelector('h1').textContent : ''")
        except WebDriverException:
            return ""

    def sign_in(self, name: str, password: str) -> None:
        self.open()
        wait_for(lambda: self.page_title() == "Sign in", "no sign-in page")
        self.one("#name").clear()
        self.one("#name").send_keys(name)
        self.one("#password").clear()
        self.one("#password").send_keys(password)
        self.one("#go").click()

    def sign_out(self) -> None:
        self.open()
        wait_for(lambda: self.by("#signout") and self.one("#signout").is_displayed(),
                 "no sign-out button")
        self.one("#signout").click()
        wait_for(lambda: self.page_title() == "Sign in", "signing out did not lead to "
                                                         "the sign-in page")

    def fetch(self, method: str, path: str, headers: dict[str, str] | None = None) -> list:
        """[status, body] of a request the page's own script makes (its cookie, its
        origin): what a signed-in person's browser can reach."""
        return self.browser.execute_async_script(
            "const done = arguments[arguments.length - 1];"
            "fetch(arguments[1], {method: arguments[0], headers: arguments[2],"
            " credentials: 'same-origin'}).then(async r => done([r.status, await r.text()]))"
            ".catch(e => done([0, String(e)]));", method, path, headers or {})

    def api(self, method: str, path: str, user: str = "bob") -> tuple[int, bytes]:
        """A request outside the browser, as ``user`` (HTTP Basic)."""
        import base64
        password = self.USERS[user][0]
        auth = base64.b64encode(f"{user}:{password}".encode()).decode()
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=PATIENCE)
        try:
            connection.request(method, path, headers={"Authorization": "Basic " + auth})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()

    def make_link(self, name: str, write: bool = False) -> str:
        import json
        import urllib.parse
        query = urllib.parse.urlencode({"name": name, "write": "1" if write else "0"})
        status, body = self.api("POST", "/.muxserver-auth/share?" + query)
        if status != 201:
            raise CheckFailed(f"making a link to {name} answered {status}: {body!r}")
        return self.base.rstrip("/") + json.loads(body)["path"]

    def cookie(self) -> dict[str, Any]:
        cookies = self.cdp("Network.getCookies", urls=[self.base])["cookies"]
        found = [c for c in cookies if c["name"] == "muxserver_session"]
        return found[0] if found else {}

    # -- the checks

    def check_signin_page(self) -> str:
        """A browser without credentials gets the sign-in page (401), not a text."""
        self.open("friends/")
        wait_for(lambda: self.page_title() == "Sign in", "no sign-in page for a browser")
        if not (self.one("#name").is_displayed() and self.one("#password").is_displayed()):
            raise CheckFailed("the sign-in page shows no name and password fields")
        self.quiet(allowed=("401",))
        return "signed out: the sign-in page, a name and a password asked for"

    def check_wrong_password(self) -> str:
        self.sign_in("alice", "not the password")
        wait_for(lambda: "wrong name or password" in self.one("#message").text.lower(),
                 "a wrong password is not said on the page")
        if self.cookie():
            raise CheckFailed("a wrong password set a cookie")
        self.quiet(allowed=("401",))
        return "a wrong password: said on the page, no cookie"

    def check_sign_in_and_out(self) -> str:
        self.sign_in("alice", self.USERS["alice"][0])
        wait_for(lambda: self.row("from bob.txt"), "alice's folder is not shown after "
                                                   "signing in")
        if sorted(self.names()) != ["from bob.txt", "photos"]:
            raise CheckFailed(f"alice sees {self.names()}, not her folder")
        if self.one("#who-name").text != "alice":
            raise CheckFailed("the page does not say who is signed in")
        cookie = self.cookie()
        if not (cookie.get("httpOnly") and cookie.get("sameSite") == "Strict"
                and cookie.get("expires", 0) > time.time() + 29 * 86400):
            raise CheckFailed(f"the session cookie is not HttpOnly, Strict, 30 days: {cookie}")
        self.sign_out()
        if self.cookie():
            raise CheckFailed("signing out left the cookie")
        self.quiet(allowed=("401",))
        return "signed in as alice: her folder as the root, who is signed in, sign out"

    def check_folder_scope(self) -> str:
        """Alice, limited to friends/alice, reaches nothing above it by any HTTP route."""
        self.sign_in("alice", self.USERS["alice"][0])
        wait_for(lambda: self.row("from bob.txt"), "alice is not signed in")
        attempts = {
            "GET /private/taxes.pdf": self.fetch("GET", "/private/taxes.pdf"),
            "GET /../carol/": self.fetch("GET", "/%2E%2E/carol/"),
            "GET /notes.txt": self.fetch("GET", "/notes.txt"),
            "zip of /": self.fetch("GET", "/?download=tar"),
            "MOVE out": self.fetch("MOVE", "/from%20bob.txt",
                                   {"Destination": "/../carol/x.txt", "Overwrite": "F"}),
            "DELETE above": self.fetch("DELETE", "/../carol/carol's.txt"),
            "tus above": self.fetch("POST", "/.tus/", {
                "Tus-Resumable": "1.0.0", "Upload-Length": "2",
                "Upload-Metadata": "filename Li4vY2Fyb2wveC50eHQ="}),  # ../carol/x.txt
        }
        leaks = {what: answer for what, answer in attempts.items()
                 if what != "zip of /" and answer[0] < 400}
        if leaks:
            raise CheckFailed(f"alice reached above her folder: {leaks}")
        status, archive = attempts["zip of /"]
        if status != 200 or "taxes" in archive or "carol" in archive or "from bob" not in archive:
            raise CheckFailed("alice's archive of / is not exactly her folder")
        for text in [answer[1] for answer in attempts.values()]:
            if "friends" in text:
                raise CheckFailed(f"an answer named the folder above alice's: {text!r}")
        if not (self.root / "friends" / "carol" / "carol's.txt").exists():
            raise CheckFailed("carol's file is gone")
        self.sign_out()
        self.quiet(allowed=("401", "403", "404", "400", "409"))
        return "alice reaches nothing above her folder: get, listing, zip, mv, rm, tus"

    def check_share_dialog(self, shots: Path | None = None) -> str:
        self.sign_in("bob", self.USERS["bob"][0])
        wait_for(lambda: self.row("notes.txt"), "bob is not signed in")
        self.press("notes.txt", 'button[title^="make a link"]')
        wait_for(lambda: self.one("#share-dialog").is_displayed(), "no share dialog")
        self.one("#share-make").click()
        url = wait_for(lambda: self.one("#share-url").get_attribute("value"),
                       "the dialog shows no link")
        wait_for(lambda: self.by("#share-qr") and self.by("#share-qr")[0].get_attribute(
            "naturalWidth") not in (None, "0"), "the dialog shows no QR code")
        if "?share=" not in url or not url.startswith(self.base):
            raise CheckFailed(f"the dialog's link is {url!r}")
        if shots is not None:
            self.shoot_three(shots, "share-dialog")
        self.one("#share-close").click()
        self.sign_out()
        self.browser.get(url)
        wait_for(lambda: "milk, eggs" in self.browser.find_element("tag name", "body").text,
                 "the link to a file does not open it signed out")
        self.quiet(allowed=("401",))
        return "bob's share dialog: a link and its QR code; the link opens the file signed out"

    def check_links(self) -> str:
        """Links opened signed out: a folder, a drop box; a tampered and an expired one."""
        folder = self.make_link("shared")
        self.browser.get(folder)
        wait_for(lambda: self.row("poster.txt"), "the link to a folder does not list it")
        if self.names() != ["poster.txt"] or self.one("#who-name").text != "a shared link":
            raise CheckFailed(f"the folder link shows {self.names()}")
        if self.fetch("GET", "/notes.txt")[0] != 404:
            raise CheckFailed("the folder link reaches a file outside the folder")
        drop = self.make_link("inbox", write=True)
        self.browser.get(drop)
        wait_for(lambda: self.one("#drop").is_displayed(), "the drop box link shows no upload")
        handed = self.work / "for bob.txt"
        handed.write_text("dropped through a link")
        self.one("#files").send_keys(str(handed))
        self.wait_uploads_done(1)
        if (self.root / "inbox" / "for bob.txt").read_text() != "dropped through a link":
            raise CheckFailed("the drop box link did not store the file")
        tampered = folder[:-3] + ("AAA" if not folder.endswith("AAA") else "BBB")
        self.browser.get(tampered)
        wait_for(lambda: self.page_title() == "Link refused", "a tampered link is not refused")
        if "not valid" not in self.one("#note").text:
            raise CheckFailed(f"the tampered link's page says {self.one('#note').text!r}")
        self.browser.get(self.expired())
        wait_for(lambda: self.page_title() == "Link refused", "an expired link is not refused")
        if "expired" not in self.one("#note").text:
            raise CheckFailed(f"the expired link's page says {self.one('#note').text!r}")
        self.quiet(allowed=("401", "404"))
        return "links signed out: a folder, a drop box; tampered and expired ones refused"

    def expired(self) -> str:
        """A link that lived one second, once the clock has passed its end."""
        import json
        import urllib.parse
        query = urllib.parse.urlencode({"name": "shared", "expires": "1"})
        status, body = self.api("POST", "/.muxserver-auth/share?" + query)
        if status != 201:
            raise CheckFailed(f"making a short link answered {status}: {body!r}")
        made = json.loads(body)
        wait_for(lambda: time.time() > made["expires"] + 1, "the clock did not pass the "
                                                             "link's end")
        return self.base.rstrip("/") + made["path"]

    def screenshots(self, folder: Path) -> str:
        self.browser.delete_all_cookies()  # (a link's session, from the checks before)
        self.open()
        wait_for(lambda: self.page_title() == "Sign in", "no sign-in page")
        self.shoot_three(folder, "signin")
        self.check_share_dialog(folder)
        return (f"screenshots: {folder}/signin-{{light,dark,phone}}.png, "
                f"{folder}/share-dialog-{{light,dark,phone}}.png")


SHARING_CHECKS = ["check_signin_page", "check_wrong_password", "check_sign_in_and_out",
                  "check_folder_scope", "check_share_dialog", "check_links"]

#: The checks in tour order (later ones use what earlier ones uploaded).
CHECKS = ["check_listing", "check_upload_file", "check_drop_folder",
          "check_resume_after_reload", "check_network_loss", "check_same_name", "check_queue",
          "check_folder_rename_delete", "check_folder_zip", "check_drop_box",
          "check_search", "check_folder_counts", "check_localhost"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shots", default="browser-check",
                        help="folder for the screenshots (default: browser-check)")
    args = parser.parse_args()
    why = missing_tools()
    if why:
        print("SKIP: " + why)
        return 0
    work = Path(tempfile.mkdtemp(prefix="muxserver-browser-"))
    tour = None
    try:
        tour = Tour(work / "index")
        for name in CHECKS:
            print("ok   " + getattr(tour, name)(), flush=True)
        print("ok   " + tour.screenshots(Path(args.shots).resolve()))
        tour.close()
        tour = SharingTour(work / "sharing")
        for name in SHARING_CHECKS:
            print("ok   " + getattr(tour, name)(), flush=True)
        print("ok   " + tour.screenshots(Path(args.shots).resolve()))
        print("PASS: every feature of the index page works in headless Chromium")
        return 0
    except CheckFailed as failure:
        print(f"FAIL: {failure}")
        return 1
    finally:
        if tour is not None:
            tour.close()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
