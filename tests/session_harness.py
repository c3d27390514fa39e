"""Both protocol sessions, driven in memory: no socket, no event loop, a clock we set.

h11 tests its state machine by feeding it bytes and reading what it says; this
harness does the same for a whole session. A :class:`FakeChannel` stands where the
channel would (it queues what the session writes and "sends" it when the test lets the
peer read), a :class:`FakeLoop` runs ready callbacks when told, and the access policy
reads a clock the test moves. :class:`NativeWire` and :class:`HttpWire` speak the two
wire formats from the client side and turn replies into :class:`Reply` objects, so one
test body can run against both sessions.
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any, Callable, Iterator
from urllib.parse import quote

import h11

from muxserver import protocol
from muxserver.access import ALL_RIGHTS, Access, Ceiling, HostNames
from muxserver.buffers import FileRegion, SendQueue
from muxserver.http import HttpSession
from muxserver.http_codec import STATUS
from muxserver.lifecycle import Work
from muxserver.limits import Limits
from muxserver.observe import NOBODY, Observer
from muxserver.native import NativeSession
from muxserver.session import Services, Session
from muxserver.storage import Root
from muxserver.transport import ChannelState, ConnectionProtocol


class FakeLoop:
    """call_soon and friends, run only when the harness says so."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.ready: collections.deque[Callable[[], None]] = collections.deque()
        self.cond = threading.Condition()
        self.timers: list[tuple[float, Callable[[], None]]] = []

    def call_soon(self, callback: Callable[[], None], owner: Any = None) -> None:
        self.ready.append(callback)

    def call_soon_threadsafe(self, callback: Callable[[], None], owner: Any = None) -> None:
        with self.cond:  # the hashing helper thread done with an upload or a file
            self.ready.append(callback)
            self.cond.notify_all()

    def call_later(self, delay: float, callback: Callable[[], None], owner: Any = None) -> Any:
        self.timers.append((self.now + delay, callback))
        return _Handle()

    def run_ready(self, limit: int = 100_000) -> None:
        for _ in range(limit):
            if not self.ready:
                return
            self.ready.popleft()()
        raise AssertionError("the session keeps scheduling itself")

    def wait_for_callback(self, timeout: float = 30.0) -> None:
        with self.cond:
            assert self.cond.wait_for(lambda: bool(self.ready), timeout), "no callback came"


class _Handle:
    def cancel(self) -> None:
        pass


class FakeChannel:
    """What a session may use of a channel; the peer reads only when drain() is called."""

    def __init__(self, limits: Limits, loop: FakeLoop, peer_host: str, tls: bool) -> None:
        self.limits = limits
        self.loop = loop
        self.out = SendQueue()
        self.sent = bytearray()
        self.state = ChannelState.OPEN
        self.closed = False
        self.close_reason = ""
        self.reading_paused = False
        self.writing_paused = False
        self.observe: Observer = NOBODY
        self.tls = tls
        self.peer_host = peer_host
        self.peer = f"{peer_host}:40000"
        self.id = 1
        self.opened = loop.now
        self.protocol: Any = None

    def set_protocol(self, protocol: ConnectionProtocol) -> None:
        self.protocol = protocol

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.state in (ChannelState.OPEN, ChannelState.DRAINING):
            self.out.append_bytes(bytes(data))
            self._check_high_water()

    def write_file(self, region: FileRegion) -> None:
        if self.state in (ChannelState.OPEN, ChannelState.DRAINING):
            self.out.append_file(region)
            self._check_high_water()
        else:
            region.close()

    def get_write_buffer_size(self) -> int:
        return self.out.total

    def sending_file(self) -> bool:
        return bool(self.out.file_bytes)

    def _check_high_water(self) -> None:
        out = self.out
        if not self.writing_paused and (out.total > self.limits.output_high_water
                                        or out.files >= self.limits.files_per_connection):
            self.writing_paused = True
            self.protocol.pause_writing()

    def pause_reading(self) -> None:
        self.reading_paused = True

    def resume_reading(self) -> None:
        self.reading_paused = False

    def close_when_done(self, reason: str) -> None:
        if self.state is ChannelState.OPEN:
            self.state = ChannelState.DRAINING
            self.close_reason = reason

    def abort(self, reason: str) -> None:
        if not self.closed:
            self.closed = True
            self.close_reason = self.close_reason or reason

    def fail(self, exc: Exception) -> None:
        raise exc  # an unexpected error is a bug: let the test see it

    def drain(self) -> None:
        """The peer reads everything queued (file regions with pread)."""
        out = self.out
        while out:
            region = out.head_region()
            if region is not None:
                data = os.pread(region.fd, region.remaining, region.offset)
                self.sent += data
                out.advance_region(region, len(data))
            else:
                chunks = out.leading_chunks(64)
                for chunk in chunks:
                    self.sent += chunk
                out.consume_memory(sum(len(c) for c in chunks))
        if self.writing_paused and not self.closed:
            self.writing_paused = False
            self.protocol.resume_writing()

    def lose(self) -> None:
        """The connection is gone (as Channel.finish_close would report it)."""
        self.closed = True
        self.state = ChannelState.CLOSED
        self.out.clear()
        self.protocol.connection_lost()


