"""The line per transfer (and per connection), written once per loop turn.

Under load a log record costs far more than its text: the LogRecord, the logger's
filters, each handler's lock, format and write. Measured with a thousand busy clients
(docs/PERFORMANCE.md), the one line per transfer took about 11 µs of a request's
~100 µs of server time, a tenth of the server. So the lines of the hot path are
collected during a loop turn, as (template, arguments) pairs, and handed to logging as
one record when the loop is about to sleep: what nginx's buffered access log and
Redis's ``beforeSleep`` do. The lines are the same, one per transfer, each stamped
with the clock by the formatter (logformat.py); the console and the worker pipe split
the record back into its lines.

A connection's "connected" and "closed" lines come the same way: a client that opens a
connection per request (curl, a script) made two records a request, each with its own
write, and each first emptied the collected lines as one more: about 95,000
instructions a connection, two fifths of what the compiled server spent on one
(docs/PERFORMANCE.md, "A connection's own cost"). Such a line keeps its fields
(``event``, ``conn``) beside it, for the handlers that tell lines apart by kind (the
console hides the "closed" line of a connection whose reset it showed).

The order of lines holds: before any other record of the server's logger goes out (a
warning, an error), the lines collected so far go first. (Every module
logs through the one "muxserver" logger: a logger's filters never see the records of
its child loggers.) A TurnLog that
is not attached to a running loop (a session tested alone, or a server narrating its
loop with --trace, where each line belongs beside the events that led to it) logs each
line at once.
"""

from __future__ import annotations

import logging
from typing import Any, Callable

#: A collected line: its template, its arguments, and its fields (``event``, ``conn``:
#: what ``extra`` gives a record) or None.
Line = tuple[str, tuple[Any, ...], dict[str, Any] | None]


class Lines:
    """The message of a record that carries a turn's lines: ``str()`` joins them."""

    __slots__ = ("lines", "_text")

    def __init__(self, lines: list[Line]) -> None:
        self.lines = lines
        self._text: str | None = None

    def __str__(self) -> str:  # (once: every handler asks the record for its message)
        if self._text is None:
            self._text = "\n".join(template % args for template, args, _fields in self.lines)
        return self._text

    def translated(self, translate: Callable[[str, tuple[Any, ...]],
                                             tuple[str, tuple[Any, ...]]]) -> "Lines":
        return Lines([(*translate(template, args), fields)
                      for template, args, fields in self.lines])


class TurnLog:
    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.pending: list[Line] = []
        self.attached = False

    def info(self, template: str, *args: Any, extra: dict[str, Any] | None = None) -> None:
        """An info line (``template % args``), written before the loop next sleeps;
        ``extra``: its fields, as for ``Logger.info``."""
        if not self.attached:
            self.logger.info(template, *args, extra=extra)
        elif self.logger.isEnabledFor(logging.INFO):
            self.pending.append((template, args, extra))

    def flush(self) -> None:
        """Hand the lines collected so far to logging, as one record."""
        if self.pending:
            lines, self.pending = Lines(self.pending), []
            self.logger.info(lines)

    def attach(self, add_before_sleep: Callable[[Callable[[], None]], None]) -> None:
        """Collect from now on; flush before the loop sleeps (``add_before_sleep``
        registers with the loop) and before any other record of the logger."""
        add_before_sleep(self.flush)
        self.logger.addFilter(self._first_the_lines)
        self.attached = True

    def detach(self) -> None:
        """Write what is collected; log at once from now on."""
        self.flush()
        self.logger.removeFilter(self._first_the_lines)
        self.attached = False

    def _first_the_lines(self, record: logging.LogRecord) -> bool:
        """(A filter on the logger: it never drops a record.)"""
        if self.pending and not isinstance(record.msg, Lines):
            self.flush()
        return True
