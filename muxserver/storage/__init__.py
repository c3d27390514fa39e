"""The served root: which names are allowed, and how files are read, listed and stored.

Every storage rule of muxserver lives in this package, so it can be read (and audited)
in one place, a job per module:

* ``root.py``: names walked one component at a time from the root's descriptor
  (``O_NOFOLLOW``: no ``..``, no symbolic link leads out), files opened and read,
  directories listed in pages;
* ``directories.py``: mkdir, rm (a tree in bounded steps), mv (one atomic rename);
* ``uploads.py``: a temporary file per upload, hashed, checked, flushed and renamed
  onto its name atomically, the directory flushed: only then is it done;
* ``copies.py``: a file copied as an upload is stored, a bounded step at a time;
* ``properties.py``: WebDAV's dead properties, kept in an extended attribute;
* ``partials.py``: what interrupted resumable uploads leave, kept within a budget of
  bytes and a count, expired, evicted, swept at start;
* ``errors.py``: one exception with a stable code, and what each OS error means.

Storage calls are ordinary blocking file-system calls, made from the event loop like
pyftpdlib does; each one is short (no call here reads or writes a whole file). Nothing
here knows about sockets or frames.
"""

from __future__ import annotations

from mypy_extensions import mypyc_attr

from .errors import StorageError, split_name, write_error
from .partials import (
    PARTIAL_PREFIX,
    TEMP_PREFIX,
    Partial,
    PartialFiles,
    claim_name,
    native_identity,
    partial_key,
    writer_of,
    writer_tag,
)
from .root import Entry, LeftOut, OpenFile
from .copies import Copies
from .uploads import NO_SUCH_UPLOAD, Upload, Uploads

__all__ = ["Entry", "LeftOut", "NO_SUCH_UPLOAD", "OpenFile", "PARTIAL_PREFIX", "Partial", "PartialFiles",
           "Root", "StorageError", "TEMP_PREFIX", "Upload", "claim_name", "native_identity",
           "partial_key", "split_name", "write_error", "writer_of", "writer_tag"]


@mypyc_attr(native_class=False)
class Root(Copies):
    """The served directory: walking and reading (root.py), directories
    (directories.py), partial files (partials.py), uploads (uploads.py), copies
    (copies.py) and properties (properties.py)."""