@dataclasses.dataclass
class Reply:
    """A reply in either protocol: ``code`` is the native error code; for HTTP, the
    status is compared through the same table the server uses."""

    ok: bool
    status: int  # HTTP status (native: 200 or the status its code maps to)
    code: str | None
    headers: dict[str, str]
    body: bytes

    def refused(self, code: str) -> bool:
        return not self.ok and (self.code == code or self.status == STATUS[code])


@contextlib.contextmanager
def harnesses(kind: str, root: Path) -> Iterator[Callable[..., "Harness"]]:
    """A factory of harnesses of ``kind`` over ``root``, each closed at the end."""
    made: list[Harness] = []

    def make(**kw: Any) -> Harness:
        harness = Harness(kind, root, **kw)
        made.append(harness)
        return harness

    try:
        yield make
    finally:
        for harness in reversed(made):  # (one sharing another's root closes first)
            harness.close()


class Harness:
    """One session of ``kind`` ("native", "http" or "webdav": HTTP as a WebDAV client
    speaks it) on a fake channel over a real root."""

    def __init__(self, kind: str, root: Path, *, token: str | None = None,
                 tokens: dict[str, frozenset[str]] | None = None,
                 limits: Limits | None = None, ceiling: Ceiling = Ceiling(),
                 peer_host: str = "192.0.2.7", tls: bool = False,
                 access: Access | None = None, shared_root: Root | None = None) -> None:
        """``shared_root``: a Root another harness made (one server, several
        connections: the same books of partial files); else one of its own."""
        self.kind = kind
        self.limits = limits or Limits()
        self.clock = [0.0]
        self.loop = FakeLoop()
        tokens = dict(tokens or {})
        if token is not None:
            tokens[token] = ALL_RIGHTS
        self.access = access or Access(tokens, self.limits, HostNames("127.0.0.1"),
                                       ceiling, clock=lambda: self.clock[0])
        self.owns_root = shared_root is None
        self.root = shared_root or Root(root, partial_count=self.limits.partial_count,
                                        partials_per_writer=self.limits.partials_per_writer)
        self.services = Services(self.loop, self.root, self.limits, self.access)
        self.channel = FakeChannel(self.limits, self.loop, peer_host, tls)
        cls = NativeSession if kind == "native" else HttpSession
        self.session: Session = cls(self.services, self.channel)
        self.channel.protocol = self.session
        self.wire = (NativeWire() if kind == "native" else DavWire() if kind == "webdav"
                     else HttpWire())

    def close(self) -> None:
        if not self.channel.closed:
            self.channel.lose()
        if self.owns_root:
            self.root.close()
            self.services.locks.remove()  # (its lock table, if a lock made one)

    # -- the peer's side

    def send(self, data: bytes, *, read: bool = True) -> None:
        """The peer sends ``data``; the session handles it; the peer reads the replies."""
        if data:
            self.session.data_received(memoryview(bytearray(data)))
        self.settle(read)

    def eof(self) -> None:
        self.session.eof_received()
        self.settle(True)

    def settle(self, read: bool = True) -> None:
        for _ in range(1000):
            self.loop.run_ready()
            helper_busy = self.session.work.state in (Work.VERIFYING,  # (an upload's digest,
                                                      Work.HASHING,  # a get's file,
                                                      Work.CHECKING)  # or a password)
            if helper_busy and not self.channel.closed:
                self.loop.wait_for_callback()
                continue
            if read:
                self.channel.drain()
            if not self.loop.ready:
                return
        raise AssertionError("the session never settled")

    def replies(self) -> list[Reply]:
        """Every reply sent so far (the peer reads what is queued first)."""
        self.channel.drain()
        return self.wire.parse(bytes(self.channel.sent))

    def login(self, token: str) -> None:
        """Present ``token``: once per connection (native), with every request (HTTP)."""
        if isinstance(self.wire, NativeWire):
            self.send(self.wire.login(token))
        else:
            self.wire.token = token

    def sign_in(self, user: str, password: str) -> None:
        """Present a name and password: an auth request (native), HTTP Basic with every
        request (HTTP)."""
        if isinstance(self.wire, NativeWire):
            self.send(protocol.encode_auth(next(self.wire.ids),
                                           {"user": user, "password": password}))
        else:
            # (over plain HTTP from another machine, Basic is taken only with
            # --allow-basic-over-http: test_webdav.py checks that rule; here it is on)
            self.access.basic_over_http = True
            basic = base64.b64encode(f"{user}:{password}".encode()).decode()
            self.wire.authorization = "Basic " + basic

    @property
    def stats(self) -> tuple[int, int]:
        return self.services.stats.transfers_done, self.services.stats.transfers_failed

    @property
    def closing(self) -> bool:
        return self.channel.closed or self.channel.state is not ChannelState.OPEN


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


