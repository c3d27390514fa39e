"""One family of errors: a stable code, and a sentence for people.

Whatever refuses a request (the name rules, the framing, a request's fields, the
storage, the client's own checks) raises a :class:`MuxError`, or one of its kinds that
say where it came from. Its ``code`` is one of the protocol's stable codes
(``protocol.ERROR_CODES``, docs/PROTOCOL.md section 7) and it is all a wire needs: each
codec has one table from code to its own words. The native protocol sends the code
itself; HTTP sends the status ``http_codec.STATUS`` gives it; tus, the status
``tus.STATUS`` gives where tus says otherwise (409 for an offset, 460 for a checksum,
423 for an upload being written).

This module does no I/O.
"""

from __future__ import annotations


class MuxError(Exception):
    """An error with a stable ``code`` and a ``message`` that says what happened."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code!r}, {self.message!r})"
