"""The live console: a rich view of every connection, redrawn from the event loop.

The console only *observes*. A loop timer (never another thread) asks the server for
a :class:`~muxserver.server.Snapshot` a few times a second, and :class:`ConsoleView`
turns it into a rich renderable: a header of totals, one row per connection (the
busiest first, with a "+K more" line when they do not fit), and the last log lines.
The server and the loop never import this module.

Names come from clients and are shown literally: every cell is a ``rich.text.Text``
(never parsed as markup, so ``[red]`` stays ``[red]``) and control characters are
escaped (:func:`~muxserver.names.printable`), so a hostile name can neither style
nor break the display.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from typing import TYPE_CHECKING, Any, Mapping, Protocol

from rich import box
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from .names import printable
from .turnlog import Lines
from .units import format_bytes, format_duration, short_bytes

if TYPE_CHECKING:
    from .loop import EventLoop
    from .server import ConnectionInfo, Snapshot


class Watched(Protocol):
    """What the console shows: a server, or the supervisor of several (workers.py)."""

    loop: "EventLoop"

    def snapshot(self) -> "Snapshot": ...

#: Redraws per second while something happens; once a second when all is quiet.
BUSY_INTERVAL = 0.25
IDLE_INTERVAL = 1.0
LOG_LINES = 6  # event lines shown at least (more when the terminal has the rows)
KEPT_LINES = 500  # event lines kept, for a tall terminal and for failures to stay
RATE_SMOOTHING = 0.5  # weight of the newest sample in the moving average


@dataclasses.dataclass(frozen=True)
class Column:
    title: str
    width: int | None  # None: the flexible column (the name) takes what is left
    justify: Any = "left"


COLUMNS = {
    "peer": Column("peer", 15),
    "op": Column("op", 4),
    "name": Column("name", None),
    # Wide enough for every state ("HTTP receiving body"): the name gets what is left.
    "state": Column("state", 19),
    "bar": Column("progress", 10),
    "percent": Column("%", 4, "right"),
    "rate": Column("rate", 11, "right"),
    "eta": Column("ETA", 7, "right"),
    "done": Column("done", 11, "right"),
    "buffers": Column("queued in/out", 13, "right"),
}
ALWAYS = ["peer", "op", "name", "state", "bar", "percent", "rate"]
OPTIONAL = ["eta", "buffers", "done"]  # added in this order while the name keeps its room
NAME_MIN_WIDTH = 16
#: A transfer without a byte for this long says so in its state ("stalled 12 s").
STALLED_AFTER = 3.0


def choose_columns(width: int) -> list[str]:
    """The columns that fit ``width``; an 80-column terminal keeps the essentials."""
    chosen = list(ALWAYS)
    used = sum(COLUMNS[c].width or 0 for c in chosen) + len(chosen) - 1
    for column in OPTIONAL:
        extra = (COLUMNS[column].width or 0) + 1
        if width - used - extra >= NAME_MIN_WIDTH:
            chosen.append(column)
            used += extra
    return chosen


@dataclasses.dataclass
class _Rate:
    when: float
    done: int
    rate: float = 0.0


class ConsoleView:
    """Snapshot in, renderable out; keeps only what rates need between frames."""

    def __init__(self, log_lines: int = LOG_LINES) -> None:
        #: the event lines kept (newest last), with whether each is a failure: the pane
        #: shows as many as the terminal has free rows, at least ``log_lines``
        self.log: collections.deque[tuple[bool, Text]] = collections.deque(maxlen=KEPT_LINES)
        self.log_lines = log_lines
        self._rates: dict[int, _Rate] = {}
        self._totals: _Rate | None = None
        self._wakeups: tuple[float, int, int] | None = None
        self.wakeup_rate = (0.0, 0.0)  # I/O wake-ups and timer wake-ups per second

    def add_log(self, when: float, level: int, message: str) -> None:
        """One event line; or several, one per line of ``message`` (a loop turn's
        transfer lines come as one record: see turnlog.py)."""
        style = "red" if level >= logging.ERROR else "yellow" if level >= logging.WARNING else ""
        stamp = time.strftime("%H:%M:%S ", time.localtime(when))
        for text in message.split("\n")[-(self.log.maxlen or 1):]:
            line = Text(stamp, style="dim")
            line.append(printable(text), style=style)
            self.log.append((level >= logging.WARNING, line))

    def shown_log(self, rows: int) -> list[Text]:
        """The event lines for ``rows`` rows: failures stay until newer failures push
        them out (a burst of ordinary lines must not hide the one that went wrong),
        the other rows show the newest lines."""
        rows = max(rows, 0)
        failures = [i for i, (failed, _) in enumerate(self.log) if failed][-rows:] if rows else []
        others = [i for i, (failed, _) in enumerate(self.log) if not failed]
        keep = set(failures) | set(others[len(others) - (rows - len(failures)):]
                                   if rows > len(failures) else [])
        return [line for i, (_, line) in enumerate(self.log) if i in keep]

    # -- rates

    def _connection_rate(self, info: "ConnectionInfo", now: float) -> float:
        if not info.op:  # (idle: whatever it moved before is not a rate now)
            self._rates.pop(info.id, None)
            return 0.0
        done = info.done if info.total else info.bytes_in + info.bytes_out
        prev = self._rates.get(info.id)
        if prev is None or done < prev.done:
            self._rates[info.id] = _Rate(now, done)
            return 0.0
        elapsed = now - prev.when
        if elapsed >= 0.2:
            sample = (done - prev.done) / elapsed
            prev.rate = sample if prev.rate == 0 else (
                RATE_SMOOTHING * sample + (1 - RATE_SMOOTHING) * prev.rate)
            prev.when, prev.done = now, done
        return prev.rate

    def _total_rate(self, snap: "Snapshot", now: float) -> float:
        moved = snap.bytes_in + snap.bytes_out
        prev = self._totals
        if prev is None:
            self._totals = _Rate(now, moved)
            return 0.0
        if now - prev.when >= 0.2:  # (never below 0: a count that went down is a restart)
            prev.rate = max(0.0, (moved - prev.done) / (now - prev.when))
            prev.when, prev.done = now, moved
        return prev.rate

    def _wakeup_rates(self, snap: "Snapshot", now: float) -> tuple[float, float]:
        prev = self._wakeups
        if prev is not None and now - prev[0] >= 0.5:
            elapsed = now - prev[0]
            self.wakeup_rate = (max(0.0, (snap.wakeups - snap.timeout_wakeups - prev[1])
                                    / elapsed),
                                max(0.0, (snap.timeout_wakeups - prev[2]) / elapsed))
        if prev is None or now - prev[0] >= 0.5:
            self._wakeups = (now, snap.wakeups - snap.timeout_wakeups, snap.timeout_wakeups)
        return self.wakeup_rate

    # -- rendering

    def render(self, snap: "Snapshot", now: float | None = None,
               max_rows: int = 20, width: int = 100, height: int = 0) -> RenderableType:
        """The frame; ``height``: the terminal's rows (0: unknown), which the table of
        connections takes what it needs of, up to ``max_rows``, and the event pane the rest."""
        now = time.monotonic() if now is None else now
        rates = {c.id: self._connection_rate(c, now) for c in snap.connections}
        for gone in set(self._rates) - set(rates):
            del self._rates[gone]
        header = self._header(snap, now, width)
        table_rows = min(max_rows, max(1, len(snap.connections)))
        table_rows += 1 if len(snap.connections) > max_rows else 0  # (the "+N more" row)
        used = len(header.plain.splitlines()) + table_rows + 3  # (table head, rule, title)
        pane = max(self.log_lines, height - used - 1) if height else self.log_lines
        return Group(header, self._table(snap, rates, max_rows, width, now),
                     *self._log_pane(pane))

    def _header(self, snap: "Snapshot", now: float, width: int) -> Text:
        io_wakeups, timer_wakeups = self._wakeup_rates(snap, now)
        rate = self._total_rate(snap, now)
        head = Text(overflow="ellipsis", no_wrap=True)
        head.append("muxserver ", style="bold")
        head.append(f"{snap.address}  ", style="cyan")
        head.append(f"up {format_duration(snap.uptime)}  ", style="dim")
        head.append(printable(snap.root))
        head.append("\n")
        narrow = width < 100
        size = short_bytes if narrow else format_bytes
        head.append(f"{'conns' if narrow else 'connections'} {len(snap.connections)}  ")
        head.append(f"done {snap.transfers_done}  ", style="green")
        head.append(f"failed {snap.transfers_failed}  ",
                    style="red" if snap.transfers_failed else "")
        head.append(f"in {size(snap.bytes_in)}  out {size(snap.bytes_out)}  ")
        head.append(f"{format_bytes(rate)}/s  ", style="bold")
        head.append(f"wake/s {io_wakeups:.0f} io+{timer_wakeups:.0f} timer" if narrow else
                    f"wakeups/s {io_wakeups:.0f} io + {timer_wakeups:.0f} timer", style="dim")
        if snap.stopping_in is not None:
            busy = sum(1 for c in snap.connections if c.op)
            head.append(f"\nstopping: {busy} transfer{'s' if busy != 1 else ''}, "
                        f"{max(0.0, snap.stopping_in):.0f} s left, Ctrl-C again to abort",
                        style="bold yellow")
        return head

    def _table(self, snap: "Snapshot", rates: dict[int, float], max_rows: int,
               width: int, now: float) -> RenderableType:
        columns = choose_columns(width)
        table = Table(box=box.SIMPLE_HEAD, expand=True, pad_edge=False, show_edge=False,
                      padding=0)  # the box's divider is the one space between columns
        for column in columns:
            spec = COLUMNS[column]
            table.add_column(spec.title, no_wrap=True, overflow="ellipsis",
                             justify=spec.justify, width=spec.width,
                             ratio=1 if spec.width is None else None,
                             min_width=NAME_MIN_WIDTH if spec.width is None else None)
        ordered = sorted(snap.connections, key=lambda c: (-rates[c.id], -c.last_io, c.id))
        fixed = sum(COLUMNS[c].width or 0 for c in columns) + len(columns) - 1
        name_width = max(5, width - fixed)  # (what is left for the name column)
        for info in ordered[:max_rows]:
            cells = self._cells(info, rates[info.id], now, name_width)
            table.add_row(*(cells[column] for column in columns))
        hidden = len(ordered) - max_rows
        if hidden > 0:
            table.add_row(Text(f"+{hidden} more", style="italic dim"))
        if not ordered:
            table.add_row(Text("no connections", style="dim"))
        return table

    def _cells(self, info: "ConnectionInfo", rate: float, now: float,
               name_width: int = 1000) -> dict[str, Any]:
        if info.total:
            fraction = min(1.0, info.done / info.total)
            percent = f"{fraction * 100:.0f}%"
            bar: Any = ProgressBar(total=info.total, completed=info.done, width=10)
            eta = format_duration((info.total - info.done) / rate) if rate > 0 else "-"
            done = f"{short_bytes(info.done)}/{short_bytes(info.total)}"
        elif info.op:  # an empty file
            percent, bar, eta, done = "100%", Text(""), "-", "0 B"
        else:
            percent, bar, eta, done = "", Text(""), "", ""
        state, style = info.state, ""
        silent = now - info.last_io
        if info.op and silent >= STALLED_AFTER:
            state, style = f"stalled {silent:.0f} s", "yellow"
        return {
            "peer": Text(f"{info.who} {info.peer}" if info.who else info.peer),
            "op": Text(info.op), "name": Text(middle_cut(printable(info.name), name_width)),
            "state": Text(state, style=style), "bar": bar, "percent": Text(percent),
            "rate": Text(f"{format_bytes(rate)}/s" if rate else ""), "eta": Text(eta),
            "done": Text(done),
            "buffers": Text(f"{short_bytes(info.recv_buffered)}/"
                            f"{short_bytes(info.send_buffered)}", style="dim"),
        }

    def _log_pane(self, rows: int) -> list[RenderableType]:
        if not self.log:
            return []
        return [Text("recent events", style="bold dim"), *self.shown_log(rows)]


class ConsoleLogHandler(logging.Handler):
    """Sends the server's log records to the console's event pane (same thread).

    A connection that ends on an interruption (a reset, a timeout) was reported by that
    line already: its "closed" line that follows is not shown again."""

    SAID_ALREADY = frozenset({"reset", "timeout"})

    def __init__(self, view: ConsoleView) -> None:
        super().__init__(level=logging.INFO)
        self.view = view
        self._ended: collections.OrderedDict[Any, None] = collections.OrderedDict()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if isinstance(record.msg, Lines):  # a loop turn's lines (turnlog.py)
                text = "\n".join(template % args for template, args, fields
                                 in record.msg.lines if self._shown(fields or {}))
            else:
                text = record.getMessage() if self._shown(vars(record)) else ""
            if text:
                self.view.add_log(record.created, record.levelno, text)
        except (TypeError, ValueError):
            self.handleError(record)  # a malformed record must not stop the server

    def _shown(self, fields: Mapping[str, Any]) -> bool:
        """Whether a line with these fields is shown: all but a "closed" line said
        already by its connection's reset or timeout."""
        event, conn = fields.get("event"), fields.get("conn")
        if event in self.SAID_ALREADY and conn is not None:
            self._ended[conn] = None
            while len(self._ended) > 1000:
                self._ended.popitem(last=False)
            return True
        return not (event == "closed" and self._ended.pop(conn, 1) is None)


