"""Observation as one typed hook: what the loop, the listener, the channels and the
sessions report as it happens, for the narrated trace, ``--trace-json`` and ``--step``.

Every part of the server holds an :class:`Observer` and calls the method named after
what just happened, with typed arguments (the event's payload). The server's
code has no branch for "is anybody watching?" (asyncio keeps its debug instrumentation
out of its transports the same way): when nobody watches, the observer is
:data:`NOBODY`, whose every method returns at once. Watchers subclass :class:`Observer`
and override what they need; :class:`Recorder` turns every event into ``(kind,
conn, fields)``, the shape the narration and the JSON trace write; trace.py's
:class:`Fanout` hands each event to several observers.

Nothing here does I/O; the observers that write do it in trace.py and step.py. (The
compiled build, setup.py, compiles this module: every event calls a hook, and a hook
that does nothing should cost next to nothing. The watchers that subclass these
classes stay Python, which ``allow_interpreted_subclasses`` lets them.)
"""

from __future__ import annotations

import logging
import selectors
import urllib.parse
from typing import TYPE_CHECKING, Any

from mypy_extensions import mypyc_attr

if TYPE_CHECKING:
    from .protocol import FrameDecoder


@mypyc_attr(allow_interpreted_subclasses=True)
class Observer:
    """Every event, as a method that does nothing: override the ones you watch."""

    # -- the loop and the listener

    def wakeup(self, events: list[tuple[selectors.SelectorKey, int]], count: int) -> None:
        """select() returned ``events``; ``count`` wake-ups so far."""

    def listening(self, address: str) -> None: ...

    def accept(self, conn: int, peer: str, clients: int) -> None: ...

    def refuse(self, conn: int, peer: str, clients: int) -> None:
        """A connection over the cap."""

    def emfile(self, error: str, backoff: float) -> None:
        """accept() failed for want of descriptors: the listener rests ``backoff`` s."""

    def emfile_resume(self) -> None: ...

    # -- a channel

    def handshake(self, conn: int) -> None:
        """A TLS handshake finished."""

    def recv(self, conn: int, data: memoryview) -> None: ...

    def eof(self, conn: int) -> None:
        """recv returned b"": the peer finished sending."""

    def splice(self, conn: int, n: int) -> None:
        """``n`` body bytes went from the socket to a file without passing through Python."""

    def io_error(self, conn: int, call: str, error: str) -> None: ...

    def send(self, conn: int, offered: int, taken: int, queued: int,
             chunks: list[memoryview]) -> None:
        """One send of ``chunks`` (``offered`` bytes) took ``taken``; ``queued`` wait."""

    def sendfile(self, conn: int, offered: int, taken: int, queued: int) -> None: ...

    def interest(self, conn: int, old: int, new: int) -> None:
        """The selector watches the connection for ``new`` instead of ``old``."""

    def pause(self, conn: int, queued: int, high: int) -> None:
        """Output over the high-water mark: the protocol was told to pause writing."""

    def resume(self, conn: int) -> None: ...

    def timeout(self, conn: int, why: str) -> None: ...

    def linger(self, conn: int) -> None:
        """Our side half-closed after the last reply; reading until the peer closes."""

    def close(self, conn: int, reason: str) -> None: ...

    # -- a session

    def sniff(self, conn: int, speaks: str) -> None:
        """The first bytes told which protocol the connection speaks."""

    def reply(self, conn: int, id: int | None, code: str | None, size: int) -> None:
        """A native reply frame queued (``code`` None: ok)."""

    def frame_header(self, conn: int, fields: dict[str, Any], length: int) -> None:
        """The native decoder has a whole header; ``length`` body bytes follow."""

    def frame_body(self, conn: int, n: int) -> None: ...

    def frame_end(self, conn: int, decoder: "FrameDecoder") -> None:
        """A native request ended; ``decoder`` may hold bytes of the next one."""

    def need_data(self, conn: int, decoder: "FrameDecoder") -> None:
        """The native decoder waits for more bytes (of a prefix, or a header)."""

    def http_request(self, conn: int, method: str, target: str) -> None: ...

    def http_response(self, conn: int, status: int, size: int) -> None: ...

log = logging.getLogger("muxserver")

#: The observer of a server nobody watches.
NOBODY = Observer()


