#!/usr/bin/env python3
"""Stage 14: stage 12 again, written for asyncio: the same rules under asyncio's names.

Nothing new is decided here; each piece of stage 12 has an owner in asyncio instead:
  - the loop, select() and the write interest belong to asyncio's event loop and its
    transport: a transport watches for writability only while its buffer holds bytes
    (stage 12's ``Connection.interest``), so an idle server sleeps;
  - the outbox is the transport's write buffer: ``transport.write()`` sends what the
    socket takes now and keeps the rest (stage 12's ``on_writable``);
  - backpressure: ``set_write_buffer_limits(HIGH_WATER, LOW_WATER)``; the transport
    calls ``pause_writing()`` above the high mark and ``resume_writing()`` below the
    low one, and the protocol stops and resumes reading (``pause_reading()``);
  - b"" is ``eof_received()``; returning True keeps the connection open to send what
    is still owed (a half close), and ``transport.close()`` sends it before closing;
  - the deadline is a ``loop.call_later`` timer; one connection's error reaches only
    its own ``connection_lost``.
What is left to us is the protocol: bytes in, replies out (the same FrameDecoder).
(es) Etapa 14: la etapa 12 otra vez, escrita para asyncio: las mismas reglas con los
nombres de asyncio (transporte, búfer de escritura, umbrales alto y bajo,
pause_writing/resume_writing, eof_received, call_later).

    python scripts/stages/stage14_asyncio.py --port 9009 --root /tmp/files --idle-timeout 30
"""

from __future__ import annotations

import asyncio
import time

from decoder import FrameDecoder
from stage12_backoff import HIGH_WATER, LOW_WATER
from wire import Files, command_line, listen


class FileProtocol(asyncio.Protocol):
    """One connection's protocol: asyncio calls it; it never touches the socket."""

    def __init__(self, files: Files, idle_timeout: float) -> None:
        self.files, self.idle_timeout = files, idle_timeout
        self.decoder = FrameDecoder()
        self.writing_paused = False          # the transport's buffer is over HIGH_WATER
        self.peer_done = False               # eof_received: nothing more will come
        self.last_activity = time.monotonic()
        self.last_buffered = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.set_write_buffer_limits(high=HIGH_WATER, low=LOW_WATER)
        self.timer = asyncio.get_running_loop().call_later(self.idle_timeout / 4,
                                                           self.check_idle)

    def data_received(self, data: bytes) -> None:
        self.last_activity = time.monotonic()
        try:
            self.decoder.feed(data)
            self.answer_requests()
        except ValueError as error:          # (BadFrame) this connection's problem only
            print(f"closing a connection: {error}", flush=True)
            self.transport.abort()

    def eof_received(self) -> bool:
        self.peer_done = True                # half close: the replies still go out
        self.answer_requests()               # (es) cierre parcial: las respuestas salen
        return True                          # keep the transport open for writing

    def answer_requests(self) -> None:
        """Answer whole requests until the transport says its buffer is full."""
        while not self.writing_paused:
            request = self.decoder.next_request()
            if request is None:
                break
            self.transport.write(self.files.answer(*request))   # may call pause_writing
        if self.peer_done and not self.writing_paused:
            self.transport.close()           # sends what is buffered, then closes

    def pause_writing(self) -> None:         # the transport: over HIGH_WATER
        self.writing_paused = True
        self.transport.pause_reading()       # backpressure (es: contrapresión)

    def resume_writing(self) -> None:        # the transport: down to LOW_WATER
        self.writing_paused = False
        if not self.peer_done:
            self.transport.resume_reading()
        self.answer_requests()               # requests already buffered come first

    def check_idle(self) -> None:
        """Nothing received, nothing of the buffer sent, for idle_timeout: close."""
        buffered = self.transport.get_write_buffer_size()
        if buffered != self.last_buffered:   # the buffer moved: the peer reads (or we wrote)
            self.last_buffered, self.last_activity = buffered, time.monotonic()
        if time.monotonic() - self.last_activity > self.idle_timeout:
            print(f"closing a connection: idle for {self.idle_timeout:g} s", flush=True)
            self.transport.abort()           # (close() would wait for the buffer)
            return
        self.timer = asyncio.get_running_loop().call_later(self.idle_timeout / 4,
                                                           self.check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        self.timer.cancel()                  # this connection's end, and only its
        if exc is not None:
            print(f"closing a connection: {exc}", flush=True)


async def serve(port: int, files: Files, idle_timeout: float) -> None:
    server = await asyncio.get_running_loop().create_server(
        lambda: FileProtocol(files, idle_timeout), sock=listen(port))
    async with server:
        await server.serve_forever()


def main() -> None:
    args = command_line(__doc__)
    try:
        asyncio.run(serve(args.port, Files(args.root), args.idle_timeout))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