class NativeWire:
    """The native protocol from the client's side."""

    def __init__(self) -> None:
        self.ids = iter(range(1, 1 << 30))

    def login(self, token: str) -> bytes:
        return protocol.encode_auth(next(self.ids), token)

    def credentials(self, token: str | None) -> tuple[bytes, dict[str, str]]:
        """(bytes to send before a request, what to add to it) to present ``token``."""
        return (self.login(token) if token is not None else b""), {}

    def put(self, name: str, data: bytes, token: str | None = None, *,
            body: bool = True, overwrite: bool = False) -> bytes:
        before, _ = self.credentials(token)
        frame = protocol.encode_put(next(self.ids), name, len(data), sha256(data),
                                    overwrite=overwrite)
        return before + frame + (data if body else b"")

    def get(self, name: str, token: str | None = None) -> bytes:
        before, _ = self.credentials(token)
        return before + protocol.encode_get(next(self.ids), name)

    def header_only(self, name: str) -> bytes:
        return protocol.encode_stat(next(self.ids), name)

    def listing(self, path: str = "") -> bytes:
        return protocol.encode_list(next(self.ids), path)

    def mkdir(self, name: str) -> bytes:
        return protocol.encode_mkdir(next(self.ids), name)

    def rm(self, name: str, *, recursive: bool = False) -> bytes:
        return protocol.encode_rm(next(self.ids), name, recursive=recursive)

    def mv(self, name: str, to: str, *, overwrite: bool = False) -> bytes:
        return protocol.encode_mv(next(self.ids), name, to, overwrite=overwrite)

    def parse(self, data: bytes) -> list[Reply]:
        decoder = protocol.FrameDecoder()
        replies: list[Reply] = []
        if not data:
            return replies
        decoder.receive_data(data)
        fields: dict[str, Any] = {}
        body = bytearray()
        while True:
            event = decoder.next_event()
            if event is protocol.NEED_DATA or isinstance(event, protocol.PeerClosed):
                return replies
            if isinstance(event, protocol.FrameHeader):
                fields, body = event.fields, bytearray()
            elif isinstance(event, protocol.BodyData):
                body += event.data
            elif isinstance(event, protocol.FrameEnd):
                ok = fields.get("ok") is True
                code = None if ok else str(fields.get("error"))
                replies.append(Reply(ok, 200 if ok else STATUS.get(code or "", 500), code,
                                     {k: json.dumps(v) for k, v in fields.items()},
                                     bytes(body)))


