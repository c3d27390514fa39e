"""The send queue: reply bytes waiting for a socket that is not ready for them.

A reply is made of memory chunks (frame headers, small files, listing pages) and
file regions (the body of a large download, sent later by ``os.sendfile`` straight
from the page cache). The queue keeps them in order with running byte counts, so
asking "how much is pending?" never walks the queue (Tornado's rule), and the loop
can apply backpressure on an exact figure.

The queue does no I/O: ``channel.py`` asks it what to send and tells it what went.
The receive side needs no class of its own: the loop reads into one reused scratch
buffer and the protocol decoder keeps the few bytes it must (see ``protocol.py``).
"""

from __future__ import annotations

import os
from typing import Callable, cast


class FileRegion:
    """``count`` bytes of an open file from ``offset``, to be sent with sendfile."""

    __slots__ = ("fd", "offset", "remaining", "on_done")

    def __init__(self, fd: int, offset: int, count: int,
                 on_done: Callable[[], None] | None = None) -> None:
        self.fd = fd
        self.offset = offset
        self.remaining = count
        self.on_done = on_done  # called once the last byte went to the socket

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


class SendQueue:
    """Memory chunks and file regions in send order, with running totals.

    A list, not a deque: every connection has one, mostly empty, and an empty deque
    takes about 760 bytes against a list's 56 (ten thousand idle clients: 7 MiB).
    Sent chunks leave the front in one ``del`` per send, not one by one."""

    __slots__ = ("_items", "memory_bytes", "file_bytes", "files")

    def __init__(self) -> None:
        self._items: list[memoryview | FileRegion] = []
        self.memory_bytes = 0  # counts toward the per-connection output cap
        self.file_bytes = 0  # bytes still to come from files (not held in memory)
        self.files = 0  # file regions queued: each holds an open descriptor

    def __bool__(self) -> bool:
        return bool(self._items)

    @property
    def total(self) -> int:
        return self.memory_bytes + self.file_bytes

    def append_bytes(self, data: bytes | bytearray | memoryview) -> None:
        if data:
            self._items.append(memoryview(data))
            self.memory_bytes += len(data)

    def append_file(self, region: FileRegion) -> None:
        if region.remaining:
            self._items.append(region)
            self.file_bytes += region.remaining
            self.files += 1
        else:
            self._finish(region)

    def head_region(self) -> FileRegion | None:
        """The file region at the front, or None if memory chunks come first."""
        head = self._items[0]
        return head if isinstance(head, FileRegion) else None

    def leading_chunks(self, max_count: int) -> list[memoryview]:
        """The memory chunks at the front, up to the first file region (for sendmsg)."""
        chunks: list[memoryview] = []
        for item in self._items:
            if isinstance(item, FileRegion) or len(chunks) == max_count:
                break
            chunks.append(item)
        return chunks

    def consume_memory(self, sent: int) -> None:
        """Drop ``sent`` bytes from the leading memory chunks."""
        self.memory_bytes -= sent
        items = self._items
        done = 0  # chunks sent whole
        while sent:
            head = cast(memoryview, items[done])  # (memory chunks lead: leading_chunks)
            if len(head) <= sent:
                sent -= len(head)
                done += 1
            else:
                items[done] = head[sent:]
                sent = 0
        del items[:done]

    def advance_region(self, region: FileRegion, sent: int) -> None:
        """Account ``sent`` bytes of the head region; finish it when it is done."""
        region.offset += sent
        region.remaining -= sent
        self.file_bytes -= sent
        if not region.remaining:
            del self._items[0]
            self.files -= 1
            self._finish(region)

    def clear(self) -> None:
        """Forget everything (the connection is closing); close the open files."""
        for item in self._items:
            if isinstance(item, FileRegion):
                item.close()
                item.on_done = None  # (never called now; see _finish)
        self._items.clear()
        self.memory_bytes = self.file_bytes = self.files = 0

    @staticmethod
    def _finish(region: FileRegion) -> None:
        region.close()
        # Called once, and let go of before it runs: the callback usually holds what
        # holds the region (a get's transfer record), a cycle that only the cyclic
        # collector would free. Freed at once, it never reaches the collector's
        # older generations, whose scans stop the whole loop (docs/PERFORMANCE.md).
        on_done, region.on_done = region.on_done, None
        if on_done is not None:
            on_done()
