"""Copies (WebDAV's COPY): a file copied as an upload is stored, a bounded step at a time.

A copy goes where every upload goes (uploads.py): a temporary file beside its name,
hashed as written and checked against the source's digest when that is remembered (a
source changed during the copy fails it, nothing is published), flushed, renamed onto
its name, the folder flushed. Its modification time and dead properties come with it
(properties.py), as ``cp -p`` keeps a time. Each step reads and writes at most
``COPY_STEP`` bytes, so a big file is copied between other clients' requests.
"""

from __future__ import annotations

import os
from typing import Iterator

from .errors import StorageError
from .properties import Properties, copy_properties
from .uploads import Uploads

#: Bytes copied per step (a millisecond or two of the loop's time).
COPY_STEP = 1024 * 1024


class Copies(Uploads, Properties):
    """Copying files and folders' own properties below the root."""

    def copy_file_in_steps(self, src: str, dst: str, *, overwrite: bool,
                           allow_overwrite: bool, writer: str = "",
                           step: int = COPY_STEP) -> Iterator[int]:
        """Copy the file ``src`` onto ``dst`` (its folder must exist), yielding the
        bytes copied after each step; an existing ``dst`` is replaced only with
        ``overwrite`` and ``allow_overwrite``, atomically."""
        opened = self.open_file(src)
        try:
            upload = self.begin_upload(dst, opened.size, opened.digest, overwrite=overwrite,
                                       allow_overwrite=allow_overwrite, mtime=opened.mtime,
                                       writer=writer, make_parents=False, hash_inline=True)
            try:
                copied = 0
                while copied < opened.size:
                    try:
                        data = os.pread(opened.fd, min(step, opened.size - copied), copied)
                    except OSError as exc:
                        raise StorageError("io_error", f"cannot read {src!r}: "
                                                       f"{exc.strerror}") from None
                    if not data:
                        raise StorageError("io_error", f"{src!r} changed while being copied")
                    upload.write(memoryview(data))
                    copied += len(data)
                    yield copied
                copy_properties(opened.fd, upload.fd, dst)
                upload.commit(None)
            finally:
                upload.abort()  # (nothing, once committed: else the temporary file goes)
        finally:
            opened.close()
        yield opened.size

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
