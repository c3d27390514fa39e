"""The muxserver wire protocol: frame layout, encoders, and a sans-I/O decoder.

This module never touches a socket or a file. It turns bytes into events and
events into bytes; the event loop moves the bytes (``channel.py``) and the sessions
decide what a request does (``session.py``, ``native.py``). ``docs/PROTOCOL.md`` is
the normative description; this is its executable form.

Theory of operation
-------------------
TCP is a stream: one ``send`` is not one ``recv``. Messages arrive split (even the
8-byte prefix can come in three pieces) and coalesced (one ``recv`` can hold the end
of one request and the start of the next). So every message is *length-prefixed*,
the Socket HOWTO's "much better" choice::

    offset 0      4        5      6              8                 8+H
           +------+--------+------+--------------+-----------------+------------+
           |magic |version|flags |header length | header: UTF-8   | body:      |
           |89 4D |  01   |  00  | H, 16 bits,  | JSON object of  | "length"   |
           |55 58 |       |      | big-endian   | H bytes         | bytes      |
           +------+--------+------+--------------+-----------------+------------+

:class:`FrameDecoder` is fed bytes in whatever pieces ``recv`` returned
(``receive_data``) and asked for events (``next_event``), in the style of h11:

* it first collects exactly 8 prefix bytes, then exactly H header bytes, keeping
  partial pieces in a small buffer of its own (bounded by the header cap);
* it then hands out the body as :class:`BodyData` slices of the caller's own
  buffer, without copying, until "length" bytes have gone by, then :class:`FrameEnd`;
* bytes after the end of a frame belong to the next frame and stay where they are:
  the next call to ``next_event`` decodes them. The caller can stop asking (to
  apply backpressure); before it reuses the memory it lent, it calls
  :meth:`FrameDecoder.keep_leftover`, which copies the unread tail;
* ``receive_data(b"")`` means the peer finished sending; at a frame boundary that is
  a clean :class:`PeerClosed`, inside a frame it is a truncated message.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import struct
from typing import Any, Callable, Mapping

from .digests import ALGORITHMS, SHA256, Digest, from_fields
from .errors import MuxError

MAGIC = b"\x89MUX"
VERSION = 1
PREFIX = struct.Struct("!4sBBH")  # magic, version, flags, header length: network byte order
PREFIX_SIZE = PREFIX.size  # 8
MAX_ID = 2**53 - 1  # the largest integer every JSON implementation holds exactly
UNLIMITED = 2**63 - 1

OPERATIONS = ("auth", "put", "get", "stat", "list", "partial", "mkdir", "rm", "mv",
              "trailer", "share")
#: What a share request does: make a link, list the links one made, revoke one.
SHARE_ACTIONS = ("make", "list", "revoke")

#: Stable error codes carried in error replies, with the meaning the docs give them.
ERROR_CODES: dict[str, str] = {
    "bad_magic": "the frame does not start with the 4 magic bytes; the connection is closed",
    "bad_version": "the prefix names a protocol version this server does not speak; closed",
    "header_too_large": "the header length is over the server's cap; closed",
    "bad_header": "the header is not a UTF-8 JSON object with a valid length; closed",
    "too_large": "the declared body or file is larger than the server accepts",
    "bad_request": "a field is missing or has the wrong type or value",
    "unknown_op": "the op field names no operation this server knows",
    "bad_name": "the name is not a safe relative path (see Names)",
    "forbidden": "the name passes through a symbolic link; the server never follows one",
    "not_found": "no such file or directory",
    "is_directory": "the name is a directory where a file was needed",
    "not_a_directory": "a directory was needed (a parent or a listed path is a file)",
    "not_a_file": "the name is a FIFO, device or socket; only regular files are served",
    "exists": "the name exists and the request did not ask to overwrite",
    "overwrite_refused": "the request asked to overwrite but the server does not allow it",
    "locked": "a WebDAV client holds a lock on the name (or a folder above it); only a "
              "request that submits the lock's token may change it until it ends",
    "checksum_mismatch": "the body's SHA-256 differs from the declared one; nothing was stored",
    "offset_mismatch": "a resume offset differs from what the other side holds",
    "no_space": "the server's disk is full or the file is over its size limit",
    "io_error": "the server's disk failed while reading or writing",
    "server_busy": "the server is short of a resource (file descriptors); nothing was done; "
                   "try again soon",
    "unauthorized": "the server needs a token and none (or a wrong one) was presented",
    "not_permitted": "the server's flags or the token's rights do not allow this operation",
    "too_many_attempts": "too many wrong tokens came from this address; it must wait; closed",
    "too_many_clients": "the server holds its maximum of connections; closed",
    "timeout": "the connection was silent for too long; closed",
    "shutting_down": "the server is stopping; requests not started are not served; closed",
    "internal": "an unexpected server error; the connection is closed",
}

#: Error codes after which the server closes the connection (the stream cannot be resynced).
FATAL_CODES = frozenset(
    {"bad_magic", "bad_version", "header_too_large", "bad_header", "too_many_clients",
     "too_many_attempts", "timeout", "shutting_down", "internal"}
)



class ProtocolError(MuxError):
    """A peer broke the framing; the connection cannot continue. ``fields``: the
    header, when the frame's header could be read."""

    def __init__(self, code: str, message: str, fields: Mapping[str, Any] | None = None) -> None:
        super().__init__(code, message)
        self.fields: Mapping[str, Any] = fields or {}


