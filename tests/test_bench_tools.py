"""The benchmark's own instruments: the load generator checks every reply, and the bare
server it measures muxserver against serves the same load correctly. (Their figures
are the benchmark's business; here only that they work.)"""

from __future__ import annotations

import argparse
import importlib
import shutil
import sys
from pathlib import Path

import pytest

from .conftest import needs_python_classes

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"


def script_module(name: str):
    """Import one of scripts/ as a module (they import each other by plain names)."""
    saved = sys.path[:]
    sys.path.insert(0, str(SCRIPTS))
    try:
        return importlib.import_module(name)
    finally:
        sys.path[:] = saved


@pytest.fixture(scope="module")
def loadgen():
    return script_module("loadgen")


@pytest.mark.parametrize("floor", ["", "bare_server.py", "flat_server.py"],
                         ids=["muxserver", "bare server", "flat server"])
@pytest.mark.parametrize("digest", ["blake3", "sha256"])
def test_the_many_clients_load_is_served_and_every_digest_checked(loadgen, tmp_path, floor,
                                                                   digest):
    args = argparse.Namespace(clients=4, digest=digest, file_kib=64)
    result = loadgen.many_clients(args, tmp_path, floor=floor)
    assert result["errors"] == 0
    assert result["checked"] == 4 * 32  # 16 puts and 16 gets per connection
    files = sorted(p.relative_to(tmp_path / "root").as_posix()
                   for p in (tmp_path / "root").rglob("*") if p.is_file())
    assert files == sorted(f"c{i}/f{j}" for i in range(4) for j in range(16))
    # The kernel received each reply before the generator got round to reading it.
    assert 0 < result["p50_ms"] and result["p99_ms"] <= result["p99_seen_ms"]
    assert sorted(result["rounds"]) == sorted(f"{op} {k}" for op in ("put", "get")
                                              for k in range(1, 17))
    # Each phase apart: its CPU (the two add up to the whole) and its own p99.
    assert result["put_cpu"] >= 0 and result["get_cpu"] >= 0
    assert result["put_cpu"] + result["get_cpu"] == pytest.approx(result["server_cpu"])
    assert 0 < result["put_p99_ms"] and 0 < result["get_p99_ms"]
    assert max(result["put_p99_ms"], result["get_p99_ms"]) >= result["p99_ms"]
    assert result["put_aside_ms"] > 0 and result["get_aside_ms"] > 0  # (a cycle > its wait)


def test_a_wrong_digest_is_counted_as_an_error(loadgen, tmp_path):
    """The generator is not a test that cannot fail: a reply with another digest counts."""
    from muxserver import protocol
    from muxserver.digests import Digest

    server = loadgen.spawn_muxserver(tmp_path)
    try:
        run = loadgen.LoadRun(server.host, server.port)
        ((data, digest),) = loadgen._payloads(1, 1000)
        puts = [[loadgen.Request(protocol.encode_put(1, "a", len(data), digest) + data, "a",
                                 digest)]]
        run.run(puts, window=1)
        assert (run.errors, run.checked) == (0, 1)
        wrong = Digest(digest.algorithm, "0" * 64)
        gets = [[loadgen.Request(protocol.encode_get(2, "a", digest=digest.algorithm), "a",
                                 wrong)]]
        run.run(gets, window=1)
    finally:
        server.stop()
    assert (run.errors, run.checked) == (1, 2)  # the body hashed to another digest


def test_the_benchmark_says_in_one_line_which_targets_hold():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import bench
    finally:
        sys.path.remove(str(SCRIPTS))
    assert bench.targets_line([("a", True, "1x"), ("b", True, "2x")]) == "targets: all 2 hold"
    assert bench.targets_line([("a", True, "1x"), ("b <= 1.3x", False, "1.8x")]) == (
        "targets: 1 of 2 hold; missed: b <= 1.3x")


def test_the_compiled_build_names_modules_that_exist():
    """setup.py's COMPILED list, as compiled_build.py reads it (without running setup.py),
    names each module of the request path once, and each is there. (That mypyc compiles
    them and the suite passes against them is .ci/run's last step.)"""
    compiled_build = script_module("compiled_build")
    names = compiled_build.compiled_names()
    assert {"channel", "loop", "protocol", "session", "native"} <= set(names)
    assert len(set(names)) == len(names)
    package = SCRIPTS.parent / "muxserver"
    assert all((package / f"{name}.py").is_file() for name in names)


@needs_python_classes
def test_calls_are_counted_per_module_for_every_server(tmp_path):
    """calls_per_request.py profiles each server only while the load runs, and files
    every call under the module that made it."""
    calls = script_module("calls_per_request")
    repo = SCRIPTS.parent
    mux, mux_functions, requests = calls.count_calls(
        "muxserver", "muxserver", ["serve", "--port", "0", "--no-console"], repo, 2, 4096,
        tmp_path)
    floors = {script: calls.count_calls(script.split("_")[0], str(SCRIPTS / script),
                                        ["--port", "0"], repo, 2, 4096, tmp_path)[0]
              for script in ("bare_server.py", "flat_server.py")}
    bare, flat = floors["bare_server.py"], floors["flat_server.py"]
    assert requests == 2 * 32
    assert mux["muxserver/session.py"] and mux["muxserver/protocol.py"]
    assert "scripts/bare_server.py" not in mux and "muxserver/session.py" not in bare
    assert bare["scripts/bare_server.py"] and bare["muxserver/protocol.py"]
    assert flat["scripts/flat_server.py"] and flat["muxserver/access.py"]
    assert "muxserver/access.py" not in bare and "muxserver/channel.py" not in flat
    assert all(counts[calls.BUILTIN] for counts in (mux, bare, flat))
    # Switched on after start-up: the command line was parsed before counting began.
    assert not any("argparse" in module for module in (*mux, *flat))
    assert any(where.startswith("muxserver/native.py:") for where in mux_functions)


