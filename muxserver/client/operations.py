"""The client's operations: what each request sends, and what its reply means locally.

Each :class:`Operation` builds one request and consumes its reply; the pipelining
connection (``connection.py``) drives many of them at once. Local files are read and
written here: an upload's source is sent by ``sendfile`` from an open descriptor, a
download is hashed as it is written to ``NAME.part`` and renamed onto ``NAME`` (in one
atomic step, ``atomic.py``) only once its digest matches.

Digests are BLAKE3 (digests.py). An upload whose digest this machine remembers declares
it in its header; any other is hashed *while* it is sent, by the helper thread reading
the file beside the ``sendfile``, and its digest follows the body in a trailer frame: a
fresh file is read once, not twice.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any, Callable

from .. import protocol
from ..atomic import publish
from ..digests import BLAKE3, Digest, from_fields
from ..errors import MuxError
from ..hashing import HashJob
from .local import is_regular, remember_digest, remember_digest_of, remembered_digest

Progress = Callable[["Operation", int, int], None]  # (operation, bytes done, bytes total)
Finished = Callable[["Operation"], None]


class ClientError(MuxError):
    """The operation could not be carried out; ``code`` is a protocol code or a local
    one ("connect", "local_error", ...)."""


@dataclasses.dataclass
class Result:
    """How one operation ended."""

    op: str
    name: str
    ok: bool = False
    code: str = ""
    message: str = ""
    size: int = 0
    digest: Digest | None = None  # what the file was verified with (put and get)
    path: str = ""  # the local file, for put and get
    info: dict[str, Any] = dataclasses.field(default_factory=dict)
    entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)


class Operation:
    """One request and the handling of its reply. Subclasses fill in the details."""

    op = ""

    def __init__(self, name: str) -> None:
        self.name = name
        self.id = 0
        self.result = Result(self.op, name)
        self.body_fd = -1  # an upload's source file
        self.body_offset = 0  # where in that file the body starts (a resumed upload)
        self.body_size = 0  # body bytes to send (put) or announced (get)
        self.done_bytes = 0  # body bytes sent (put) or received (get)

    def prepare(self) -> None:
        """Local checks and work before the request is sent (may raise ClientError)."""

    def header(self) -> bytes:
        raise NotImplementedError

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        if fields.get("ok") is not True:
            raise ClientError(str(fields.get("error", "bad_reply")),
                              str(fields.get("message", "the server refused the request")))

    def on_body(self, data: memoryview) -> None:
        raise ClientError("bad_reply", "unexpected reply body")

    def on_end(self) -> bool:
        """The reply frame is complete; return True when the operation is finished."""
        self.result.ok = True
        return True

    def trailer(self) -> bytes:
        """A frame that follows the body once it is sent (b"": none)."""
        return b""

    def cleanup(self, failed: bool) -> None:
        """Release local resources; on failure remove what must not stay behind."""
        if self.body_fd >= 0:
            os.close(self.body_fd)
            self.body_fd = -1


class PutFile(Operation):
    """Upload a local file under ``name``.

    ``resumable`` asks the server to keep what it received if the connection breaks;
    ``offset`` (learnt with :class:`Partial`) continues such an upload from there.
    ``digest``: the file's, if known; else it is remembered or computed while sending.
    """

    op = "put"
    TRAILER = BLAKE3  # the digest computed while sending

    def __init__(self, local: str | os.PathLike[str], name: str, *, overwrite: bool = False,
                 resumable: bool = False, offset: int = 0,
                 digest: Digest | None = None) -> None:
        super().__init__(name)
        self.local = os.fspath(local)
        self.overwrite = overwrite
        self.resumable = resumable or bool(offset)
        self.result.path = self.local
        self.mtime: float | None = None
        self.digest = digest
        self.hash_job: HashJob | None = None  # hashing the file while it is sent
        self.with_trailer = False  # its digest was announced to follow the body
        self.file_size = 0
        self.body_offset = offset

    def prepare(self) -> None:
        try:  # O_NONBLOCK: opening a FIFO by mistake must not hang the client
            fd = os.open(self.local, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError as exc:
            raise ClientError("local_error", f"cannot read {self.local}: {exc.strerror}") from None
        self.body_fd = fd
        st = os.fstat(fd)
        if not is_regular(st):
            raise ClientError("local_error", f"{self.local} is not a regular file")
        self.file_size = st.st_size
        if self.body_offset > self.file_size:
            raise ClientError("offset_mismatch", f"the server holds more of {self.name} than "
                                                 f"{self.local} has; put it without --resume")
        self.body_size = self.file_size - self.body_offset
        self.mtime = st.st_mtime
        if self.digest is None:
            self.digest = remembered_digest(fd, st)
        if self.digest is None:  # hashed beside the sendfile, from the first byte
            try:
                self.hash_job = HashJob(fd, self.TRAILER, already=self.file_size)
            except OSError as exc:
                raise ClientError("local_error", f"cannot read {self.local}: "
                                                 f"{exc.strerror}") from None
            self.hash_job.finish(self.file_size, lambda _digest: None)

    def header(self) -> bytes:
        self.with_trailer = self.hash_job is not None
        return protocol.encode_put(self.id, self.name, self.body_size,
                                   None if self.with_trailer else self.digest,
                                   overwrite=self.overwrite, mtime=self.mtime,
                                   offset=self.body_offset, resumable=self.resumable,
                                   trailer=self.TRAILER if self.with_trailer else "")

    def kept_query(self) -> "Partial":
        """What to ask the server of this put once it was cut off: how much it kept,
        named as the put named it (its digest, or its mtime if the digest was to
        follow the body)."""
        if self.with_trailer:
            return Partial(self.name, None, self.file_size, mtime=self.mtime)
        return Partial(self.name, self.digest, self.file_size)

    def trailer(self) -> bytes:
        job = self.hash_job
        if job is None:
            return b""
        computed = job.wait()
        if computed is None:
            raise ClientError("local_error", f"cannot read {self.local} to hash it")
        self.digest = Digest(job.algorithm, computed)
        return protocol.encode_trailer(self.id, self.digest)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        digest = self.digest
        if digest is None or fields.get(digest.algorithm) != digest.hex:
            raise ClientError("checksum_mismatch", "the server stored a different digest")
        self.result.size = self.file_size
        self.result.digest = digest
        if self.hash_job is not None:  # (learnt while sending: a later put declares it)
            remember_digest_of(self.body_fd, digest)

    def cleanup(self, failed: bool) -> None:
        if self.hash_job is not None:
            self.hash_job.cancel()
            self.hash_job = None
        super().cleanup(failed)


class Partial(Operation):
    """Ask how much of an interrupted upload of this exact file the server holds: one
    that declared ``digest``, or (None) one whose digest was to follow its body, named
    by the ``mtime`` it declared."""

    op = "partial"

    def __init__(self, name: str, digest: Digest | str | None, size: int,
                 mtime: float | None = None) -> None:
        super().__init__(name)
        self.digest, self.size, self.mtime = digest, size, mtime

    def header(self) -> bytes:
        return protocol.encode_partial(self.id, self.name, self.digest, self.size,
                                       mtime=self.mtime)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        offset = fields.get("offset")
        if type(offset) is not int or not 0 <= offset <= self.size:
            raise ClientError("bad_reply", "the partial reply has no valid offset")
        self.result.info = {"offset": offset}


class GetFile(Operation):
    """Download ``name`` into the local file ``dest`` (via ``dest.part``).

    With ``resume``, an existing ``dest.part`` is continued from its end. A download
    cut by a broken connection or an interrupt keeps its ``.part`` for that purpose;
    any other failure removes it.
    """

    op = "get"
    KEEPS_PART = frozenset({"", "connection", "timeout"})  # transport trouble, not bad data
    ALGORITHM = BLAKE3  # the digest asked for, and checked

    def __init__(self, name: str, dest: str | os.PathLike[str], *,
                 overwrite: bool = False, resume: bool = False) -> None:
        super().__init__(name)
        self.dest = os.fspath(dest)
        self.part = self.dest + ".part"
        self.overwrite = overwrite
        self.resume = resume
        self.result.path = self.dest
        self.expected_size = 0  # what a stat said, for progress totals (the reply decides)
        self.fd = -1
        self.hash_job: HashJob | None = None  # the helper thread hashes what we write
        self.written = 0
        self.expected: Digest | None = None  # what the server announced
        self.trailer_due = False  # the body is in; its digest comes in the next frame
        self.mtime: float | None = None
        self.offset = 0  # bytes of .part kept from an earlier attempt
        self.opened = False  # the .part is ours to clean up

    def prepare(self) -> None:
        if os.path.lexists(self.dest) and not self.overwrite:
            raise ClientError("exists", f"{self.dest} already exists locally "
                                        "(use --overwrite to replace it)")
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (0 if self.resume else os.O_TRUNC)
        try:
            self.fd = os.open(self.part, flags, 0o644)
            self.opened = True
            if self.resume:  # what we hold is hashed (by the helper) before what comes
                self.offset = os.fstat(self.fd).st_size
                os.lseek(self.fd, 0, os.SEEK_END)
            self.written = self.offset
            self.hash_job = HashJob(self.fd, self.ALGORITHM, already=self.offset)
        except OSError as exc:
            raise ClientError("local_error", f"cannot write {self.part}: {exc.strerror}") from None

    def header(self) -> bytes:
        return protocol.encode_get(self.id, self.name, self.offset, digest=self.ALGORITHM,
                                   trailer=True)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        size = fields.get("size")
        try:
            digest = from_fields(fields)
        except ValueError:
            digest = None
        if self.trailer_due:  # the frame after the body: the digest it announced
            if digest is None or digest.algorithm != self.ALGORITHM or length:
                raise ClientError("bad_reply", f"the frame after the body lacks its "
                                               f"{self.ALGORITHM}")
            self.expected = digest
            return
        if digest is None and fields.get("trailer") == self.ALGORITHM:
            pass  # not hashed on the server yet: it hashes the file while sending it
        elif digest is None or digest.algorithm != self.ALGORITHM:
            raise ClientError("bad_reply", f"the reply lacks a size or a {self.ALGORITHM}")
        if type(size) is not int or size != self.offset + length:
            raise ClientError("bad_reply", f"the reply lacks a size or a {self.ALGORITHM}")
        if fields.get("offset", 0) != self.offset:
            raise ClientError("bad_reply", "the reply starts at another offset")
        self.expected = digest
        self.body_size = length
        self.file_size = size
        mtime = fields.get("mtime")
        self.mtime = float(mtime) if isinstance(mtime, (int, float)) else None

    def on_body(self, data: memoryview) -> None:
        try:
            while data:
                written = os.write(self.fd, data)
                data = data[written:]
                self.written += written
        except OSError as exc:
            raise ClientError("local_error", f"cannot write {self.part}: {exc.strerror}") from None
        self._hashing().written(self.written)

    def spliced(self, count: int) -> None:
        """``count`` body bytes were spliced into the .part file at ``written``."""
        self.written += count
        self.done_bytes += count
        self._hashing().written(self.written)

    def _hashing(self) -> HashJob:
        """The helper hashing the .part file (begun with the reply's header)."""
        assert self.hash_job is not None
        return self.hash_job

    def on_end(self) -> bool:
        if self.expected is None:  # the whole body is here; its digest is not yet
            self.trailer_due = True
            return False
        job, self.hash_job = self._hashing(), None
        job.finish(self.written, lambda digest: None)
        computed = job.wait()
        if computed is None:
            raise ClientError("local_error", f"cannot read back {self.part} to verify it")
        digest = Digest(job.algorithm, computed)
        if digest != self.expected:
            if self.offset:
                raise ClientError("checksum_mismatch", f"{self.name}: the resumed file does not "
                                  "match the server's (it changed since the first attempt); "
                                  "get it again without --resume")
            raise ClientError("checksum_mismatch", f"{self.name}: received data has {digest}, "
                                                   f"the server declared {self.expected.hex}")
        try:
            os.fsync(self.fd)
            if self.mtime is not None:
                os.utime(self.fd, (self.mtime, self.mtime))
            os.close(self.fd)
            self.fd = -1
            publish(self.part, self.dest, overwrite=self.overwrite)
        except FileExistsError:
            raise ClientError("exists", f"{self.dest} appeared locally during the "
                                        "download") from None
        except OSError as exc:
            raise ClientError("local_error", f"cannot write {self.dest}: {exc.strerror}") from None
        self.result.ok = True
        self.result.size = self.file_size
        self.result.digest = digest
        remember_digest(self.dest, digest)  # a later put of this file need not hash it
        return True

    def cleanup(self, failed: bool) -> None:
        super().cleanup(failed)
        if self.hash_job is not None:
            self.hash_job.cancel()
            self.hash_job = None
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        if failed and self.opened and not self.keeps_part():
            try:
                os.unlink(self.part)
            except FileNotFoundError:
                pass  # never created, or already renamed

    def keeps_part(self) -> bool:
        """After a failure: is the .part worth keeping for get --resume?"""
        if self.result.code not in self.KEEPS_PART:
            return False
        try:
            return os.path.getsize(self.part) > 0
        except OSError:
            return False


class Auth(Operation):
    """Present the token; sent first on every connection when the client has one."""

    op = "auth"

    def __init__(self, credentials: str | dict[str, str]) -> None:
        super().__init__("")
        self.credentials = credentials  # a token, or the fields of protocol.encode_auth

    def header(self) -> bytes:
        return protocol.encode_auth(self.id, self.credentials)


class Stat(Operation):
    op = "stat"

    def header(self) -> bytes:
        return protocol.encode_stat(self.id, self.name)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        self.result.info = {k: v for k, v in fields.items() if k not in ("id", "ok")}
        self.result.size = int(fields.get("size", 0))


class Share(Operation):
    """Make a share link (``action`` "make"), list one's links ("list") or revoke one
    ("revoke"); the reply's fields are in ``result.info``."""

    op = "share"

    def __init__(self, action: str, name: str = "", *, write: bool = False,
                 expires: int = 0, link_id: str = "") -> None:
        super().__init__(name)
        self.action, self.write, self.expires, self.link_id = action, write, expires, link_id

    def header(self) -> bytes:
        return protocol.encode_share(self.id, self.action, self.name, write=self.write,
                                     expires=self.expires, link_id=self.link_id)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        self.result.info = {k: v for k, v in fields.items() if k not in ("id", "ok")}


class ListDir(Operation):
    """List a directory ("" is the root); the reply comes as pages of JSON lines."""

    op = "list"

    def __init__(self, path: str = "", *, recursive: bool = False) -> None:
        super().__init__(path)
        self.recursive = recursive
        self._more = False
        self._page = bytearray()

    def header(self) -> bytes:
        return protocol.encode_list(self.id, self.name, recursive=self.recursive)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        self._more = fields.get("more") is True
        left_out = fields.get("left_out")
        if type(left_out) is int and left_out > 0:
            self.result.info["left_out"] = left_out

    def on_body(self, data: memoryview) -> None:
        self._page += data

    def on_end(self) -> bool:
        for line in bytes(self._page).splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                raise ClientError("bad_reply", "a listing line is not JSON") from None
            self.result.entries.append(entry)
        self._page.clear()
        if self._more:
            return False
        self.result.ok = True
        return True


class MakeDir(Operation):
    """Make a directory (with ``parents``: its parents too, and an existing one is fine)."""

    op = "mkdir"

    def __init__(self, name: str, *, parents: bool = False) -> None:
        super().__init__(name)
        self.parents = parents

    def header(self) -> bytes:
        return protocol.encode_mkdir(self.id, self.name, parents=self.parents)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        self.result.info = {"created": fields.get("created") is True}


class Remove(Operation):
    """Remove a file (with ``recursive``: a directory and all it holds)."""

    op = "rm"

    def __init__(self, name: str, *, recursive: bool = False) -> None:
        super().__init__(name)
        self.recursive = recursive

    def header(self) -> bytes:
        return protocol.encode_rm(self.id, self.name, recursive=self.recursive)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        removed = fields.get("removed")
        self.result.info = {"removed": removed if type(removed) is int else 0}


class Move(Operation):
    """Rename ``name`` to ``to`` on the server (atomic, no copy)."""

    op = "mv"

    def __init__(self, name: str, to: str, *, overwrite: bool = False) -> None:
        super().__init__(name)
        self.to = to
        self.overwrite = overwrite

    def header(self) -> bytes:
        return protocol.encode_mv(self.id, self.name, self.to, overwrite=self.overwrite)

    def on_header(self, fields: dict[str, Any], length: int) -> None:
        super().on_header(fields, length)
        self.result.info = {"to": self.to, "replaced": fields.get("replaced") is True}