class RequestError(MuxError):
    """A well-framed request that cannot be served. The connection continues."""


# --------------------------------------------------------------------------- events


class _NeedData:
    """Sentinel: the decoder has nothing more to say until it gets more bytes."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA = _NeedData()


class FrameHeader:
    """A frame's header arrived whole; ``length`` body bytes follow.

    (A plain class rather than a dataclass like the events below: one is made per
    request, and in the compiled build (setup.py) a dataclass's ``__init__`` stays the
    one Python's dataclasses module writes, run by the interpreter.)"""

    __slots__ = ("fields", "length")

    def __init__(self, fields: dict[str, Any], length: int) -> None:
        self.fields = fields
        self.length = length

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, FrameHeader) and self.length == other.length
                and self.fields == other.fields)

    def __repr__(self) -> str:
        return f"FrameHeader(fields={self.fields!r}, length={self.length})"


class BodyData:
    """A piece of the current frame's body: a slice of the caller's buffer, not a copy.

    (A plain class too: mypyc cannot yet give a dataclass a memoryview field.)"""

    __slots__ = ("data",)

    def __init__(self, data: memoryview) -> None:
        self.data = data

    def __repr__(self) -> str:
        return f"BodyData({len(self.data)} bytes)"


@dataclasses.dataclass(slots=True, frozen=True)
class FrameEnd:
    """The current frame's body is complete (sent also for frames with no body)."""


@dataclasses.dataclass(slots=True, frozen=True)
class PeerClosed:
    """The peer finished sending. ``mid_frame``: it stopped inside a frame (truncated)."""

    mid_frame: bool


FRAME_END = FrameEnd()
CLOSED_BETWEEN_FRAMES = PeerClosed(mid_frame=False)
_NO_INPUT = memoryview(b"")
Event = FrameHeader | BodyData | FrameEnd | PeerClosed | _NeedData


class DecoderState(enum.Enum):
    PREFIX = "reading prefix"
    HEADER = "reading header"
    BODY = "reading body"
    CLOSED = "peer closed"
    BROKEN = "protocol error"


# ------------------------------------------------------------------------- decoder


