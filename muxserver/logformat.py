"""The server's log line: ``HH:MM:SS [tag ]message``, one per connection and transfer
(a record carrying a loop turn's transfer lines, see turnlog.py, gives one each).

With a thousand busy clients that is thousands of lines a second, so the line is made
the short way: the clock is formatted once a second, not once a line, and a record
without an exception becomes its line in one step instead of the Formatter's several
(``usesTime``, ``formatTime``, ``formatMessage``, the style object). A record with an
exception or a stack goes the standard way, traceback included.
"""

from __future__ import annotations

import logging
import time


class LineFormatter(logging.Formatter):
    def __init__(self, tag: str = "") -> None:
        super().__init__(f"%(asctime)s {tag}%(message)s", datefmt="%H:%M:%S")
        self.tag = tag
        self._clock: tuple[int, str] = (-1, "")  # (second, its HH:MM:SS)

    def format(self, record: logging.LogRecord) -> str:
        if record.exc_info or record.exc_text or record.stack_info:
            return super().format(record)
        record.message = record.getMessage()
        stamp = f"{self.formatTime(record)} {self.tag}"
        if "\n" not in record.message:
            return stamp + record.message
        # A loop turn's lines in one record (turnlog.py): each line its own stamp.
        return "\n".join(stamp + line for line in record.message.split("\n"))

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second, text = self._clock  # (one tuple: a thread reading it sees a whole pair)
        if int(record.created) != second:
            second = int(record.created)
            text = time.strftime("%H:%M:%S", time.localtime(second))
            self._clock = (second, text)
        return text