@mypyc_attr(allow_interpreted_subclasses=True)
class Recorder(Observer):
    """An observer that takes every event the same way: :meth:`event` with its kind,
    its connection (None: the loop's own) and its fields, as the narration and the
    JSON trace write them (trace.py: every kind has a sentence)."""

    def __init__(self) -> None:
        # What a native request on each connection is (op, name, body done, length):
        # the body and end events name it.
        self._frames: dict[int, tuple[str, str, int, int]] = {}
        self.broken = False  # its output failed: it writes no more

    def event(self, kind: str, conn: int | None, **fields: Any) -> None:
        raise NotImplementedError

    def lost(self, exc: OSError) -> None:
        """Writing the trace failed (a closed pipe, a full disk): the trace stops, said
        once; the server goes on (its clients are not the trace's reader)."""
        if not self.broken:
            self.broken = True
            log.warning("the trace could not be written (%s); it stops here", exc)

    def wakeup(self, events: list[tuple[selectors.SelectorKey, int]], count: int) -> None:
        self.event("wakeup", None, ready=len(events), count=count,
                   sockets=[(key.data.label, mask) for key, mask in events])

    def listening(self, address: str) -> None:
        self.event("listening", None, address=address)

    def accept(self, conn: int, peer: str, clients: int) -> None:
        self.event("accept", conn, peer=peer, clients=clients)

    def refuse(self, conn: int, peer: str, clients: int) -> None:
        self.event("refuse", conn, peer=peer, clients=clients)

    def emfile(self, error: str, backoff: float) -> None:
        self.event("emfile", None, error=error, backoff=backoff)

    def emfile_resume(self) -> None:
        self.event("emfile_resume", None)

    def handshake(self, conn: int) -> None:
        self.event("handshake", conn)

    def recv(self, conn: int, data: memoryview) -> None:
        self.event("recv", conn, n=len(data), data=data)

    def eof(self, conn: int) -> None:
        self.event("eof", conn)

    def splice(self, conn: int, n: int) -> None:
        self.event("splice", conn, n=n)

    def io_error(self, conn: int, call: str, error: str) -> None:
        self.event("io_error", conn, call=call, error=error)

    def send(self, conn: int, offered: int, taken: int, queued: int,
             chunks: list[memoryview]) -> None:
        head, tail = _sent(chunks, taken)
        if tail is None:
            self.event("send", conn, offered=offered, taken=taken, queued=queued, data=head)
        else:
            self.event("send", conn, offered=offered, taken=taken, queued=queued, data=head,
                       data_tail=tail)

    def sendfile(self, conn: int, offered: int, taken: int, queued: int) -> None:
        self.event("sendfile", conn, offered=offered, taken=taken, queued=queued)

    def interest(self, conn: int, old: int, new: int) -> None:
        self.event("interest", conn, old=old, new=new)

    def pause(self, conn: int, queued: int, high: int) -> None:
        self.event("pause", conn, queued=queued, high=high)

    def resume(self, conn: int) -> None:
        self.event("resume", conn)

    def timeout(self, conn: int, why: str) -> None:
        self.event("timeout", conn, why=why)

    def linger(self, conn: int) -> None:
        self.event("linger", conn)

    def close(self, conn: int, reason: str) -> None:
        self._frames.pop(conn, None)
        self.event("close", conn, reason=reason)

    def sniff(self, conn: int, speaks: str) -> None:
        self.event("sniff", conn, speaks=speaks)

    def reply(self, conn: int, id: int | None, code: str | None, size: int) -> None:
        self.event("reply", conn, id=id, code=code, size=size)

    def frame_header(self, conn: int, fields: dict[str, Any], length: int) -> None:
        op = str(fields.get("op", "?"))
        name = str(fields.get("name", fields.get("path", "")))
        self._frames[conn] = (op, name, 0, length)
        self.event("header", conn, op=op, name=name, id=fields.get("id"), length=length)

    def frame_body(self, conn: int, n: int) -> None:
        op, name, done, length = self._frames.get(conn, ("?", "", 0, 0))
        self._frames[conn] = (op, name, done + n, length)
        self.event("body", conn, n=n, done=done + n, length=length)

    def frame_end(self, conn: int, decoder: "FrameDecoder") -> None:
        op, name, _done, _length = self._frames.get(conn, ("?", "", 0, 0))
        self.event("request_done", conn, op=op, name=name)
        if decoder.buffered:  # bytes of the next request came in the same recv
            self.event("leftover", conn, n=decoder.buffered)

    def need_data(self, conn: int, decoder: "FrameDecoder") -> None:
        from .protocol import DecoderState  # (the protocol module imports nothing of ours)

        if decoder.state is DecoderState.PREFIX and decoder.partial:
            self.event("prefix_wait", conn, have=decoder.partial)
        elif decoder.state is DecoderState.HEADER:
            self.event("header_wait", conn, have=decoder.partial, need=decoder.header_length)

    def http_request(self, conn: int, method: str, target: str) -> None:
        self.event("http_request", conn, method=method, target=without_tokens(target))

    def http_response(self, conn: int, status: int, size: int) -> None:
        self.event("http_response", conn, status=status, size=size)


def without_tokens(target: str) -> str:
    """``target`` with the value of every ``token`` and ``share`` (a link's capability)
    in its query hidden: a key is read as http_codec.parse_query reads it (``%74oken``
    is ``token``), so a credential the server takes is never shown."""
    path, mark, query = target.partition("?")
    if not mark:
        return target
    pairs = []
    for pair in query.split("&"):
        key, equals, _ = pair.partition("=")
        if urllib.parse.unquote(key, errors="replace") in ("token", "share"):
            pair = f"{key}=…"
        pairs.append(pair)
    return f"{path}?{'&'.join(pairs)}"


#: Of a send's bytes, the trace keeps them all up to twice this, else the first and the
#: last this many: enough for a diagram to read every reply header (and the start of a
#: reply that follows a body in the same send) without copying whole bodies.
SENT_EDGE = 1024


def _sent(chunks: list[memoryview], taken: int) -> tuple[bytes, bytes | None]:
    """(the bytes a send took, None), or (the first SENT_EDGE, the last SENT_EDGE)."""
    if taken <= 2 * SENT_EDGE:
        return _between(chunks, 0, taken), None
    return _between(chunks, 0, SENT_EDGE), _between(chunks, taken - SENT_EDGE, taken)


def _between(chunks: list[memoryview], start: int, end: int) -> bytes:
    """Bytes ``start`` to ``end`` of the chunks, as if they were one buffer."""
    out, pos = bytearray(), 0
    for chunk in chunks:
        if pos >= end:
            break
        size = len(chunk)
        if pos + size > start:
            out += chunk[max(0, start - pos):min(size, end - pos)]
        pos += size
    return bytes(out)