class FrameDecoder:
    """Turns a byte stream, in any chunking, into frame events. Never touches a socket."""

    def __init__(self, max_header_size: int = 65535, max_body_size: int = UNLIMITED) -> None:
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.state = DecoderState.PREFIX
        self.header_length = 0  # H of the frame being read
        self.body_left = 0  # body bytes of the current frame not handed out yet
        self._acc = bytearray()  # prefix or header bytes collected so far
        self._view = _NO_INPUT  # input not decoded yet
        self._pos = 0
        self._owned = True  # False while _view is memory lent by the caller
        self._eof = False
        self._error: ProtocolError | None = None
        self._closed = CLOSED_BETWEEN_FRAMES

    # -- feeding

    def receive_data(self, data: bytes | bytearray | memoryview) -> None:
        """Add bytes from the peer; ``b""`` means it finished sending.

        A ``bytearray`` or ``memoryview`` is borrowed, not copied: call
        :meth:`keep_leftover` before that memory is reused.
        """
        if not data:
            self._eof = True
            return
        if self._eof:
            raise RuntimeError("receive_data() after the end of the stream")
        if self._pos < len(self._view):
            if not self._owned:
                raise RuntimeError("borrowed input still unread: call keep_leftover() first")
            # Rare path (the caller paused with bytes unread): join them with the new ones.
            self._view = memoryview(bytes(self._view[self._pos:]) + bytes(data))
            self._owned = True
        else:
            self._owned = isinstance(data, bytes)
            self._view = data if isinstance(data, memoryview) else memoryview(data)
        self._pos = 0

    def keep_leftover(self) -> int:
        """Copy unread borrowed bytes into memory of our own; return how many are waiting.
        With none waiting, let go of the input altogether (a connection between requests
        holds no view of the caller's buffer)."""
        left = len(self._view) - self._pos
        if not left:
            self._view, self._pos, self._owned = _NO_INPUT, 0, True
        elif not self._owned:
            self._view = memoryview(bytes(self._view[self._pos:]))
            self._pos = 0
            self._owned = True
        return left

    @property
    def body_pending_unbuffered(self) -> int:
        """Body bytes still to come that are not in our buffers yet: a caller may move
        them from the socket to their destination itself (splice). 0 otherwise."""
        if self.state is DecoderState.BODY and self._pos == len(self._view):
            return self.body_left
        return 0

    def body_moved_elsewhere(self, count: int) -> None:
        """The caller moved ``count`` body bytes past us (see body_pending_unbuffered)."""
        if count > self.body_pending_unbuffered:
            raise RuntimeError("more body bytes moved than the frame has left")
        self.body_left -= count

    @property
    def buffered(self) -> int:
        """Bytes received but not yet decoded (partial prefix/header plus unread input)."""
        return len(self._acc) + len(self._view) - self._pos

    @property
    def partial(self) -> int:
        """Bytes of the current prefix or header collected so far."""
        return len(self._acc)

    # -- decoding

    def next_event(self) -> Event:
        """Return the next event, or NEED_DATA. Raises ProtocolError on a bad frame."""
        if self._error is not None:
            raise self._error
        try:
            return self._next_event()
        except ProtocolError as exc:
            self.state = DecoderState.BROKEN
            self._error = exc
            raise

    def _next_event(self) -> Event:
        if self.state is DecoderState.PREFIX:
            prefix = self._collect(PREFIX_SIZE)
            if prefix is None:
                return self._out_of_input()
            self._read_prefix(prefix)
        if self.state is DecoderState.HEADER:
            header = self._collect(self.header_length)
            if header is None:
                return self._out_of_input()
            fields = parse_header(header)
            length = self._body_length(fields)
            self.body_left = length
            self.state = DecoderState.BODY
            return FrameHeader(fields, length)
        if self.state is DecoderState.BODY:
            if self.body_left == 0:
                self.state = DecoderState.PREFIX
                return FRAME_END
            available = len(self._view) - self._pos
            if not available:
                return self._out_of_input()
            take = min(available, self.body_left)
            chunk = self._view[self._pos:self._pos + take]
            self._pos += take
            self.body_left -= take
            return BodyData(chunk)
        if self.state is DecoderState.CLOSED:
            return self._closed
        raise AssertionError(self.state)

    def _collect(self, size: int) -> bytes | memoryview | None:
        """The next ``size`` bytes once all of them are here, else None. Straight from
        the input when they arrived in one piece (the usual case: no copy); else they
        gather in a small buffer across recv calls. (A view is only read at once.)"""
        acc, pos = self._acc, self._pos
        available = len(self._view) - pos
        if not acc and available >= size:
            self._pos = pos + size
            return self._view[pos:pos + size]
        take = min(size - len(acc), available)
        if take:
            acc += self._view[pos:pos + take]
            self._pos = pos + take
        if len(acc) < size:
            return None
        gathered = bytes(acc)
        acc.clear()
        return gathered

    def _read_prefix(self, prefix: bytes | memoryview) -> None:
        magic, version, _flags, header_length = PREFIX.unpack(prefix)
        if magic != MAGIC:
            raise ProtocolError("bad_magic", f"expected magic 89 4d 55 58, got {magic.hex(' ')}")
        if version != VERSION:
            raise ProtocolError("bad_version", f"protocol version {version} is not supported "
                                               f"(this server speaks version {VERSION})")
        if header_length == 0:
            raise ProtocolError("bad_header", "header length is 0; a header is a JSON object")
        if header_length > self.max_header_size:
            raise ProtocolError("header_too_large", f"header of {header_length} bytes is over "
                                                    f"the limit of {self.max_header_size}")
        self.header_length = header_length
        self.state = DecoderState.HEADER

    def _body_length(self, fields: dict[str, Any]) -> int:
        length = fields.get("length", 0)
        if type(length) is not int or length < 0:
            raise ProtocolError("bad_header", "length must be a non-negative integer")
        if length > self.max_body_size:
            raise ProtocolError("too_large", f"body of {length} bytes is over the limit "
                                             f"of {self.max_body_size}", fields)
        return length

    def _out_of_input(self) -> Event:
        if not self._eof:
            return NEED_DATA
        mid_frame = self.state is not DecoderState.PREFIX or bool(self._acc)
        self.state = DecoderState.CLOSED
        self._closed = PeerClosed(mid_frame=mid_frame)
        return self._closed


