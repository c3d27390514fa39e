"""Zip and tar archives written as a stream, a piece at a time: the folder downloads
of the HTTP side (``GET /DIR/?download=zip`` or ``=tar``).

Nothing here does I/O: a writer hands out the bytes that go before a member's data,
after it, and at the end of the archive; the caller (``http_folders.py``) reads each file in
bounded steps between them and sends everything as it goes. So an archive of any size
needs no temporary file, a few hundred bytes of memory per member, and no long step
in the loop.

* **zip**: members are stored (method 0: files are sent as they are, which is what a
  transfer wants, and what lets every byte be counted without compressing first). A
  member's CRC-32 and sizes are only known once its data has gone, so they follow it
  in a data descriptor (flag bit 3); the central directory at the end is kept packed
  with zlib until then (a few bytes per member). ZIP64 records are written wherever a
  size or an offset does not fit 32 bits, so members and archives over 4 GiB work.
  Names are UTF-8 (flag bit 11).
* **tar**: POSIX pax format from the standard library's ``tarfile.TarInfo`` headers
  (long names and sizes over 8 GiB included); sizes come first, so a member is sent
  with the size the file had when it was opened (see ``padding``).
"""

from __future__ import annotations

import struct
import tarfile
import time
import zlib
from typing import Iterator

ZIP32_MAX = 0xFFFFFFFF
_LOCAL = struct.Struct("<IHHHHHIIIHH")  # local file header, 30 bytes
_DESCRIPTOR32 = struct.Struct("<IIII")
_DESCRIPTOR64 = struct.Struct("<IIQQ")
_CENTRAL = struct.Struct("<IHHHHHHIIIHHHHHII")  # central directory header, 46 bytes
_END = struct.Struct("<IHHHHIIH")
_END64 = struct.Struct("<IQHHIIQQQQ")
_LOCATOR64 = struct.Struct("<IIQI")
_UTF8_AND_DESCRIPTOR = 0x0808  # general purpose flags: bit 3 (descriptor), bit 11 (UTF-8)
_VERSION = 45  # 4.5: ZIP64
_MADE_BY = (3 << 8) | _VERSION  # made on Unix: the external attributes are Unix modes
_PACK_BLOCK = 64 * 1024  # central directory records packed together


def crc32(crc: int, data: bytes | memoryview) -> int:
    return zlib.crc32(data, crc)


def _dos_time(mtime: float) -> tuple[int, int]:
    t = time.localtime(max(mtime, 315532800))  # (zip times start in 1980)
    return ((t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2),
            ((t.tm_year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday)


class ZipStream:
    """The bytes of a stored zip archive, member by member."""

    def __init__(self) -> None:
        self.offset = 0  # bytes handed out so far
        # The central directory, built as members end (46 bytes and the name per
        # member), is kept until the archive's end: packed with zlib a block at a time
        # (its records are alike: a tenth of the size or less), so that a client that
        # stops reading halfway through a folder of 40,000 files costs ~0.3 MB, not 2.4.
        self._central = bytearray()  # records not packed yet
        self._packed: list[bytes] = []
        self._packer = zlib.compressobj(1)
        self._central_size = 0
        self._count = 0
        self._current: tuple[bytes, int, int, int] | None = None  # name, offset, time, date

    def member_start(self, name: str, mtime: float, directory: bool = False) -> bytes:
        """The local header of a member; its data follows (none for a directory)."""
        raw = (name + ("/" if directory else "")).encode("utf-8")
        dostime, dosdate = _dos_time(mtime)
        self._current = (raw, self.offset, dostime, dosdate)
        header = _LOCAL.pack(0x04034B50, _VERSION, _UTF8_AND_DESCRIPTOR, 0, dostime,
                             dosdate, 0, 0, 0, len(raw), 0) + raw
        self.offset += len(header)
        return header

    def member_end(self, crc: int, size: int, data_bytes: int) -> bytes:
        """The data descriptor after ``data_bytes`` of data; remembers the member for
        the central directory."""
        assert self._current is not None
        raw, start, dostime, dosdate = self._current
        self._current = None
        self.offset += data_bytes
        big = size > ZIP32_MAX or start > ZIP32_MAX
        if big:
            descriptor = _DESCRIPTOR64.pack(0x08074B50, crc, size, size)
        else:
            descriptor = _DESCRIPTOR32.pack(0x08074B50, crc, size, size)
        self.offset += len(descriptor)
        extra = b""
        if big:  # ZIP64 extra field: the real sizes and offset; 0xFFFFFFFF in their place
            extra = struct.pack("<HHQQQ", 0x0001, 24, size, size, start)
        small = min(size, ZIP32_MAX) if not big else ZIP32_MAX
        self._count += 1
        record = (_CENTRAL.pack(
            0x02014B50, _MADE_BY, _VERSION, _UTF8_AND_DESCRIPTOR, 0, dostime, dosdate, crc,
            small, small, len(raw), len(extra), 0, 0, 0,
            0o40755 << 16 if raw.endswith(b"/") else 0o100644 << 16,
            ZIP32_MAX if big else start) + raw + extra)
        self._central += record
        self._central_size += len(record)
        if len(self._central) >= _PACK_BLOCK:
            self._packed.append(self._packer.compress(self._central))
            self._central.clear()
        return descriptor

    def finish(self) -> bytes:
        """The central directory and the end records."""
        return b"".join(self.finish_in_pieces(1 << 30))

    def finish_in_pieces(self, size: int) -> Iterator[bytes]:
        """The central directory, unpacked ``size`` bytes at a time, then the end
        records."""
        start, length, count = self.offset, self._central_size, self._count
        packed = [*self._packed, self._packer.compress(self._central), self._packer.flush()]
        self._packed, self._central = [], bytearray()
        end = b""
        if count > 0xFFFF or start > ZIP32_MAX or length > ZIP32_MAX:
            end64_at = start + length
            end = (_END64.pack(0x06064B50, 44, _VERSION, _VERSION, 0, 0, count, count,
                               length, start)
                   + _LOCATOR64.pack(0x07064B50, 0, end64_at, 1))
        end += _END.pack(0x06054B50, 0, 0, min(count, 0xFFFF), min(count, 0xFFFF),
                         min(length, ZIP32_MAX), min(start, ZIP32_MAX), 0)
        self.offset += length + len(end)
        unpacker = zlib.decompressobj()
        pending = bytearray()
        for block in packed:
            pending += unpacker.decompress(block)
            while len(pending) >= size:
                yield bytes(pending[:size])
                del pending[:size]
        pending += unpacker.flush() + end
        while pending:
            yield bytes(pending[:size])
            del pending[:size]


class TarStream:
    """The bytes of a pax tar archive, member by member."""

    def member_start(self, name: str, mtime: float, size: int = 0,
                     directory: bool = False) -> bytes:
        info = tarfile.TarInfo(name + ("/" if directory else ""))
        info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
        info.size = 0 if directory else size
        info.mtime = int(mtime)
        info.mode = 0o755 if directory else 0o644
        return info.tobuf(format=tarfile.PAX_FORMAT, encoding="utf-8", errors="strict")

    @staticmethod
    def padding(size: int) -> bytes:
        """The zeros that round a member's data up to a 512-byte block."""
        return b"\0" * (-size % tarfile.BLOCKSIZE)

    @staticmethod
    def finish() -> bytes:
        return b"\0" * (2 * tarfile.BLOCKSIZE)

    def finish_in_pieces(self, size: int) -> Iterator[bytes]:
        yield self.finish()