class LiveConsole:
    """Keeps a rich Live display of a server up to date, from a timer in its loop."""

    def __init__(self, server: Watched, console: Console | None = None,
                 log_lines: int = LOG_LINES) -> None:
        self.server = server
        self.console = console or Console()
        self.view = ConsoleView(log_lines)
        self.live = Live(console=self.console, auto_refresh=False, transient=False,
                         redirect_stdout=False, redirect_stderr=False)
        self.handler = ConsoleLogHandler(self.view)
        self._timer: Any = None
        self._muted: list[tuple[logging.Handler, int]] = []
        self.refreshes = 0

    def start(self) -> None:
        """Route log records into the event pane, start drawing, and schedule redraws."""
        root = logging.getLogger()
        for handler in root.handlers:  # plain stderr lines would tear the live display
            self._muted.append((handler, handler.level))
            handler.setLevel(logging.CRITICAL + 1)
        logging.getLogger("muxserver").addHandler(self.handler)
        self.live.start()
        self.refresh()

    def refresh(self) -> None:
        snap = self.server.snapshot()
        size = self.console.size
        max_rows = max(3, size.height - 8 - self.view.log_lines - 2)
        self.live.update(self.view.render(snap, max_rows=max_rows, width=size.width,
                                          height=size.height), refresh=True)
        self.refreshes += 1
        busy = bool(snap.connections)
        self._timer = self.server.loop.call_later(BUSY_INTERVAL if busy else IDLE_INTERVAL,
                                                  self.refresh)

    def trace_line(self, line: str) -> None:
        """A line of the narrated trace, shown in the event pane (drawn at the next redraw)."""
        self.view.add_log(time.time(), logging.INFO, line)

    def stop(self) -> None:
        """The last frame (the end state: the counts after the last transfer, no
        connection left), then the display stops."""
        if self._timer is not None:
            self._timer.cancel()
        try:
            snap = self.server.snapshot()
            size = self.console.size
            self.live.update(self.view.render(snap, width=size.width, height=size.height),
                             refresh=True)
        except Exception:  # (a server that cannot say any more: its last frame stays)
            pass
        self.live.stop()
        logging.getLogger("muxserver").removeHandler(self.handler)
        for handler, level in self._muted:
            handler.setLevel(level)


def middle_cut(name: str, width: int) -> str:
    """``name`` in ``width`` characters, cut in the middle when longer: rows of
    ``up/small80001.bin``, ``up/small80002.bin`` stay told apart (their ends differ)."""
    if len(name) <= width or width < 5:
        return name
    tail = (width - 1) // 2
    return name[:width - 1 - tail] + "…" + name[-tail:]