@pytest.mark.skipif(shutil.which("valgrind") is None, reason="valgrind is not installed")
def test_instructions_are_counted_for_the_load_only_and_the_hash_apart(tmp_path):
    """instructions_per_request.py counts each server under callgrind while the load
    runs, and files the hash's instructions apart; the bare server's count for the
    same requests is smaller than muxserver's, and both hash the same bytes."""
    counter = script_module("instructions_per_request")
    repo = SCRIPTS.parent
    mux = counter.count_instructions(
        "muxserver", [sys.executable, "-m", "muxserver", "serve", "--port", "0",
                      "--no-console"], repo, 2, 65536, tmp_path)
    bare = counter.count_instructions(
        "bare", [sys.executable, str(SCRIPTS / "bare_server.py"), "--port", "0"], repo, 2,
        65536, tmp_path)
    for total, hashing, requests in (mux, bare):
        assert requests == 2 * 32
        # 16 puts of 64 KiB hashed: at least a few instructions per byte of them.
        assert hashing > 16 * 2 * 65536
        assert total > hashing
    # The same bytes hashed the same way on both sides (gets send remembered digests).
    assert abs(mux[1] - bare[1]) < 0.01 * bare[1]
    assert mux[0] - mux[1] > bare[0] - bare[1]


def test_a_client_s_requests_can_be_spread_over_shorter_connections():
    """instructions_per_request.py --per-connection N: the same requests in the same
    order, each client's over connections of N (so a connection's own cost is counted)."""
    spread = script_module("instructions_per_request").in_connections_of
    plan = [[f"c{i}/f{j}" for j in range(16)] for i in range(3)]
    assert spread(plan, 16) == plan
    ones = spread(plan, 1)
    assert len(ones) == 48 and [conn for (conn,) in ones] == sum(plan, [])
    fives = spread(plan, 5)
    assert [len(conn) for conn in fives[:4]] == [5, 5, 5, 1] and sum(fives, []) == sum(plan, [])


def test_the_flat_server_keeps_the_checks_it_claims(loadgen, tmp_path):
    """flat_server.py measures muxserver's per-request checks: they must really run.
    Each refusal is an error reply on a connection that goes on serving; a frame that
    cannot be read is answered and closed; an upload cut off leaves nothing behind."""
    import socket

    from muxserver import protocol

    from .doc_client import DocClient

    root = tmp_path / "root"
    root.mkdir()
    (root / "taken").write_bytes(b"x")
    (root / "link").symlink_to("taken")
    ((data, digest), (_, other)) = loadgen._payloads(2, 1000)
    put = protocol.encode_put
    server = loadgen.spawn_floor_server(root, "flat_server.py")
    try:
        client = DocClient(server.host, server.port)
        try:
            def ask(frame: bytes) -> str:
                client.sock.sendall(frame)
                reply, _body = client.read_reply()
                return "ok" if reply["ok"] else reply["error"]

            assert ask(put(1, "../up", len(data), digest) + data) == "bad_name"
            assert ask(put(2, "taken", len(data), digest) + data) == "exists"
            assert ask(put(3, "taken/x", len(data), digest) + data) == "not_a_directory"
            assert ask(put(4, "bad", len(data), other) + data) == "checksum_mismatch"
            assert ask(put(5, "later", len(data), None, trailer="blake3") + data
                       ) == "bad_request"
            assert ask(protocol.encode_frame({"op": "put", "id": "6"})) == "bad_request"
            assert ask(protocol.encode_get(7, "link", digest="blake3")) == "forbidden"
            assert ask(protocol.encode_get(8, "nothing", digest="blake3")) == "not_found"
            assert ask(put(9, "new", len(data), digest) + data) == "ok"
            client.sock.sendall(protocol.encode_get(10, "new", digest="blake3"))
            reply, body = client.read_reply()
            assert reply["blake3"] == digest.hex and body == data
        finally:
            client.close()
        client = DocClient(server.host, server.port)
        try:  # a frame that is not one: answered, then closed
            client.sock.sendall(b"GET / HTTP/1.1\r\n\r\n")
            assert client.read_reply()[0]["error"] == "bad_magic"
            with pytest.raises(ConnectionError):
                client.read_reply()
        finally:
            client.close()
        client = DocClient(server.host, server.port)
        try:  # an upload cut off: once the server has closed, nothing of it is left
            client.sock.sendall(put(11, "cut", len(data), digest) + data[:100])
            client.sock.shutdown(socket.SHUT_WR)
            with pytest.raises(ConnectionError):
                client.read_reply()
        finally:
            client.close()
    finally:
        server.stop()
    assert sorted(p.name for p in root.iterdir()) == ["link", "new", "taken"]
