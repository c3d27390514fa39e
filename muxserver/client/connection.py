"""The client's connection: pipelined requests over one non-blocking socket.

It is itself a small event loop, because a pipelining client must read while it
writes: if it only wrote, a server that stops reading until its large replies drain
(backpressure) and a client that stops reading until its requests are written would
wait for each other forever.

Up to ``window`` requests are in flight; replies come back in request order. If the
server refuses a put early (the name exists, say) while its body is still being sent,
the client stops sending: the rest of that stream is useless. It closes the connection
and carries on with the operations not sent yet on a new one.
"""

from __future__ import annotations

import builtins  # (``list`` is a method of Client: annotations below need the type)
import collections
import errno
import os
import selectors
import socket
import ssl
import time
from typing import Any, Iterable

from ..protocol import (
    NEED_DATA,
    BodyData,
    FrameDecoder,
    FrameEnd,
    FrameHeader,
    PeerClosed,
    ProtocolError,
)
from ..zerocopy import UNSUPPORTED, SplicePipe
from .operations import (
    Auth,
    ClientError,
    Finished,
    GetFile,
    ListDir,
    Operation,
    Progress,
    PutFile,
    Result,
    Share,
    Stat,
)

DEFAULT_PORT = 9009


class Client:
    """One server, one connection at a time, many pipelined operations."""

    def __init__(self, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *,
                 timeout: float = 60.0, window: int = 64,
                 progress: Progress | None = None, on_finish: Finished | None = None,
                 token: str | dict[str, str] | None = None, tls: bool = False,
                 cafile: str | None = None) -> None:
        self.host, self.port = host, port
        self.token = token  # a token, or auth fields (protocol.encode_auth): a name and password
        self.tls = tls
        self.cafile = cafile
        self.timeout = timeout  # longest silence tolerated from the server
        self.window = window
        self.progress = progress  # called as body bytes move
        self.on_finish = on_finish  # called once per operation, when its result is final
        self.sock: socket.socket | None = None
        self.can_splice = SplicePipe.available()
        self._pipe: SplicePipe | None = None
        self.authenticated = False  # this connection has presented the token
        self._next_id = 1
        self._scratch = memoryview(bytearray(256 * 1024))

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def connect(self) -> None:
        if self.sock is not None:
            return
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except ConnectionRefusedError:
            raise ClientError("connect", f"cannot connect to {self.host}:{self.port}: "
                                         "connection refused (is the server running?)") from None
        except socket.gaierror as exc:
            raise ClientError("connect", f"cannot resolve {self.host}: {exc.strerror}") from None
        except OSError as exc:
            reason = exc.strerror or str(exc) or "timed out"
            raise ClientError("connect", f"cannot connect to {self.host}:{self.port}: "
                                         f"{reason}") from None
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.tls:
            sock = self._start_tls(sock)
        sock.setblocking(False)
        self.sock = sock

    def _start_tls(self, sock: socket.socket) -> socket.socket:
        """Wrap and handshake (blocking, with the timeout) before the pipeline starts."""
        try:
            context = ssl.create_default_context(cafile=self.cafile)
            return context.wrap_socket(sock, server_hostname=self.host)
        except ssl.SSLCertVerificationError as exc:
            sock.close()
            if "mismatch" in (exc.verify_message or "").lower():  # (hostname, IP address)
                hint = (f"its certificate is not for the name {self.host!r}: connect with "
                        "the name or address it was made for")
            elif self.cafile:
                hint = f"{self.cafile} is not the certificate (or the CA) this server uses"
            else:
                hint = "use --cafile with the server's certificate (or its CA)"
            raise ClientError("tls", f"the server's certificate is not trusted: "
                                     f"{exc.verify_message} ({hint})") from None
        except (ssl.SSLError, OSError) as exc:
            sock.close()
            raise ClientError("tls", f"TLS handshake with {self.host}:{self.port} failed: "
                                     f"{exc} (does the server use --tls-cert?)") from None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.authenticated = False
        if self._pipe is not None:
            self._pipe.close()
            self._pipe = None

    def splice_pipe(self) -> SplicePipe | None:
        if self._pipe is None and self.can_splice:
            self._pipe = SplicePipe()
        return self._pipe

    # -- convenience wrappers (raise ClientError on failure)

    def put_file(self, local: str | os.PathLike[str], name: str | None = None, *,
                 overwrite: bool = False) -> Result:
        name = name if name is not None else os.path.basename(os.fspath(local))
        return _checked(self.run([PutFile(local, name, overwrite=overwrite)])[0])

    def get_file(self, name: str, dest: str | os.PathLike[str], *,
                 overwrite: bool = False) -> Result:
        return _checked(self.run([GetFile(name, dest, overwrite=overwrite)])[0])

    def stat(self, name: str) -> dict[str, Any]:
        return _checked(self.run([Stat(name)])[0]).info

    def share(self, action: str, name: str = "", *, write: bool = False, expires: int = 0,
              link_id: str = "") -> dict[str, Any]:
        """Make a share link of ``name``, list one's links, or revoke one (protocol
        section 5.10); the reply's fields."""
        return _checked(self.run([Share(action, name, write=write, expires=expires,
                                        link_id=link_id)])[0]).info

    def list(self, path: str = "", *,
             recursive: bool = False) -> builtins.list[dict[str, Any]]:
        return self.listing(path, recursive=recursive).entries

    def listing(self, path: str = "", *, recursive: bool = False) -> Result:
        """The listing's entries, and in ``info["left_out"]`` how many entries the
        server left out (names its rules refuse, put there by other programs)."""
        return _checked(self.run([ListDir(path, recursive=recursive)])[0])

    # -- the pipeline

    def run(self, operations: Iterable[Operation]) -> builtins.list[Result]:
        """Carry out the operations, pipelined; every one gets a Result (none raises)."""
        ops = list(operations)
        pending = collections.deque(ops)
        try:
            while pending:
                try:
                    self.connect()
                except ClientError as exc:
                    for op in pending:
                        op.result.code, op.result.message = exc.code, exc.message
                    raise
                _Pipeline(self, pending).run()
        except BaseException:
            for op in ops:  # interrupted (Ctrl-C) or unreachable: leave no .part files
                if not op.result.ok:
                    op.cleanup(failed=True)
            raise
        return [op.result for op in ops]

    def next_id(self) -> int:
        rid = self._next_id
        self._next_id += 1
        return rid