class HttpWire:
    """HTTP/1.1 from the client's side (requests by hand, responses parsed by h11)."""

    host = "127.0.0.1"

    def __init__(self) -> None:
        self.methods: list[str] = []  # of the requests made, to parse their responses
        self.token: str | None = None  # sent with every request once set (see login)
        self.authorization: str | None = None  # (or this Authorization header: sign_in)

    def credentials(self, token: str | None) -> tuple[bytes, dict[str, str]]:
        return b"", ({"Authorization": f"Bearer {token}"} if token is not None else {})

    def request(self, method: str, target: str, headers: dict[str, str] | None = None,
                body: bytes = b"", *, send_body: bool = True, token: str | None = None) -> bytes:
        token = token if token is not None else self.token
        if token is not None:
            headers = {**(headers or {}), "Authorization": f"Bearer {token}"}
        elif self.authorization is not None and "Authorization" not in (headers or {}):
            headers = {**(headers or {}), "Authorization": self.authorization}
        self.methods.append(method)
        lines = [f"{method} {target} HTTP/1.1", f"Host: {self.host}"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body if send_body else b"")

    def put(self, name: str, data: bytes, token: str | None = None, *,
            body: bool = True, overwrite: bool = True) -> bytes:
        _, headers = self.credentials(token)  # (an HTTP PUT always asks to replace)
        headers = {**headers, "Content-Length": str(len(data)),
                   "X-Content-SHA256": sha256(data)}
        return self.request("PUT", "/" + name, headers, data, send_body=body)

    def get(self, name: str, token: str | None = None) -> bytes:
        _, headers = self.credentials(token)
        return self.request("GET", "/" + name, headers)

    def header_only(self, name: str) -> bytes:
        return self.request("HEAD", "/" + name)

    def listing(self, path: str = "") -> bytes:
        return self.request("GET", "/" + path + ("/" if path else ""))

    def mkdir(self, name: str) -> bytes:
        return self.request("MKCOL", "/" + name + "/")

    def rm(self, name: str, *, recursive: bool = False) -> bytes:
        return self.request("DELETE", "/" + name)  # (of a directory: always recursive)

    def mv(self, name: str, to: str, *, overwrite: bool = False) -> bytes:
        return self.request("MOVE", "/" + name, {"Destination": "/" + to,
                                                 "Overwrite": "T" if overwrite else "F"})

    def parse(self, data: bytes) -> list[Reply]:
        replies: list[Reply] = []
        conn = h11.Connection(h11.CLIENT)
        conn.receive_data(data)
        for method in self.methods:
            # Each response answers one request; h11 needs to have "sent" it.
            conn.send(h11.Request(method="HEAD" if method == "HEAD" else "GET", target="/",
                                  headers=[("Host", self.host)]))
            conn.send(h11.EndOfMessage())
            response, body = None, bytearray()
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA or type(event) is h11.ConnectionClosed:
                    return replies
                if type(event) is h11.Response:
                    response = event
                elif type(event) is h11.Data:
                    body += event.data
                elif type(event) is h11.EndOfMessage:
                    break
            assert response is not None
            headers = {k.decode().lower(): v.decode() for k, v in response.headers}
            status = response.status_code
            replies.append(Reply(status < 400, status, None, headers, bytes(body)))
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return replies
            conn.start_next_cycle()
        return replies


class DavWire(HttpWire):
    """WebDAV from the client's side, as file managers speak it: a listing is a
    PROPFIND, a Destination is a whole URL, no digest is declared with a PUT."""

    def put(self, name: str, data: bytes, token: str | None = None, *,
            body: bool = True, overwrite: bool = True) -> bytes:
        _, headers = self.credentials(token)
        headers = {**headers, "Content-Length": str(len(data))}
        return self.request("PUT", "/" + quote(name), headers, data, send_body=body)

    def get(self, name: str, token: str | None = None) -> bytes:
        _, headers = self.credentials(token)
        return self.request("GET", "/" + quote(name), headers)

    def listing(self, path: str = "") -> bytes:
        return self.propfind(path, "1")

    def propfind(self, name: str, depth: str) -> bytes:
        body = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:"><D:prop><D:resourcetype/>'
                b"<D:getcontentlength/><D:getlastmodified/></D:prop></D:propfind>")
        return self.request("PROPFIND", "/" + quote(name), {
            "Depth": depth, "Content-Type": "application/xml",
            "Content-Length": str(len(body))}, body)

    def mkdir(self, name: str) -> bytes:
        return self.request("MKCOL", "/" + quote(name))

    def rm(self, name: str, *, recursive: bool = False) -> bytes:
        return self.request("DELETE", "/" + quote(name))

    def mv(self, name: str, to: str, *, overwrite: bool = False) -> bytes:
        return self.request("MOVE", "/" + quote(name), {
            "Destination": f"http://{self.host}/{quote(to)}",
            "Overwrite": "T" if overwrite else "F"})
