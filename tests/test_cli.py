"""The command line, run as a user would: subprocesses, exit codes, messages, Ctrl-C."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys

import pytest

from muxserver import cli, protocol
from muxserver.client import Client
from muxserver.digests import BLAKE3, Digest

from .conftest import (LISTENING, FrameReader, run_cli, spawn_server, stop_process, temp_files,
                       visible_files, wait_for_upload_to_start)

pytestmark = pytest.mark.timeout(90)


def port_args(srv) -> list[str]:
    return ["--host", srv.host, "--port", str(srv.port)]


def test_banner_names_the_address_and_a_client_command_that_works(server_process, tmp_path):
    banner = server_process.banner
    assert f"listening on 127.0.0.1:{server_process.port}" in banner
    assert str(server_process.root) in banner
    command = next(line for line in banner.splitlines() if "put FILE" in line)
    args = command.split("python -m muxserver", 1)[1].split()
    (tmp_path / "hello.txt").write_text("hello")
    args[args.index("FILE")] = str(tmp_path / "hello.txt")
    result = run_cli(*args)
    assert result.returncode == 0, result.stderr
    assert (server_process.root / "hello.txt").read_text() == "hello"


def test_put_get_ls_stat_round_trip(server_process, tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("alpha")
    (src / "sub" / "b.bin").write_bytes(os.urandom(70_000))
    ports = port_args(server_process)

    result = run_cli("put", "-r", str(src), "--as", "tree", *ports)
    assert result.returncode == 0, result.stderr
    assert "tree/sub/b.bin" in result.stderr and result.stdout == ""

    result = run_cli("ls", "-r", *ports)
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    assert [line.split()[-1] for line in lines] == ["tree/", "tree/a.txt", "tree/sub/",
                                                    "tree/sub/b.bin"]
    assert "68.4 KiB" in result.stdout

    out = tmp_path / "out"
    result = run_cli("get", "tree/a.txt", "tree/sub/b.bin", "-o", str(out), *ports)
    assert result.returncode == 0, result.stderr
    assert (out / "a.txt").read_text() == "alpha"
    assert (out / "b.bin").read_bytes() == (src / "sub" / "b.bin").read_bytes()

    result = run_cli("get", "-r", "tree", "-o", str(tmp_path / "rec"), *ports)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "rec" / "tree" / "sub" / "b.bin").exists()

    result = run_cli("stat", "tree/a.txt", *ports)
    assert result.returncode == 0 and "size:     5 bytes" in result.stdout
    assert "blake3:" in result.stdout  # (the digest the client uploaded it with)


@pytest.mark.parametrize("args, message", [
    (["put", "{f}", "--as", "../escape"], "refused"),
    (["put", "{f}", "--as", "/etc/passwd"], "absolute paths are not allowed"),
    (["get", "missing.txt", "-o", "{d}"], "no such file"),
    (["ls", "missing-dir"], "no directory"),
])
def test_failures_exit_1_with_a_one_line_reason(server_process, tmp_path, args, message):
    (tmp_path / "f").write_text("x")
    args = [a.format(f=tmp_path / "f", d=tmp_path) for a in args]
    result = run_cli(*args, *port_args(server_process))
    assert result.returncode == 1
    assert message in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_existing_file_is_refused_then_replaced_with_overwrite(tmp_path, root):
    srv = spawn_server(root, "--allow-overwrite")
    try:
        (tmp_path / "f").write_text("one")
        assert run_cli("put", str(tmp_path / "f"), *port_args(srv)).returncode == 0
        (tmp_path / "f").write_text("two")
        result = run_cli("put", str(tmp_path / "f"), *port_args(srv))
        assert result.returncode == 1 and "already exists" in result.stderr
        assert "--overwrite" in result.stderr
        result = run_cli("put", str(tmp_path / "f"), "--overwrite", *port_args(srv))
        assert result.returncode == 0 and (root / "f").read_text() == "two"
    finally:
        stop_process(srv.proc)


def test_connection_refused_is_one_line(tmp_path):
    with socket.socket() as probe:  # a port that nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    result = run_cli("ls", "--port", str(port))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"muxserver: cannot connect to 127.0.0.1:{port}: "
                                     "connection refused (is the server running?)")


def test_get_refuses_to_replace_a_local_file(server_process, tmp_path):
    (server_process.root / "r.txt").write_text("remote")
    (tmp_path / "r.txt").write_text("local")
    result = run_cli("get", "r.txt", "-o", str(tmp_path), *port_args(server_process))
    assert result.returncode == 1 and "already exists locally" in result.stderr
    assert (tmp_path / "r.txt").read_text() == "local"
    result = run_cli("get", "r.txt", "-o", str(tmp_path), "--overwrite",
                     *port_args(server_process))
    assert result.returncode == 0 and (tmp_path / "r.txt").read_text() == "remote"


def test_usage_errors_exit_2(tmp_path):
    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    result = run_cli("put", str(tmp_path / "a"), str(tmp_path / "b"), "--as", "x",
                     "--port", "1")
    assert result.returncode == 2 and "--as names one file" in result.stderr
    result = run_cli("put", str(tmp_path), "--port", "1")
    assert result.returncode == 2 and "use -r" in result.stderr
    assert run_cli("put").returncode == 2


def test_checksum_mismatch_exits_1_with_a_reason(server, tmp_path, monkeypatch, capsys):
    (tmp_path / "f").write_text("data")
    monkeypatch.setattr("muxserver.client.operations.remembered_digest",
                        lambda fd, st: Digest(BLAKE3, "0" * 64))  # (a stale memory)
    status = cli.main(["put", str(tmp_path / "f"), "--port", str(server.port)])
    err = capsys.readouterr().err
    assert status == 1
    assert "BLAKE3" in err and "put f failed" in err
    assert visible_files(server.root) == []


def test_no_arguments_serves_the_current_directory(tmp_path):
    (tmp_path / "here.txt").write_text("here")
    proc = subprocess.Popen([sys.executable, "-m", "muxserver", "--port", "0", "--no-console"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    try:
        lines = [proc.stdout.readline() for _ in range(5)]
        assert str(tmp_path) in lines[0]
        port = int(LISTENING.search(lines[-1]).group(2))
        result = run_cli("ls", "--port", str(port))
        assert "here.txt" in result.stdout
    finally:
        stop_process(proc)


def test_ctrl_c_twice_stops_at_once_mid_upload(root):
    srv = spawn_server(root)
    try:
        with socket.create_connection((srv.host, srv.port)) as sock:
            sock.sendall(protocol.encode_put(1, "interrupted.bin", 1 << 20, "0" * 64)
                         + b"z" * 100_000)
            reader = FrameReader(sock)
            wait_for_upload_to_start(root)
            with socket.create_connection((srv.host, srv.port)) as idle:
                idle.sendall(protocol.encode_list(3, ""))  # a reply proves it was accepted
                FrameReader(idle).frame()
                srv.proc.send_signal(signal.SIGINT)  # graceful: the upload could still finish
                # the idle connection is told at once: proof the first signal was handled
                assert FrameReader(idle).frame()[0]["error"] == "shutting_down"
            srv.proc.send_signal(signal.SIGINT)  # ...but a second Ctrl-C means now
            assert srv.proc.wait(timeout=10) == 0
            assert reader.closed()
        _out, err = srv.output()
        assert "Traceback" not in err and "stopped" in err
        assert visible_files(root) == [] and temp_files(root) == []
    finally:
        stop_process(srv.proc)


def test_sigterm_stops_cleanly(server_process):
    server_process.proc.terminate()
    assert server_process.proc.wait(timeout=10) == 0


def test_listen_failure_is_one_line(server_process):
    result = run_cli("serve", "--port", str(server_process.port), "--root",
                     str(server_process.root), "--no-console", timeout=20)
    assert result.returncode == 1
    assert "cannot listen" in result.stderr and "Traceback" not in result.stderr


def test_console_script_is_installed():
    exe = shutil.which("muxserver")
    if exe is None:
        pytest.skip("the muxserver script is not on PATH (package not installed)")
    result = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=30)
    assert result.returncode == 0 and result.stdout.startswith("muxserver ")


def test_put_r_with_a_non_utf8_file_name_fails_that_file_only(server_process, tmp_path):
    src = tmp_path / "tree"
    src.mkdir()
    (src / "good.txt").write_text("good")
    with open(os.path.join(os.fsencode(src), b"bad-\xff.txt"), "wb") as f:
        f.write(b"bad")
    result = run_cli("put", "-r", str(src), "--port", str(server_process.port))
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert "cannot send the name" in result.stderr
    assert (server_process.root / "tree" / "good.txt").read_text() == "good"


def test_put_of_a_fifo_is_refused_without_hanging(server_process, tmp_path):
    os.mkfifo(tmp_path / "fifo")
    result = run_cli("put", str(tmp_path / "fifo"), "--port", str(server_process.port))
    assert result.returncode == 1 and "not a regular file" in result.stderr


@pytest.mark.parametrize("command", ["", "serve", "put", "get", "ls", "stat"])
def test_every_help_page_prints(command):
    result = run_cli(*([command] if command else []), "--help")
    assert result.returncode == 0 and "usage:" in result.stdout, result.stderr
    assert "Traceback" not in result.stderr


# ------------------------------------------------- names and addresses as typed


def test_names_as_people_type_them(server, tmp_path, capsys):
    port = ["--port", str(server.port)]
    (server.root / "photos").mkdir()
    (server.root / "photos" / "cat.jpg").write_bytes(b"meow")
    (server.root / "top.txt").write_text("top")
    assert cli.main(["ls", "photos/", *port]) == 0
    assert "photos/cat.jpg" in capsys.readouterr().out
    assert cli.main(["stat", "photos/", *port]) == 0
    assert "type:     dir" in capsys.readouterr().out
    assert cli.main(["ls", "/", *port]) == 0
    assert "top.txt" in capsys.readouterr().out
    for root_name in (".", "/"):
        out = tmp_path / f"all{len(root_name)}{root_name == '.'}"
        assert cli.main(["get", "-r", root_name, "-o", str(out), "-q", *port]) == 0
        assert (out / "top.txt").read_text() == "top"
        assert (out / "photos" / "cat.jpg").read_bytes() == b"meow"
    capsys.readouterr()
    assert cli.main(["get", "photos", "-o", str(tmp_path), *port]) == 2
    assert "photos is a directory: use -r" in capsys.readouterr().err


def test_put_as_an_existing_directory_puts_inside_it(server, tmp_path):
    port = ["--port", str(server.port), "-q"]
    (server.root / "inbox").mkdir()
    (tmp_path / "letter.txt").write_text("hi")
    assert cli.main(["put", str(tmp_path / "letter.txt"), "--as", "inbox", *port]) == 0
    assert (server.root / "inbox" / "letter.txt").read_text() == "hi"
    assert cli.main(["put", str(tmp_path / "letter.txt"), "--as", "new/", *port]) == 0
    assert (server.root / "new" / "letter.txt").read_text() == "hi"
    assert cli.main(["put", str(tmp_path / "letter.txt"), "--as", "renamed.txt", *port]) == 0
    assert (server.root / "renamed.txt").read_text() == "hi"


@pytest.mark.parametrize("argv, says", [
    (["get", "x", "--port", "99999"], "99999 is not a port (0 to 65535)"),
    (["ls", "--timeout", "0"], "it must be more than 0"),
    (["serve", "--port", "-1"], "-1 is not a port"),
    (["frobnicate", "x"], "unknown command 'frobnicate'"),
])
def test_bad_command_lines_get_one_clear_line(argv, says):
    result = run_cli(*argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and says in result.stderr, result.stderr


# ----------------------------------------------------------------------- IPv6


def test_an_ipv6_round_trip_on_the_loopback(make_server, tmp_path):
    server = make_server(host="::1")
    port = ["--host", "::1", "--port", str(server.port), "-q"]
    (tmp_path / "v6.txt").write_text("over IPv6")
    assert run_cli("put", str(tmp_path / "v6.txt"), *port).returncode == 0
    listed = run_cli("ls", *port)
    assert listed.returncode == 0 and "v6.txt" in listed.stdout
    assert run_cli("get", "v6.txt", "-o", str(tmp_path / "back"), *port).returncode == 0
    assert (tmp_path / "back" / "v6.txt").read_text() == "over IPv6"
    if shutil.which("curl"):
        fetched = subprocess.run(["curl", "-sS", "--fail", f"http://[::1]:{server.port}/v6.txt"],
                                 capture_output=True, timeout=30)
        assert fetched.stdout == b"over IPv6", fetched.stderr


def test_a_subprocess_server_on_ipv6_says_where_it_listens(tmp_path, root):
    srv = spawn_server(root, "--host", "::1")
    try:
        assert srv.host == "::1" and f"listening on [::1]:{srv.port}" in srv.banner
        with Client("::1", srv.port) as client:
            assert client.list() == []
    finally:
        stop_process(srv.proc)


def test_the_wildcard_addresses_pick_their_family():
    import socket

    from muxserver.server import listening_family

    # (tests never bind beyond loopback: the decision is checked, not the socket)
    assert listening_family("::") == (socket.AF_INET6, socket.has_dualstack_ipv6())
    assert listening_family("0.0.0.0") == (socket.AF_INET, False)
    assert listening_family("::1") == (socket.AF_INET6, False)
    assert listening_family("127.0.0.1") == (socket.AF_INET, False)


# ----------------------------------------------------------------------- sync


def test_sync_sends_and_fetches_only_what_differs(make_server, tmp_path, capsys):
    server = make_server(allow_overwrite=True)
    port = ["--port", str(server.port)]
    tree = tmp_path / "tree"
    for i in range(1000):
        (tree / f"d{i % 10}").mkdir(parents=True, exist_ok=True)
        (tree / f"d{i % 10}" / f"f{i}.txt").write_text(f"file {i}\n")
    stats = server.server.stats

    assert cli.main(["put", "-r", str(tree), "--sync", "-q", *port]) == 0
    assert stats.transfers_done == 1000
    assert cli.main(["put", "-r", str(tree), "--sync", *port]) == 0
    assert stats.transfers_done == 1000  # the unchanged tree: not one body moved
    assert "1000 file(s) the same on both sides, 0 to send" in capsys.readouterr().err
    (tree / "d3" / "f3.txt").write_text("changed\n")
    assert cli.main(["put", "-r", str(tree), "--sync", "-q", *port]) == 0
    assert stats.transfers_done == 1001
    assert (server.root / "tree" / "d3" / "f3.txt").read_text() == "changed\n"

    out = tmp_path / "out"
    assert cli.main(["get", "-r", "tree", "-o", str(out), "--sync", "-q", *port]) == 0
    assert stats.transfers_done == 2001
    assert cli.main(["get", "-r", "tree", "-o", str(out), "--sync", "-q", *port]) == 0
    assert stats.transfers_done == 2001  # everything here already: nothing fetched
    (out / "tree" / "d7" / "f7.txt").write_text("local edit\n")
    assert cli.main(["get", "-r", "tree", "-o", str(out), "--sync", "-q", *port]) == 0
    assert stats.transfers_done == 2002
    assert (out / "tree" / "d7" / "f7.txt").read_text() == "file 7\n"


def test_log_level_warning_keeps_only_refusals_and_trouble(root, tmp_path):
    srv = spawn_server(root, "--log-level", "warning")
    try:
        (tmp_path / "f").write_text("quiet")
        ports = ["--port", str(srv.port)]
        assert run_cli("put", str(tmp_path / "f"), *ports).returncode == 0
        assert run_cli("get", "missing.txt", "-o", str(tmp_path / "out"), *ports).returncode == 1
    finally:
        stop_process(srv.proc)
    _out, err = srv.output()
    assert "connected" not in err and "put f" not in err  # (info lines: not written)
    assert "missing.txt refused" in err  # (a refusal is a warning: written)
