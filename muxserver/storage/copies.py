"""Copies (WebDAV's COPY): a file copied as an upload is stored, a bounded step at a time.

A copy goes where every upload goes (uploads.py): a temporary file beside its name,
flushed, renamed onto its name, the folder flushed. A source whose digest is remembered
is copied by the kernel (copy_file_range), and its digest is the copy's; another is
read and hashed as it is written, as an upload is. Either way a source that changed
meanwhile (its inode, size or time) fails the copy, and nothing is published. Its
modification time and dead properties come with it (properties.py), as ``cp -p`` keeps
a time. Each step copies a bounded number of bytes, so a big file is copied between
other clients' requests.
"""

from __future__ import annotations

import os
from typing import Iterator

from mypy_extensions import mypyc_attr

from .errors import StorageError
from .properties import Properties, copy_properties
from .uploads import Uploads

#: Bytes copied per step when they pass through Python to be hashed (a millisecond or
#: two of the loop's time), and how many times that the kernel copies in a step.
COPY_STEP = 1024 * 1024
KERNEL_STEPS = 8


def _changed(fd: int, before: os.stat_result) -> bool:
    """The file changed since ``before`` was taken (its digest no longer says it)."""
    now = os.fstat(fd)
    return (now.st_size, now.st_mtime_ns, now.st_ino) != (before.st_size,
                                                          before.st_mtime_ns, before.st_ino)


@mypyc_attr(native_class=False)
class Copies(Uploads, Properties):
    """Copying files and folders' own properties below the root."""

    def copy_file_in_steps(self, src: str, dst: str, *, overwrite: bool,
                           allow_overwrite: bool, writer: str = "",
                           step: int = COPY_STEP) -> Iterator[int]:
        """Copy the file ``src`` onto ``dst`` (its folder must exist), yielding the
        bytes copied after each step; an existing ``dst`` is replaced only with
        ``overwrite`` and ``allow_overwrite``, atomically."""
        opened = self.open_file(src)
        known = opened.digest  # (the source's, when remembered: the copy's too)
        try:
            upload = self.begin_upload(dst, opened.size, None, overwrite=overwrite,
                                       allow_overwrite=allow_overwrite, mtime=opened.mtime,
                                       writer=writer, make_parents=False, hash_inline=True)
            try:
                copied = 0
                while copied < opened.size:
                    count = min(step, opened.size - copied)
                    if known is not None:  # the kernel copies, nothing is hashed
                        done = upload.copy_in(opened.fd, copied, count * KERNEL_STEPS)
                    else:  # read and hashed as written, as an upload is
                        done = len(data := self._read(opened.fd, copied, count, src))
                        upload.write(memoryview(data))
                    if not done:
                        raise StorageError("io_error", f"{src!r} changed while being copied")
                    copied += done
                    yield copied
                if _changed(opened.fd, opened.st):  # (a mix of old and new bytes)
                    raise StorageError("io_error", f"{src!r} changed while being copied")
                copy_properties(opened.fd, upload.fd, dst)
                upload.commit(known.hex if known is not None else None)
            finally:
                upload.abort()  # (nothing, once committed: else the temporary file goes)
        finally:
            opened.close()
        yield opened.size

    @staticmethod
    def _read(fd: int, offset: int, count: int, src: str) -> bytes:
        try:
            return os.pread(fd, count, offset)
        except OSError as exc:
            raise StorageError("io_error", f"cannot read {src!r}: {exc.strerror}") from None

    def copy_folder_properties(self, src: str, dst: str) -> None:
        """The dead properties of the folder ``src`` given to the folder ``dst``."""
        src_fd, _ = self._open_entry(src)
        try:
            dst_fd, _ = self._open_entry(dst)
            try:
                copy_properties(src_fd, dst_fd, dst)
            finally:
                os.close(dst_fd)
        finally:
            os.close(src_fd)
