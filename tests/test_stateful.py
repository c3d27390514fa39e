"""A Hypothesis state machine against a live server, checked against a dict model.

Steps: put (with or without overwrite), get, list, and a client killed in the middle
of an upload (a FIN or an RST after part of the body). After every step the server's
recursive listing must equal the model, nothing may appear outside the root, and no
temporary file may be visible. At the end the server is stopped and not a single
temporary file may remain on disk.
"""

from __future__ import annotations

import shutil
import socket
import struct
import tempfile
import time
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from muxserver import protocol
from muxserver.client import Client, GetFile, PutFile

from .conftest import sha256, start_thread_server, stop_thread_server

NAMES = st.sampled_from(["a", "b", "b/c", "b/d", "b/e/f", "g.txt", "e"])
CONTENTS = st.binary(max_size=3000) | st.sampled_from([b"", b"x" * 70_000])


class FileServerModel(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.base = Path(tempfile.mkdtemp(prefix="muxserver-model-"))
        self.root = self.base / "root"
        self.root.mkdir()
        self.src = self.base / "src"
        self.src.mkdir()
        self.running, self.thread = start_thread_server(self.root, allow_overwrite=True)
        self.client = Client(self.running.host, self.running.port)
        self.model: dict[str, bytes] = {}
        # An interrupted resumable upload keeps its (hidden) partial file, and with it
        # the directories it made: those names may now be directories.
        self.maybe_dirs: set[str] = set()
        self.counter = 0

    # -- what the model expects of a put

    def expected_error(self, name: str, overwrite: bool) -> str | None:
        parts = name.split("/")
        for i in range(1, len(parts)):
            if "/".join(parts[:i]) in self.model:
                return "not_a_directory"  # a parent is a file
        if any(other.startswith(name + "/") for other in self.model):
            return "is_directory"
        if name in self.model and not overwrite:
            return "exists"
        return None

    # -- rules

    @rule(name=NAMES, data=CONTENTS, overwrite=st.booleans())
    def put(self, name: str, data: bytes, overwrite: bool) -> None:
        self.counter += 1
        local = self.src / f"f{self.counter}"
        local.write_bytes(data)
        result = self.client.run([PutFile(local, name, overwrite=overwrite)])[0]
        expected = self.expected_error(name, overwrite)
        if name in self.maybe_dirs and result.code == "is_directory":
            return  # a directory left by an interrupted resumable upload: allowed
        if expected is None:
            assert result.ok, result.message
            self.model[name] = data
        else:
            assert result.code == expected, (name, result.code, result.message)

    @rule(name=NAMES)
    def get(self, name: str) -> None:
        self.counter += 1
        dest = self.src / f"g{self.counter}"
        result = self.client.run([GetFile(name, dest)])[0]
        if name in self.model:
            assert result.ok, result.message
            assert dest.read_bytes() == self.model[name]
        else:
            assert not result.ok
            assert result.code in ("not_found", "is_directory", "not_a_directory")
            assert not dest.exists() and not Path(str(dest) + ".part").exists()

    @rule(name=NAMES, data=st.binary(min_size=10, max_size=5000), cut=st.floats(0, 0.99),
          reset=st.booleans(), resumable=st.booleans())
    def client_killed_mid_upload(self, name: str, data: bytes, cut: float, reset: bool,
                                 resumable: bool) -> None:
        sock = socket.create_connection((self.running.host, self.running.port))
        sock.sendall(protocol.encode_put(1, name, len(data), sha256(data), overwrite=True,
                                         resumable=resumable) + data[:int(len(data) * cut)])
        if reset:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        peer = f"127.0.0.1:{sock.getsockname()[1]}"
        sock.close()  # the model does not change: the name keeps its old content
        self.wait_until_closed(peer)
        if resumable:
            parts = name.split("/")
            self.maybe_dirs.update("/".join(parts[:i]) for i in range(1, len(parts)))

    def wait_until_closed(self, peer: str) -> None:
        """Until the server has seen this connection end and undone its upload (the
        directories it made for it included): on a busy machine the next request, on
        another connection, can otherwise be served first."""
        server, deadline = self.running.server, time.monotonic() + 30
        while any(channel.peer == peer for channel in list(server.channels.values())):
            assert time.monotonic() < deadline, f"the server never closed {peer}"
            time.sleep(0.005)

    @rule()
    def listing(self) -> None:
        self.check_listing()

    # -- invariants

    @invariant()
    def listing_equals_the_model(self) -> None:
        self.check_listing()

    @invariant()
    def nothing_outside_the_root(self) -> None:
        assert sorted(p.name for p in self.base.iterdir()) == ["root", "src"]

    def check_listing(self) -> None:
        entries = self.client.list("", recursive=True)
        files = {e["name"]: e["size"] for e in entries if e["type"] == "file"}
        assert files == {name: len(data) for name, data in self.model.items()}
        assert not [e for e in entries if e["name"].split("/")[-1].startswith(".muxserver")]

    def teardown(self) -> None:
        try:
            self.client.close()
            stop_thread_server(self.running, self.thread)
            leftovers = [p.name for p in self.root.rglob(".muxserver-tmp-*")]
            assert leftovers == [], f"temporary files left behind: {leftovers}"
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


FileServerModel.TestCase.settings = settings(
    max_examples=40, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
TestFileServerModel = pytest.mark.timeout(240)(FileServerModel.TestCase)