def parse_header(raw: bytes | memoryview) -> dict[str, Any]:
    """Decode a header: strict UTF-8, one JSON object, no duplicate keys, no NaN."""
    try:
        text = str(raw, "utf-8")
    except UnicodeDecodeError:
        raise ProtocolError("bad_header", "header is not valid UTF-8") from None
    try:
        obj = _HEADER_DECODER.decode(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError("bad_header", f"header is not valid JSON ({exc})") from None
    if not isinstance(obj, dict):
        raise ProtocolError("bad_header", "header must be a JSON object")
    return obj


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate key")
    return obj


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


# Made once: json.loads/json.dumps with options build a new decoder/encoder per call,
# which costs more than parsing a small header. Both are stateless between calls.
_HEADER_DECODER = json.JSONDecoder(object_pairs_hook=_reject_duplicate_keys,
                                   parse_constant=_reject_constant)


def _header_encoder() -> Callable[[Mapping[str, Any]], str]:
    """A header's JSON text: compact, UTF-8 as it is, no NaN. JSONEncoder.encode builds
    its C encoder again for every call (a third of a small reply's cost): this one is
    built once. The headers we write are never circular, so it keeps no markers."""
    encoder = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    make = json.encoder.c_make_encoder  # type: ignore[attr-defined]
    try:  # (json's own call, json/encoder.py: not a public interface, so checked here)
        encode = make(None, encoder.default, json.encoder.encode_basestring,
                      None, ":", ",", False, False, False)
    except TypeError:  # (no C accelerator in this Python, or its arguments changed)
        return encoder.encode
    return lambda fields: "".join(encode(fields, 0))


_encode_header = _header_encoder()


# ------------------------------------------------------------------------ encoders


def encode_frame(fields: Mapping[str, Any], length: int = 0) -> bytes:
    """Prefix and header of one frame; the caller sends ``length`` body bytes after it."""
    if length:
        fields = {**fields, "length": length}
    return _frame(_encode_header(fields).encode("utf-8"))


def _frame(header: bytes) -> bytes:
    if len(header) > 65535:
        raise ValueError("header does not fit the 16-bit length field")
    return PREFIX.pack(MAGIC, VERSION, 0, len(header)) + header


def encode_put(req_id: int, name: str, length: int, digest: Digest | str | None, *,
               overwrite: bool = False, mtime: int | float | None = None, offset: int = 0,
               resumable: bool = False, trailer: str = "") -> bytes:
    """A put header; ``length`` body bytes (the file from ``offset`` on) follow it.

    ``digest``: the whole file's (a str is a SHA-256 in hex, the protocol's first
    digest); or None with ``trailer`` naming the algorithm of the digest that follows
    the body in a trailer frame (encode_trailer). ``mtime``: seconds, written as given
    (``int | float``, not ``float``: compiled, a float parameter turns an int into a
    float, and the header would change)."""
    fields: dict[str, Any] = {"id": req_id, "op": "put", "name": name}
    if digest is not None:
        fields.update(as_digest(digest).field)
    if trailer:
        fields["trailer"] = trailer
    if overwrite:
        fields["overwrite"] = True
    if mtime is not None:
        fields["mtime"] = mtime
    if offset:
        fields["offset"] = offset
    if resumable:
        fields["resumable"] = True
    return encode_frame(fields, length)


def encode_trailer(req_id: int, digest: Digest) -> bytes:
    """The frame after a put's body that gives the digest the put announced."""
    return encode_frame({"id": req_id, "op": "trailer", **digest.field})


def encode_get(req_id: int, name: str, offset: int = 0, digest: str = SHA256, *,
               trailer: bool = False) -> bytes:
    """A get; ``digest``: the algorithm of the digest the reply should carry;
    ``trailer``: the client takes that digest after the body when the server has not
    hashed the file yet (it then hashes it while sending it)."""
    fields: dict[str, Any] = {"id": req_id, "op": "get", "name": name}
    if offset:
        fields["offset"] = offset
    if digest != SHA256:
        fields["digest"] = digest
    if trailer:
        fields["trailer"] = True
    return encode_frame(fields)


def encode_partial(req_id: int, name: str, digest: Digest | str | None, size: int,
                   mtime: float | None = None) -> bytes:
    """Ask how many bytes of an interrupted upload the server holds: one named by its
    digest (a str: a SHA-256), or, for a put whose digest came after its body, by the
    ``mtime`` it declared."""
    fields: dict[str, Any] = {"id": req_id, "op": "partial", "name": name, "size": size}
    if digest is not None:
        fields.update(as_digest(digest).field)
    if mtime is not None:
        fields["mtime"] = mtime
    return encode_frame(fields)


def as_digest(value: Digest | str) -> Digest:
    """A digest; a bare str is a SHA-256 in hex (how the protocol's first version wrote
    every digest, and how tests and hand-written clients still may)."""
    return value if isinstance(value, Digest) else Digest(SHA256, value)


def encode_stat(req_id: int, name: str) -> bytes:
    return encode_frame({"id": req_id, "op": "stat", "name": name})


def encode_list(req_id: int, path: str = "", *, recursive: bool = False) -> bytes:
    fields: dict[str, Any] = {"id": req_id, "op": "list", "path": path}
    if recursive:
        fields["recursive"] = True
    return encode_frame(fields)


def encode_mkdir(req_id: int, name: str, *, parents: bool = False) -> bytes:
    fields: dict[str, Any] = {"id": req_id, "op": "mkdir", "name": name}
    if parents:
        fields["parents"] = True
    return encode_frame(fields)


def encode_share(req_id: int, action: str, name: str = "", *, write: bool = False,
                 expires: int = 0, link_id: str = "") -> bytes:
    fields: dict[str, Any] = {"id": req_id, "op": "share", "action": action}
    if action == "make":
        fields.update(name=name, write=write, expires=expires)
    elif action == "revoke":
        fields["link"] = link_id
    return encode_frame(fields)


def encode_rm(req_id: int, name: str, *, recursive: bool = False) -> bytes:
    fields: dict[str, Any] = {"id": req_id, "op": "rm", "name": name}
    if recursive:
        fields["recursive"] = True
    return encode_frame(fields)


def encode_mv(req_id: int, name: str, to: str, *, overwrite: bool = False) -> bytes:
    fields: dict[str, Any] = {"id": req_id, "op": "mv", "name": name, "to": to}
    if overwrite:
        fields["overwrite"] = True
    return encode_frame(fields)


def encode_auth(req_id: int, credentials: str | Mapping[str, str]) -> bytes:
    """``credentials``: a token, or {"token": T}, {"user": NAME, "password": P} or
    {"link": CAPABILITY}."""
    if isinstance(credentials, str):
        credentials = {"token": credentials}
    return encode_frame({"id": req_id, "op": "auth", **credentials})


def encode_ok(req_id: int | None, length: int | None = None, **fields: Any) -> bytes:
    """A success reply. Replies that can carry a body (get, list) always say ``length``,
    0 included; the others have none and leave it out (absent means 0)."""
    if length is None:
        return encode_frame({"id": req_id, "ok": True, **fields})
    header = _encode_header({"id": req_id, "ok": True, **fields, "length": length})
    return _frame(header.encode("utf-8"))


def encode_error(req_id: int | None, code: str, message: str) -> bytes:
    assert code in ERROR_CODES, code
    return encode_frame({"id": req_id, "ok": False, "error": code, "message": message})


# ----------------------------------------------------------------- request checking


_MISSING = object()


class Request:
    """A request header, checked. Fields an operation does not use keep their defaults.

    (A plain class with defaults rather than a dataclass: one is made per request, and
    in the compiled build (setup.py) a dataclass's ``__init__``, 25 assignments, stays
    the one the dataclasses module writes, run by the interpreter.)"""

    op: str
    id: int
    name: str = ""
    length: int = 0
    digest: Digest | None = None  # put, partial, trailer: the whole file's
    trailer: str = ""  # put: the algorithm of the digest a trailer frame brings
    algorithm: str = SHA256  # get: the digest the reply announces
    digest_after: bool = False  # get: the client takes the digest in a trailer frame
    overwrite: bool = False
    mtime: float | None = None
    recursive: bool = False
    token: str = ""  # auth: a token; or a name and password; or a share link's capability
    user: str = ""
    password: str = ""
    link: str = ""
    offset: int = 0  # put/get: resume from this byte
    resumable: bool = False  # put: keep the received bytes if the connection breaks
    size: int = 0  # partial: the whole file's size
    parents: bool = False  # mkdir: make missing parents too (and accept an existing one)
    to: str = ""  # mv: the new name
    action: str = ""  # share: make, list or revoke
    write: bool = False  # share make: a drop box (else read-only)
    expires: int = 0  # share make: seconds the link lives

    def __init__(self, op: str, id: int, length: int = 0) -> None:
        self.op, self.id, self.length = op, id, length

    def __repr__(self) -> str:
        return f"Request(op={self.op!r}, id={self.id}, name={self.name!r})"


def request_id(fields: Mapping[str, Any]) -> int | None:
    """The request's id if it is valid, else None (error replies then carry null)."""
    rid = fields.get("id")
    if type(rid) is int and 0 <= rid <= MAX_ID:
        return rid
    return None


def parse_request(fields: Mapping[str, Any], length: int) -> Request:
    """Check a request header. Raises RequestError with a stable code."""
    rid = request_id(fields)
    if rid is None:
        raise RequestError("bad_request", f"id must be an integer from 0 to {MAX_ID}")
    op = fields.get("op")
    if not isinstance(op, str):  # missing or of another type: the same answer
        raise RequestError("bad_request", "op must be a string")
    if op not in OPERATIONS:
        raise RequestError("unknown_op", f"unknown operation {op[:40]!r}; "
                                         f"known: {', '.join(OPERATIONS)}")
    if op != "put" and length:
        raise RequestError("bad_request", f"a {op} request has no body (length must be 0)")
    req = Request(op=op, id=rid, length=length)
    if op == "auth":  # (what is not a string counts as none: see access.py)
        req.token, req.user, req.password, req.link = (
            value if isinstance(value, str) else "" for value in (
                fields.get(key) for key in ("token", "user", "password", "link")))
        return req
    if op == "trailer":
        req.digest = _digest_field(fields)
        if req.digest is None:
            raise RequestError("bad_request", "a trailer carries the digest: blake3 or sha256")
        return req
    if op == "list":
        req.name = _field(fields, "path", str, "")
        req.recursive = _field(fields, "recursive", bool, False)
        return req
    if op == "share":
        req.action = _field(fields, "action", str)
        if req.action not in SHARE_ACTIONS:
            raise RequestError("bad_request", f"a share's action is one of "
                                              f"{', '.join(SHARE_ACTIONS)}")
        if req.action == "make":
            req.name = _field(fields, "name", str)
            req.write = _field(fields, "write", bool, False)
            req.expires = _count_field(fields, "expires")
        elif req.action == "revoke":
            req.link = _field(fields, "link", str)
        return req
    req.name = _field(fields, "name", str)
    if op == "mkdir":
        req.parents = _field(fields, "parents", bool, False)
    elif op == "rm":
        req.recursive = _field(fields, "recursive", bool, False)
    elif op == "mv":
        req.to = _field(fields, "to", str)
        req.overwrite = _field(fields, "overwrite", bool, False)
    if op in ("put", "get"):
        req.offset = _count_field(fields, "offset", 0)
    if op == "get":
        req.algorithm = _algorithm_field(fields, "digest", SHA256)
        req.digest_after = _field(fields, "trailer", bool, False)
    if op in ("put", "partial"):
        req.digest = _digest_field(fields)
        req.mtime = _mtime_field(fields)
    if op == "put":
        req.overwrite = _field(fields, "overwrite", bool, False)
        req.resumable = _field(fields, "resumable", bool, False)
        req.trailer = _algorithm_field(fields, "trailer", "")
        if (req.digest is None) == (not req.trailer):
            raise RequestError("bad_request", "a put declares its digest (blake3 or sha256) "
                                              "or the trailer that will bring it, not both")
        if req.trailer and req.resumable and req.mtime is None:
            raise RequestError("bad_request", "a resumable put with a trailer needs mtime: "
                                              "it names the upload until the digest comes")
    if op == "partial":
        req.size = _count_field(fields, "size")
        if req.digest is None and req.mtime is None:
            raise RequestError("bad_request", "partial needs the file's digest (blake3 or "
                                              "sha256), or the mtime its put declared")
    return req


def _digest_field(fields: Mapping[str, Any]) -> Digest | None:
    try:
        return from_fields(fields)
    except ValueError as exc:
        raise RequestError("bad_request", str(exc)) from None


def _algorithm_field(fields: Mapping[str, Any], key: str, default: str) -> str:
    value = _field(fields, key, str, default)
    if value != default and value not in ALGORITHMS:
        raise RequestError("bad_request", f"{key} must name a digest: "
                                          f"{' or '.join(ALGORITHMS)}")
    return value


def _count_field(fields: Mapping[str, Any], key: str, default: Any = _MISSING) -> int:
    value = _field(fields, key, int, default)
    if not 0 <= value <= UNLIMITED:
        raise RequestError("bad_request", f"field {key!r} must be a non-negative integer")
    return value


def _field(fields: Mapping[str, Any], key: str, kind: type, default: Any = _MISSING) -> Any:
    value = fields.get(key, _MISSING)
    if value is _MISSING:
        if default is _MISSING:
            raise RequestError("bad_request", f"missing field {key!r}")
        return default
    # bool is a subclass of int in Python; JSON true is not a number, so compare exact types.
    if type(value) is not kind:
        raise RequestError("bad_request", f"field {key!r} must be a {_JSON_TYPE[kind]}")
    return value


_JSON_TYPE = {str: "string", bool: "boolean", int: "integer"}


def _mtime_field(fields: Mapping[str, Any]) -> float | None:
    mtime = fields.get("mtime")
    if mtime is None:
        return None
    if type(mtime) not in (int, float) or not math.isfinite(mtime) or not 0 <= mtime < 2**34:
        raise RequestError("bad_request", "mtime must be seconds since 1970 (a number)")
    return float(mtime)
