"""What ``put`` and ``get`` print while they work, on stderr.

On a terminal: a rich progress bar per file in flight and an overall bar (bytes,
rate, ETA) when there are several files; each finished file leaves one line above
the bars. Anywhere else (a pipe, a log file): one plain line per finished file.
``--quiet`` prints failures only. Failures always get one line with the reason.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from .client import Operation, Result
from .names import printable
from .units import format_bytes

#: Extra advice for the command-line user, by (operation, error code).
HINTS = {
    ("put", "exists"): " (use --overwrite to replace it)",
    ("get", "is_directory"): " (use -r to fetch a directory)",
}


def describe(result: Result) -> str:
    """One line for a finished operation."""
    name = printable(result.name)
    if not result.ok:
        hint = HINTS.get((result.op, result.code), "")
        if result.op == "get" and os.path.exists(result.path + ".part"):
            hint += f" (kept {printable(result.path)}.part: get --resume continues it)"
        return f"muxserver: {result.op} {name} failed: {result.message}{hint}"
    local = printable(result.path)
    arrow = f"{local} -> {name}" if result.op == "put" else f"{name} -> {local}"
    digest = f", {result.digest.algorithm} {result.digest.hex[:12]}" if result.digest else ""
    return f"{result.op} {arrow} ({format_bytes(result.size)}{digest}) ok"


class TransferReport:
    """Progress callbacks for a Client, and the final tally."""

    def __init__(self, *, quiet: bool = False, files: int = 1, total_bytes: int | None = None,
                 stream: IO[str] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.quiet = quiet
        self.files = files
        self.failed = 0
        self.done = 0
        self._bars: Any = None
        self._tasks: dict[int, Any] = {}
        self._overall: Any = None
        self._moved: dict[int, int] = {}
        self._closed = False
        if not quiet and _is_terminal(self.stream):
            self._start_bars(total_bytes)

    def _start_bars(self, total_bytes: int | None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

        self._bars = Progress(TextColumn("{task.description}", markup=False),
                              BarColumn(), _bytes_column(), _rate_column(),
                              TimeRemainingColumn(),
                              console=Console(file=self.stream), transient=True)
        if self.files > 1:
            self._overall = self._bars.add_task(f"{self.files} files", total=total_bytes)
        self._bars.start()

    # -- Client callbacks

    def progress(self, op: Operation, done: int, total: int) -> None:
        if self._bars is None:
            return
        key = id(op)
        task = self._tasks.get(key)
        if task is None:
            task = self._bars.add_task(_short(printable(op.name)), total=total or None)
            self._tasks[key] = task
        self._bars.update(task, completed=done, total=total or None)
        if self._overall is not None:
            self._bars.advance(self._overall, done - self._moved.get(key, 0))
            self._moved[key] = done

    def finished(self, op: Operation) -> None:
        result = op.result
        self.done += 1
        if not result.ok:
            self.failed += 1
        task = self._tasks.pop(id(op), None)
        if self._bars is not None:
            if task is not None:
                self._bars.remove_task(task)
            if self._overall is not None:
                self._bars.update(self._overall, description=f"{self.done}/{self.files} files")
            if result.ok:
                self._bars.console.print(describe(result), markup=False, highlight=False)
        elif result.ok and not self.quiet:
            print(describe(result), file=self.stream, flush=True)
        if not result.ok:
            self._print_failure(describe(result))

    def _print_failure(self, line: str) -> None:
        if self._bars is not None:
            self._bars.console.print(line, markup=False, highlight=False, style="red")
        else:
            print(line, file=self.stream, flush=True)

    # -- the end

    def close(self) -> int:
        """Stop the bars; print the tally if something failed; return the exit status."""
        if self._bars is not None:
            self._bars.stop()
            self._bars = None
        if self._closed:
            return 1 if self.failed else 0
        self._closed = True
        if self.failed and self.done > 1:
            print(f"muxserver: {self.failed} of {self.done} transfers failed", file=self.stream)
        return 1 if self.failed else 0


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def _short(name: str, width: int = 30) -> str:
    return name if len(name) <= width else "…" + name[-(width - 1):]


def _bytes_column() -> Any:
    """Bytes done of the total, in the units ls and the console use (KiB, MiB, ...):
    rich's own columns would mix in kB/s."""
    from rich.progress import ProgressColumn
    from rich.text import Text

    class BytesColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            total = f"/{format_bytes(task.total)}" if task.total is not None else ""
            return Text(f"{format_bytes(task.completed)}{total}", style="progress.download")

    return BytesColumn()


def _rate_column() -> Any:
    from rich.progress import ProgressColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        def render(self, task: Any) -> Text:
            speed = task.finished_speed or task.speed
            return Text(f"{format_bytes(speed)}/s" if speed else "?",
                        style="progress.data.speed")

    return RateColumn()
