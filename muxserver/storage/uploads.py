"""Uploads: how a file arrives, is checked, and takes its name.

An upload goes to a unique temporary file in the target directory (``O_EXCL``,
explicit mode), is hashed as it is written (by the helper thread for big files), then
``fsync``-ed, checked against the declared digest, moved onto the final name
atomically (``atomic.py``) and the directory is ``fsync``-ed. Only then is it reported
done. A failed upload removes its temporary file, an interrupted resumable one keeps it
as a partial file (partials.py), so a final name is always absent, the old file, or the
new file.
"""

from __future__ import annotations

import errno
import itertools
import os
import secrets
import stat
import time
from typing import Any, Callable

from mypy_extensions import mypyc_attr

from ..atomic import publish, rename_new
from ..digests import SHA256, Digest, new_hasher
from ..hashing import HashJob
from .directories import Directories
from .errors import StorageError, split_name, write_error
from .partials import (
    PARTIAL_PREFIX,
    TEMP_PREFIX,
    Partial,
    PartialPolicy,
    claim_name,
    unlink_quietly,
    writer_of,
)
from .root import numbered

FILE_MODE = 0o644  # before the umask, like files created by cp or curl -O
_O_NEW_FILE = os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
ASYNC_HASH_FROM = 4 * 1024 * 1024  # uploads this big are hashed by the helper thread
#: Uploads this big check the free space before they start (one statvfs call).
PARTIAL_PREFLIGHT_FROM = 1024 * 1024
_NO_SPACE = {errno.ENOSPC, errno.EDQUOT}
#: copy_file_range's ways of saying it cannot copy between these two files
_NO_KERNEL_COPY = {errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP}
_BEING_WRITTEN = "another request is writing this upload now; try again when it ends"
NO_SUCH_UPLOAD = "no such upload (finished, given up, or expired)"
# Temporary names: random per process, then counted (O_EXCL guards against any clash).
_RUN_ID = secrets.token_hex(4)
_TEMP_IDS = itertools.count()


def _new_run_id() -> None:
    """A forked worker (workers.py) draws its own: two processes counting from the same
    start would pick the same temporary names, and one upload would fail on O_EXCL."""
    global _RUN_ID, _TEMP_IDS
    _RUN_ID, _TEMP_IDS = secrets.token_hex(4), itertools.count()


os.register_at_fork(after_in_child=_new_run_id)


