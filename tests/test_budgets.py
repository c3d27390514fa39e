"""Budgets: no request holds the loop, no connection holds the descriptors, no failure
holds the disk (docs/OPERATIONS.md, "Limits"; the loop's longest step is measured by
scripts/loop_stall_check.py)."""

from __future__ import annotations

import gc
import socket

import pytest

from muxserver import protocol
from muxserver.channel import Channel

from .conftest import FrameReader

pytestmark = pytest.mark.timeout(120)


def live_channels() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if type(obj) is Channel)


def test_closed_connections_leave_no_timers_and_no_channels_behind(server, log_watcher):
    with server.connect() as idle:  # one idle client keeps its 300 s timer at the top
        idle.sendall(protocol.encode_list(1, ""))
        FrameReader(idle).frame()
        for i in range(3000):
            with socket.create_connection((server.host, server.port), timeout=20) as sock:
                sock.sendall(protocol.encode_stat(1, "x"))
                FrameReader(sock).frame()
        log_watcher.wait_for("closed", count=3000, timeout=60)
        assert live_channels() < 20
        assert server.server.loop.timer_count < 200