class _Pipeline:
    """Drives one connection until every pending operation is finished or it breaks."""

    def __init__(self, client: Client, pending: collections.deque[Operation]) -> None:
        assert client.sock is not None, "connect() first"
        self.client = client
        self.sock: socket.socket = client.sock
        self.pending = pending  # not sent yet
        self.inflight: collections.deque[Operation] = collections.deque()  # awaiting replies
        self.sending: Operation | None = None  # the operation whose bytes are going out
        self.out = bytearray()  # request headers not sent yet
        self.body_left = 0  # body bytes of self.sending not sent yet
        self.body_sent = 0  # body bytes sent on this connection (the server took them)
        self.decoder = FrameDecoder()
        self.replies = 0  # reply frames received on this connection
        self.current: Operation | None = None  # the operation whose reply is being read
        self.selector = selectors.DefaultSelector()
        self.events = 0
        if client.token is not None and not client.authenticated:
            pending.appendleft(Auth(client.token))  # first on the wire: checked in order

    def run(self) -> None:
        try:
            self.selector.register(self.sock, selectors.EVENT_READ)
            self.events = selectors.EVENT_READ
            while self.pending or self.inflight:
                self.fill()
                if not self.inflight and not self.sending:
                    continue  # every pending op failed locally; nothing to wait for
                self.wait_and_move()
        except ClientError as exc:
            self.fail_all(exc)  # the connection is broken: everything on it fails
            self.client.close()
        except _Restart:
            self.client.close()  # pending ops go on over a new connection
        finally:
            self.selector.close()

    def fill(self) -> None:
        """Queue the next requests, up to the window.

        A put's body must follow its header whole, so filling stops after a put
        until its body has gone out.
        """
        client = self.client
        while (self.pending and self.sending is None and len(self.inflight) < client.window
               and len(self.out) < 64 * 1024):
            op = self.pending.popleft()
            op.id = client.next_id()
            try:
                op.prepare()
                header = op.header()
            except ClientError as exc:
                self.finish(op, exc)
                continue
            except (UnicodeEncodeError, ValueError) as exc:  # e.g. a non-UTF-8 file name
                self.finish(op, ClientError("bad_name", f"cannot send the name "
                                                        f"{op.name!r}: {exc}"))
                continue
            self.out += header
            self.inflight.append(op)
            if op.body_fd >= 0 and op.body_size:
                self.sending = op
                self.body_left = op.body_size
            else:
                self.out += op.trailer()  # (a put of nothing new: its digest at once)

    def wait_and_move(self) -> None:
        want = selectors.EVENT_READ
        if self.out or self.body_left:
            want |= selectors.EVENT_WRITE
        if want != self.events:
            self.selector.modify(self.sock, want)
            self.events = want
        ready = self.selector.select(self.client.timeout)
        if not ready:
            raise ClientError("timeout", f"no progress from {self.client.host}:"
                                         f"{self.client.port} for {self.client.timeout:g} s")
        mask = ready[0][1]
        if mask & selectors.EVENT_WRITE:
            self.write()
        if mask & selectors.EVENT_READ:
            self.read()

    def write(self) -> None:
        try:
            if self.out:
                sent = self.sock.send(self.out)
                del self.out[:sent]
                if self.out:
                    return
            if self.body_left:
                op = self.sending
                assert op is not None  # (body_left belongs to it)
                offset = op.body_offset + op.body_size - self.body_left
                if self.client.tls:  # encryption happens in user space: no sendfile
                    chunk = os.pread(op.body_fd, min(self.body_left, 256 * 1024), offset)
                    sent = self.sock.send(chunk) if chunk else 0
                else:
                    sent = os.sendfile(self.sock.fileno(), op.body_fd, offset, self.body_left)
                if sent == 0:
                    raise ClientError("local_error", f"{op.result.path} shrank while sending")
                self.body_left -= sent
                self.body_sent += sent
                op.done_bytes += sent
                self.report(op)
                if not self.body_left:
                    self.sending = None
                    self.out += op.trailer()  # (waits for the hash of the last bytes)
        except (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError):
            return
        except OSError as exc:
            if exc.errno in (errno.EPIPE, errno.ECONNRESET):
                # The server may have closed after an error reply: read it first.
                self.drain_after_reset()
            raise ClientError("connection", f"connection lost while sending: "
                                            f"{exc.strerror}") from None

    def read(self) -> None:
        if self.splice_body():
            return
        while True:
            try:
                n = self.sock.recv_into(self.client._scratch)
            except (BlockingIOError, InterruptedError, ssl.SSLWantReadError,
                    ssl.SSLWantWriteError):
                return
            except OSError as exc:
                reason = exc.strerror or str(exc)
                raise ClientError("connection", f"connection lost: {reason}"
                                                f"{self.first_reply_hint()}") from None
            self.decoder.receive_data(self.client._scratch[:n] if n else b"")
            self.dispatch()
            self.decoder.keep_leftover()
            # TLS: bytes already decrypted inside OpenSSL do not make the socket readable.
            if not n or not isinstance(self.sock, ssl.SSLSocket) or not self.sock.pending():
                return

    def splice_body(self) -> bool:
        """Move a download's body from the socket into its .part file without passing
        through Python (zerocopy.py); False when this read cannot use splice."""
        op = self.current
        count = self.decoder.body_pending_unbuffered
        if not count or self.client.tls or not isinstance(op, GetFile) or op.fd < 0:
            return False
        pipe = self.client.splice_pipe()
        if pipe is None:
            return False
        try:
            n = pipe.take_from_socket(self.sock.fileno(), count)
        except (BlockingIOError, InterruptedError):
            return True
        except OSError as exc:
            if exc.errno in UNSUPPORTED:
                self.client.can_splice = False
                return False
            raise ClientError("connection", f"connection lost: {exc.strerror}") from None
        if n == 0:
            raise ClientError("connection", self.closed_reason())
        try:
            pipe.give_to_file(op.fd, op.written, n)
        except OSError as exc:
            raise ClientError("local_error", f"cannot write {op.part}: {exc.strerror}") from None
        self.decoder.body_moved_elsewhere(n)
        op.spliced(n)
        self.report(op)
        if not self.decoder.body_left:
            self.dispatch()  # the frame's end
        return True

    def drain_after_reset(self) -> None:
        try:
            self.sock.setblocking(True)
            self.sock.settimeout(0.5)
            data = self.sock.recv(65536)
            while data:
                self.decoder.receive_data(data)
                self.dispatch()
                data = self.sock.recv(65536)
        except (OSError, ClientError):
            pass  # nothing more to learn from this connection

    def dispatch(self) -> None:
        while True:
            try:
                event = self.decoder.next_event()
            except ProtocolError as exc:
                raise ClientError("bad_reply", f"bad reply from server: {exc.message}") from None
            if event is NEED_DATA:
                return
            if type(event) is BodyData:
                op = self.current
                if op is not None:
                    op.on_body(event.data)
                    op.done_bytes += len(event.data)
                    self.report(op)
            elif type(event) is FrameHeader:
                self.on_reply_header(event)
            elif type(event) is FrameEnd:
                self.on_reply_end()
            elif type(event) is PeerClosed:
                raise ClientError("connection", self.closed_reason())

    def on_reply_header(self, event: FrameHeader) -> None:
        self.replies += 1
        fields = event.fields
        if not self.inflight or fields.get("id") != self.inflight[0].id:
            if fields.get("ok") is False and fields.get("id") is None:
                # An error about the connection itself (too many clients, timeout, ...).
                raise ClientError(str(fields.get("error")), str(fields.get("message")))
            raise ClientError("bad_reply", f"reply for id {fields.get('id')!r} out of order")
        op = self.inflight[0]
        try:
            op.on_header(fields, event.length)
        except ClientError as exc:
            self.inflight.popleft()
            self.finish(op, exc)
            self.current = None  # drop this reply's body, if any
            if op is self.sending:
                # Refused while its body is still going out: the rest of this stream is
                # useless. Start again with what was not sent yet.
                self.sending = None
                raise _Restart() from None
            return
        self.current = op

    def on_reply_end(self) -> None:
        op, self.current = self.current, None
        if op is None:
            return  # the end of a reply already dealt with
        try:
            finished = op.on_end()
        except ClientError as exc:
            self.inflight.popleft()
            self.finish(op, exc)
            return
        if finished:
            self.inflight.popleft()
            self.finish(op, None)

    def finish(self, op: Operation, error: ClientError | None) -> None:
        if error is not None:
            op.result.ok = False
            op.result.code = error.code
            op.result.message = error.message
        op.cleanup(failed=not op.result.ok)
        if isinstance(op, Auth):
            if not op.result.ok:  # nothing else on this connection can succeed
                what = ("token" if isinstance(op.credentials, str) or "token" in op.credentials
                        else "link" if "link" in op.credentials else "name and password")
                raise ClientError(op.result.code, f"the server refused the {what}: "
                                                  f"{op.result.message}")
            self.client.authenticated = True
            return
        self.report(op)
        if self.client.on_finish is not None:
            self.client.on_finish(op)

    def fail_all(self, error: ClientError) -> None:
        for op in list(self.inflight) + list(self.pending):
            if not isinstance(op, Auth):
                self.finish(op, error)
        self.inflight.clear()
        self.pending.clear()

    def report(self, op: Operation) -> None:
        if self.client.progress is not None:
            self.client.progress(op, op.done_bytes, op.body_size)

    def closed_reason(self) -> str:
        return (f"the server closed the connection ({self.client.host}:{self.client.port})"
                f"{self.first_reply_hint()}")

    def first_reply_hint(self) -> str:
        """Why a server might hang up before its first reply: it expects TLS. Not when
        it had taken body bytes already (it spoke our protocol: it stopped, or died)."""
        if self.replies or self.client.tls or self.body_sent:
            return ""
        return " before any reply (if the server uses TLS, add --tls)"


class _Restart(Exception):
    """Abandon this connection; the operations not sent yet go on over a new one."""


def _checked(result: Result) -> Result:
    if not result.ok:
        raise ClientError(result.code, result.message)
    return result


def wait_for_server(host: str, port: int, timeout: float = 10.0) -> None:
    """Block until a TCP connect succeeds (used by scripts; tests read the banner)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection((host, port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