@mypyc_attr(native_class=False)
class Uploads(PartialPolicy, Directories):
    """Beginning uploads: the target checked, the temporary file opened, or a partial
    file claimed to go on with it."""

    def begin_upload(self, name: str, length: int, expected: Digest | None, *,
                     overwrite: bool, allow_overwrite: bool, mtime: float | None = None,
                     offset: int = 0, key: str = "", total: int | None = None,
                     beside_if_taken: bool = False, algorithm: str = SHA256,
                     writer: str = "", make_parents: bool = True,
                     hash_inline: bool = False) -> "Upload":
        """Check the target and open the temporary file the upload is written to.

        ``key``: the partial file's key (``partial_key``) of a resumable upload, "" for
        one that is not: an interrupted resumable upload keeps what arrived under it.
        With ``offset``, that partial file is claimed (see ``_claim_partial``) and the
        upload continues at its end; it must hold exactly ``offset`` bytes.
        ``total``: the whole file's size when the body is one piece of a file sent in
        several requests (tus), appended to the partial file from ``offset``.

        ``beside_if_taken`` (a writer that may not read): a taken name goes to the first
        free ``stem (2).ext``... (``numbered``), directories as ``open_dir_beside`` walks.
        ``expected``: the declared digest (None: hashed in ``algorithm``). ``writer``: who
        sends it (writer_tag); once stored, its partial files for the name are superseded.
        ``make_parents`` False: a missing folder above it is ``not_found`` (WebDAV's
        409), not made. ``hash_inline``: hashed as written, whatever its size (a copy,
        written a bounded step at a time by the loop, never waits for the helper)."""
        parts = split_name(name)
        leaf, dirs = parts[-1], parts[:-1]
        in_pieces = total is not None
        created: list[int] = []
        parent = fd = -1
        self._room_for(name, length)
        try:
            if beside_if_taken:
                parent, dirs = self.open_dir_beside(dirs, create=True, created=created)
            else:
                parent = self.open_dir(dirs, create=make_parents, created=created)
            try:
                replaces = self._check_target(parent, leaf, name, overwrite, allow_overwrite)
            except StorageError as exc:
                if not beside_if_taken or exc.code in ("bad_name", "io_error", "server_busy"):
                    raise
                leaf, replaces = self._free_leaf(parent, leaf, name), False
            if offset or in_pieces:
                temp = claim_name(key)
                fd = self._claim_partial(parent, key, offset, name, "/".join(dirs))
            else:
                temp, fd = self._new_temporary(parent, key, name)
            upload = Upload(self, "/".join([*dirs, leaf]), parent, leaf, temp, fd, length,
                            expected, overwrite and allow_overwrite, mtime, dirs, created,
                            offset=offset, key=key, total=total,
                            algorithm=expected.algorithm if expected else algorithm,
                            hash_inline=hash_inline)
        except BaseException:
            if fd >= 0:  # (give the partial file back, or remove what we made)
                os.close(fd)
                if offset or in_pieces:
                    self._unclaim("/".join(dirs), key, parent, offset)
                else:
                    unlink_quietly(temp, parent)
            if parent >= 0:
                os.close(parent)
            self.remove_created(dirs, created)
            raise
        upload.replaces = replaces
        upload.asked_name = name
        upload.writer = writer or writer_of(key)
        return upload

    @staticmethod
    def _new_temporary(parent: int, key: str, name: str) -> tuple[str, int]:
        """A temporary file of our own in ``parent``: (its name, its descriptor). The
        key in a resumable upload's temporary name lets a restarted server turn it into
        a partial file instead of deleting it (sweep_temporary_files)."""
        temp = f"{TEMP_PREFIX}{_RUN_ID}{next(_TEMP_IDS):x}" + (f".{key}" if key else "")
        try:
            return temp, os.open(temp, _O_NEW_FILE, FILE_MODE, dir_fd=parent)
        except OSError as exc:
            raise write_error(exc, name) from None

    def _free_leaf(self, parent: int, leaf: str, name: str) -> str:
        """The first free ``stem (N).ext`` beside a taken ``leaf``."""
        for candidate in itertools.islice(numbered(leaf, directory=False), 1, None):
            if self._free(parent, candidate):
                return candidate
        raise StorageError("exists", f"{name!r} and the names beside it are taken")

    def _room_for(self, name: str, length: int) -> None:
        """Before an upload of ``length`` bytes: refuse one that cannot fit even if every
        partial file went (so a doomed upload evicts nothing), and evict partials, oldest
        first, for one that fits only without them."""
        if length < PARTIAL_PREFLIGHT_FROM:
            return  # (small: the write itself finds out, and makes room then)
        free = self.free_space()
        if length > free + self.partials.bytes:
            raise StorageError("no_space", f"cannot store {name!r}: {length} bytes do not "
                                           f"fit in the {free} bytes free on the server")
        if length > free:
            self.make_room(length - free)

    def _claim_partial(self, parent: int, key: str, offset: int, name: str,
                       where: str) -> int:
        """Open the partial file ``key`` to go on writing it, renamed to its claim name
        (``claim_name``) meanwhile: one request at a time writes a partial file, and a
        second one finds the claim and is told to wait (``server_busy``) instead of
        finding nothing. The rename never replaces a claim (RENAME_NOREPLACE): a
        partial file made again meanwhile cannot take the place of the one a request
        is writing. The file must hold exactly ``offset`` bytes."""
        partial, claim = PARTIAL_PREFIX + key, claim_name(key)
        try:
            rename_new(partial, claim, src_dir_fd=parent, dst_dir_fd=parent)
        except FileNotFoundError:
            if self._lapsed_claim(parent, key):  # (its writer died: this one goes on)
                return self._claim_partial(parent, key, offset, name, where)
            raise self._not_there(parent, key, name, StorageError(
                "offset_mismatch", f"the server holds no partial upload of {name!r} "
                                   "(resume from 0)")) from None
        except FileExistsError:
            raise StorageError("server_busy", _BEING_WRITTEN) from None
        except OSError as exc:
            raise write_error(exc, name) from None
        try:
            fd = os.open(claim, os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
        except OSError as exc:
            _rename_quietly(claim, partial, parent)
            raise write_error(exc, name) from None
        held = os.fstat(fd).st_size
        if held != offset:
            os.close(fd)
            _rename_quietly(claim, partial, parent)  # keep it for later
            raise StorageError("offset_mismatch", f"the server holds {held} bytes of "
                                                  f"{name!r}, not {offset}")
        self.partials.claim(Partial(where, partial, held, time.time(), writer_of(key)))
        os.lseek(fd, 0, os.SEEK_END)
        return fd

    def _unclaim(self, where: str, key: str, parent: int, size: int) -> None:
        """A claimed partial file of ``size`` bytes that no request writes after all:
        its name back, and kept again as an interrupted upload leaves it."""
        partial = PARTIAL_PREFIX + key
        try:
            os.replace(claim_name(key), partial, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError:
            self.partials.discard(where, partial)  # (gone: its books entry goes too)
        else:
            self.partial_kept(where, partial, size)

    def _lapsed_claim(self, parent: int, key: str) -> bool:
        """Whether the claim of the partial file ``key`` had lapsed and it is a partial
        file again. A request writing it keeps its time fresh (every write), and one
        that stalls is ended by --stall-timeout, which gives the file back: a claim
        untouched for ``claim_lease`` belongs to a server that died (another machine's,
        on a shared root: this server's own claims are given back at its start). The
        rename back is one atomic step: of two servers that find it lapsed, one wins."""
        claim = claim_name(key)
        try:
            st = os.stat(claim, dir_fd=parent, follow_symlinks=False)
        except OSError:
            return False
        if not stat.S_ISREG(st.st_mode) or time.time() - st.st_mtime < self.claim_lease:
            return False
        try:
            rename_new(claim, PARTIAL_PREFIX + key, src_dir_fd=parent, dst_dir_fd=parent)
        except OSError:
            return False  # (another server took it back first, or it went meanwhile)
        return True

    def _not_there(self, parent: int, key: str, name: str, error: StorageError) -> StorageError:
        """What to say of the partial file ``key`` that is not in ``parent``: it is being
        written (its claim is there: "server_busy", wait), else ``error``."""
        if self._lstat(parent, claim_name(key), name) is not None:
            return StorageError("server_busy", _BEING_WRITTEN)
        return error

    def held(self, name: str, key: str, size: int, *, beside_if_taken: bool = False) -> int:
        """The bytes the partial file ``key`` of ``name`` holds. StorageError
        "not_found" if there is none (never made, expired, evicted, or already stored),
        "server_busy" while a request writes it (see ``_claim_partial``)."""
        parent, _ = self._partial_dir(name, beside_if_taken)
        try:
            st = self._lstat(parent, PARTIAL_PREFIX + key, name)
            if st is None and self._lapsed_claim(parent, key):
                st = self._lstat(parent, PARTIAL_PREFIX + key, name)
            if st is None:
                raise self._not_there(parent, key, name, StorageError("not_found",
                                                                      NO_SUCH_UPLOAD))
            if not stat.S_ISREG(st.st_mode) or st.st_size > size:
                raise StorageError("not_found", NO_SUCH_UPLOAD)
            return st.st_size
        finally:
            os.close(parent)

    def _partial_dir(self, name: str, beside_if_taken: bool) -> tuple[int, str]:
        """The directory where the partial files of ``name`` are (a descriptor, and
        where it is below the root); StorageError "not_found" when it does not exist."""
        dirs = split_name(name)[:-1]
        try:
            if beside_if_taken:
                fd, dirs = self.open_dir_beside(dirs, create=False)
                return fd, "/".join(dirs)
            return self.open_dir(dirs), "/".join(dirs)
        except StorageError as exc:
            if exc.code in ("not_found", "not_a_directory", "forbidden"):
                raise StorageError("not_found", NO_SUCH_UPLOAD) from None
            raise

    def check_room(self, name: str, size: int, *, overwrite: bool, allow_overwrite: bool,
                   beside_if_taken: bool) -> None:
        """Would an upload of ``size`` bytes to ``name`` be taken? (StorageError if not:
        a bad name, no room, a name that exists and may not be replaced.) Asked before
        an upload in pieces begins; its last piece is checked again for real. A writer
        that may not read (``beside_if_taken``) is refused nothing a name on disk
        decides: its upload goes beside whatever is there."""
        parts = split_name(name)
        self._room_for(name, size)
        if beside_if_taken:
            return
        try:
            parent = self.open_dir(parts[:-1])
        except StorageError as exc:
            if exc.code == "not_found":
                return  # (its directories will be made)
            raise
        try:
            self._check_target(parent, parts[-1], name, overwrite, allow_overwrite)
        finally:
            os.close(parent)

    def create_partial(self, name: str, key: str, *, beside_if_taken: bool = False) -> None:
        """An empty partial file for ``name``: an upload sent in pieces (tus) that has
        begun and holds nothing yet. Its directories are made as for an upload.
        StorageError "no_space" when its writer, or the server, keeps as many partial
        files as it may (partials.py)."""
        why_not = self.partials.full_for(writer_of(key))
        if why_not:
            raise StorageError("no_space", why_not)
        dirs = split_name(name)[:-1]
        if beside_if_taken:
            parent, dirs = self.open_dir_beside(dirs, create=True)
        else:
            parent = self.open_dir(dirs, create=True)
        try:
            fd = os.open(PARTIAL_PREFIX + key, os.O_WRONLY | os.O_CREAT | os.O_EXCL
                         | os.O_NOFOLLOW | os.O_CLOEXEC, FILE_MODE, dir_fd=parent)
            os.close(fd)
        except FileExistsError:
            pass  # made already (a repeated request): the same upload
        except OSError as exc:
            raise write_error(exc, name) from None
        finally:
            os.close(parent)
        self.partial_kept("/".join(dirs), PARTIAL_PREFIX + key, 0)

    def drop_partial(self, name: str, key: str, *, beside_if_taken: bool = False) -> None:
        """Remove the partial file ``key`` of ``name`` (an upload given up).
        StorageError "not_found" if there is none, "server_busy" while a request
        writes it."""
        parent, where = self._partial_dir(name, beside_if_taken)
        try:
            os.unlink(PARTIAL_PREFIX + key, dir_fd=parent)
        except FileNotFoundError:
            raise self._not_there(parent, key, name, StorageError(
                "not_found", NO_SUCH_UPLOAD)) from None
        except OSError as exc:
            raise write_error(exc, name) from None
        finally:
            os.close(parent)
        self.partials.discard(where, PARTIAL_PREFIX + key)


class Upload:
    """One file being received: a temporary file, its running hash, and its commit."""

    __slots__ = ("root", "name", "parent", "leaf", "temp", "fd", "length", "expected",
                 "overwrite", "mtime", "dirs", "created", "received", "hasher", "done",
                 "offset", "key", "hash_job", "replaces", "asked_name", "total",
                 "piece_hasher", "in_pieces", "algorithm", "writer")

    def __init__(self, root: Uploads, name: str, parent: int, leaf: str, temp: str, fd: int,
                 length: int, expected: Digest | None, overwrite: bool, mtime: float | None,
                 dirs: list[str], created: list[int], *, offset: int = 0,
                 key: str = "", total: int | None = None, algorithm: str = SHA256,
                 hash_inline: bool = False) -> None:
        self.root, self.name, self.parent, self.leaf = root, name, parent, leaf
        self.temp, self.fd, self.length, self.expected = temp, fd, length, expected
        self.overwrite, self.mtime = overwrite, mtime
        self.dirs, self.created = dirs, created  # the directories, and those we made
        self.offset = offset  # bytes already held from an interrupted attempt
        self.key = key  # partial_key when the upload is resumable, else ""
        self.received = 0  # body bytes of this attempt
        self.algorithm = algorithm  # what the file is hashed in (the expected digest's)
        self.hasher: Any = new_hasher(algorithm)
        self.done = False
        self.replaces = False  # an existing file will be replaced
        self.asked_name = name  # the name the client asked for (a drop box may differ)
        self.writer = ""  # who sends it (partials.writer_tag)
        self.total = offset + length if total is None else total  # the whole file
        self.in_pieces = total is not None  # sent in several requests (tus)
        self.piece_hasher: Any = None  # a checksum of this request's bytes alone (tus)
        # Big files (and resumed ones, whose earlier bytes must be read back anyway) are
        # hashed beside the loop by the helper thread; small ones inline, in write(). A
        # piece that does not end the file is not hashed at all: the piece that does
        # reads the whole file back once.
        self.hash_job: HashJob | None = None
        if not self.completes:
            self.hasher = None
        elif not hash_inline and (offset or self.size >= ASYNC_HASH_FROM):
            try:
                self.hash_job = HashJob(fd, algorithm, already=offset)
            except OSError as exc:  # (it needs a descriptor of its own)
                raise write_error(exc, name) from None

    @property
    def size(self) -> int:
        """The whole file's size."""
        return self.total

    def body_ended(self) -> None:
        """A body whose length was not said (HTTP's chunked) has ended: its length, and
        so the whole file's size, are what arrived."""
        self.length = self.received
        if not self.in_pieces:
            self.total = self.offset + self.received

    @property
    def claimed(self) -> bool:
        """It goes on writing a partial file (claimed: see Uploads._claim_partial)."""
        return bool(self.offset) or self.in_pieces

    @property
    def completes(self) -> bool:
        """This request's body ends the file (always, but for a tus piece)."""
        return self.offset + self.length == self.total

    def park(self) -> int:
        """A piece of a file sent in several requests arrived whole, and the file is not
        complete yet: keep what is there as the partial file (even if empty) until the
        next piece. Returns the bytes held."""
        held = self.offset + self.received
        self.abort(interrupted=True, keep_empty=True)
        return held

    def rewind(self) -> None:
        """Forget this request's bytes (its checksum did not match): the file is back to
        the ``offset`` bytes it held before."""
        try:
            os.ftruncate(self.fd, self.offset)
            os.lseek(self.fd, self.offset, os.SEEK_SET)
        except OSError as exc:
            raise write_error(exc, self.name) from None
        self.received = 0

    def write(self, data: memoryview) -> None:
        """Append body bytes to the temporary file, hashing them on the way."""
        job = self.hash_job
        if job is None and self.hasher is not None:
            self.hasher.update(data)
        if self.piece_hasher is not None:
            self.piece_hasher.update(data)
        while data:
            try:
                written = os.write(self.fd, data)
            except OSError as exc:
                if exc.errno in _NO_SPACE and self.root.make_room(len(data)):
                    continue  # partial files made way for this upload: try again
                raise write_error(exc, self.name) from None
            data = data[written:]
            self.received += written
        if job is not None:
            job.written(self.offset + self.received)

    def copy_in(self, src_fd: int, offset: int, count: int) -> int:
        """Append up to ``count`` bytes of the file ``src_fd`` from ``offset``, copied by
        the kernel (copy_file_range: no byte passes through Python, and a file system
        that can shares the blocks), without hashing them: for a copy whose digest is
        the source's. Returns the bytes copied (0: the source ended)."""
        while True:
            try:
                copied = os.copy_file_range(src_fd, self.fd, count, offset)
            except OSError as exc:
                if exc.errno in _NO_SPACE and self.root.make_room(count):
                    continue  # partial files made way for this copy: try again
                if exc.errno not in _NO_KERNEL_COPY:
                    raise write_error(exc, self.name) from None
                try:  # (a file system or kernel without it: through Python, then)
                    data = os.pread(src_fd, count, offset)
                except OSError as exc:
                    raise write_error(exc, self.name, "read the source of") from None
                self.write(memoryview(data))
                return len(data)
            self.received += copied
            return copied

    def splice_target(self) -> tuple[int, int] | None:
        """(fd, offset) where body bytes may be spliced straight from the socket, when the
        helper hashes this upload (the bytes never pass through Python); else None."""
        if self.hash_job is None or self.fd < 0:
            return None
        return self.fd, self.offset + self.received

    def spliced(self, count: int) -> None:
        """``count`` bytes were spliced in at splice_target()."""
        assert self.hash_job is not None  # (only then is there a splice target)
        self.received += count
        self.hash_job.written(self.offset + self.received)

    def finish_hash(self, on_done: Callable[[str | None], None]) -> bool:
        """All bytes are written. With a helper hashing, start its last step and return
        True (``on_done(digest)`` follows, from the helper thread); else return False."""
        if self.hash_job is None:
            return False
        self.hash_job.finish(self.size, on_done)
        return True

    def commit(self, computed: str | None = None) -> Digest:
        """Verify, make durable and publish the file; return its digest.

        ``computed``: the hex digest the helper computed (see finish_hash); else the
        inline hash. It is checked against ``expected`` (None: nothing to check, HTTP).
        Order matters: fsync the data before the rename, so a crash can never publish
        a name whose blocks are not on disk; fsync the directory after it, so the
        name itself survives a crash before we say "done".
        """
        if computed is None:
            if self.hash_job is not None:
                self.abort()
                raise StorageError("io_error", f"{self.name!r}: the file could not be read "
                                               "back to verify it")
            computed = self.hasher.hexdigest()
        digest = Digest(self.algorithm, computed)
        try:
            if self.expected is not None and digest != self.expected:
                raise StorageError("checksum_mismatch", f"{self.name!r}: received data has "
                                   f"{digest}, the sender declared {self.expected.hex}")
            try:
                os.fsync(self.fd)
                if self.mtime is not None:
                    os.utime(self.fd, (self.mtime, self.mtime))
            except OSError as exc:
                raise write_error(exc, self.name) from None
            self.root.hashes.remember(self.fd, os.fstat(self.fd), digest)
            self._publish()
            self._sync_directories()
        except BaseException:
            self.abort()
            raise
        self.root.forget_partials(self.asked_name, self.writer, self.dirs, self.parent)
        self._release()
        return digest

    def _publish(self) -> None:
        try:
            publish(self.temp, self.leaf, overwrite=self.overwrite, dir_fd=self.parent)
        except FileExistsError:
            raise StorageError("exists", f"{self.name!r} was created by someone else "
                                         "during the upload") from None
        except IsADirectoryError:
            raise StorageError("is_directory", f"{self.name!r} is a directory") from None
        except OSError as exc:
            raise write_error(exc, self.name) from None
        self.temp = ""

    def _sync_directories(self) -> None:
        try:
            os.fsync(self.parent)
            self.root.sync_created(self.dirs, self.created)  # new directories' entries
        except OSError as exc:
            raise write_error(exc, self.name) from None

    def fail(self) -> None:
        """Writing the body failed (disk full, an I/O error): nothing of this request's
        bytes is kept; a file sent in pieces keeps the pieces it held before it."""
        if self.in_pieces and not self.done:
            try:
                self.rewind()
                self.park()
                return
            except StorageError:
                pass  # (it cannot even be cut back: it goes)
        self.abort()

    def abort(self, *, interrupted: bool = False, keep_empty: bool = False) -> int:
        """Stop the upload; return the bytes kept for a resume (0: none).

        Only a real interruption (``interrupted``: the connection broke, timed out, or
        the server stopped) of a resumable upload keeps what arrived, as a hidden
        partial file (see partials.py). A failure or a refusal deletes the temporary
        file and the directories the upload made: nothing hidden is left behind."""
        if self.done:
            return 0
        held = self.offset + self.received
        keep = interrupted and bool(self.key) and (held > 0 or keep_empty or self.in_pieces)
        if self.hash_job is not None:
            self.hash_job.cancel()
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        kept = 0
        if self.temp:
            try:
                if keep:
                    os.replace(self.temp, PARTIAL_PREFIX + self.key, src_dir_fd=self.parent,
                               dst_dir_fd=self.parent)
                    kept = self.root.partial_kept("/".join(self.dirs), PARTIAL_PREFIX + self.key,
                                                  held)
                else:
                    os.unlink(self.temp, dir_fd=self.parent)
            except OSError:
                pass  # already gone; nothing else to do
            self.temp = ""
        if not keep and self.claimed:  # its books entry goes too, whatever became of it
            self.root.partials.discard("/".join(self.dirs), PARTIAL_PREFIX + self.key)
        self._release()
        if not keep:
            self.root.remove_created(self.dirs, self.created)
        return kept

    def _release(self) -> None:
        self.done = True
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1
        os.close(self.parent)


def _rename_quietly(src: str, dst: str, parent: int) -> None:
    try:
        os.replace(src, dst, src_dir_fd=parent, dst_dir_fd=parent)
    except OSError:
        pass  # already gone
