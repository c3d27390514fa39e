"""rm, mv and mkdir, and the rights every operation checks, on both protocols.

In memory (session_harness.py), each test runs once per wire format; the CLI commands
and the HTML drop box are tried on a live server at the end.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from muxserver import cli
from muxserver.access import Ceiling

from .session_harness import Harness, harnesses

pytestmark = pytest.mark.timeout(60)

OPEN = Ceiling(allow_overwrite=True, allow_delete=True)


@pytest.fixture(params=["native", "http", "webdav"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    (path / "f.txt").write_text("hello")
    return path


@pytest.fixture
def make(kind, root):
    with harnesses(kind, root) as make_harness:
        yield make_harness


# ----------------------------------------------------------------- operations


def test_mkdir_mv_and_rm_round_trip(make, root):
    h = make(ceiling=OPEN)
    h.send(h.wire.mkdir("docs"))
    assert h.replies()[-1].ok and (root / "docs").is_dir()
    h.send(h.wire.put("docs/a.txt", b"a"))
    h.send(h.wire.mv("docs/a.txt", "docs/b.txt"))
    assert h.replies()[-1].ok
    assert (root / "docs" / "b.txt").read_bytes() == b"a"
    assert not (root / "docs" / "a.txt").exists()
    h.send(h.wire.rm("f.txt"))
    assert h.replies()[-1].ok and not (root / "f.txt").exists()
    h.send(h.wire.rm("docs", recursive=True))
    assert h.replies()[-1].ok and not (root / "docs").exists()


def test_mkdir_of_an_existing_name_is_refused(make, root):
    h = make(ceiling=OPEN)
    h.send(h.wire.mkdir("f.txt"))
    reply = h.replies()[-1]
    assert not reply.ok and (reply.code == "exists" or reply.status == 405)


def test_rm_of_a_missing_name_and_of_the_root(make):
    h = make(ceiling=OPEN)
    h.send(h.wire.rm("nope"))
    assert h.replies()[-1].refused("not_found")
    h.send(h.wire.rm(""))
    assert not h.replies()[-1].ok


def test_native_rm_of_a_directory_needs_recursive(tmp_path, root):
    (root / "d").mkdir()
    h = Harness("native", root, ceiling=OPEN)
    try:
        h.send(h.wire.rm("d"))
        assert h.replies()[-1].refused("is_directory") and (root / "d").is_dir()
    finally:
        h.close()


def test_mv_refuses_links_directories_itself_and_existing_files(make, root, kind):
    (root / "dir").mkdir()
    (root / "link").symlink_to("f.txt")
    (root / "other.txt").write_text("other")
    h = make(ceiling=Ceiling(allow_delete=True))  # replacing is not allowed here
    h.send(h.wire.mv("other.txt", "link", overwrite=True))
    assert h.replies()[-1].refused("forbidden")  # never onto a symbolic link
    h.send(h.wire.mv("other.txt", "dir", overwrite=True))
    assert h.replies()[-1].refused("is_directory")  # never over a directory
    h.send(h.wire.mv("dir", "dir/inside"))
    assert h.replies()[-1].refused("bad_request")
    h.send(h.wire.mv("other.txt", "f.txt"))
    refused = h.replies()[-1]
    assert refused.code == "exists" if kind == "native" else refused.status == 412
    h.send(h.wire.mv("other.txt", "f.txt", overwrite=True))
    assert h.replies()[-1].refused("overwrite_refused")
    assert (root / "f.txt").read_text() == "hello" and (root / "other.txt").exists()


def test_rm_r_of_a_big_tree_is_done_in_steps(make, root):
    for i in range(700):
        (root / "big" / f"d{i % 7}").mkdir(parents=True, exist_ok=True)
        (root / "big" / f"d{i % 7}" / f"f{i}").touch()
    h = make(ceiling=OPEN)
    later = []
    call_soon = h.loop.call_soon

    def counting(callback, owner=None) -> None:
        later.append(callback)
        call_soon(callback, owner)

    h.loop.call_soon = counting
    h.send(h.wire.rm("big", recursive=True))
    assert h.replies()[-1].ok and not (root / "big").exists()
    # It went back to the loop between steps: the next step was left for later.
    assert h.session.run_job_step in later


# ------------------------------------------------------------------------ rights


def test_without_allow_delete_nothing_is_removed_or_moved(make, root):
    h = make()  # the default server: writes, no deletes
    h.send(h.wire.rm("f.txt"))
    assert h.replies()[-1].refused("not_permitted")
    h.send(h.wire.mv("f.txt", "g.txt"))
    assert h.replies()[-1].refused("not_permitted")
    h.send(h.wire.mkdir("new"))
    assert h.replies()[-1].ok  # mkdir needs what put needs
    assert (root / "f.txt").exists() and not (root / "g.txt").exists()


#: Every way to change the root, as requests built by a harness's wire.
EVERY_CHANGE = [lambda w: w.put("new.txt", b"n"),
                lambda w: w.put("f.txt", b"x", overwrite=True),
                lambda w: w.mkdir("made"),
                lambda w: w.rm("f.txt"),
                lambda w: w.mv("f.txt", "moved.txt")]


@pytest.mark.parametrize("how", ["read-only server", "read-only token"])
def test_read_only_changes_nothing_by_any_route(make, root, how):
    def connect() -> Harness:
        if how == "read-only server":
            h = make(token="t", ceiling=Ceiling(read_only=True, allow_overwrite=True,
                                               allow_delete=True))
        else:
            h = make(tokens={"t": frozenset({"read"})}, ceiling=OPEN)
        h.login("t")
        return h

    h = connect()
    before = sorted(p.name for p in root.iterdir())
    for change in EVERY_CHANGE:
        h.send(change(h.wire))
        assert h.replies()[-1].refused("not_permitted")
        if h.closing:  # (HTTP closes after a refused upload: a new connection)
            h = connect()
    assert sorted(p.name for p in root.iterdir()) == before
    assert (root / "f.txt").read_text() == "hello"
    h.send(h.wire.get("f.txt"))
    assert h.replies()[-1].body == b"hello"  # reading is fine


def test_an_upload_only_token_cannot_learn_a_name(make, root, kind):
    h = make(tokens={"drop": frozenset({"write"})}, ceiling=OPEN)
    h.login("drop")
    h.send(h.wire.get("f.txt"))
    assert h.replies()[-1].refused("not_permitted")
    h.send(h.wire.header_only("f.txt"))
    assert h.replies()[-1].refused("not_permitted")
    h.send(h.wire.listing())
    listing = h.replies()[-1]
    if kind == "webdav":  # (a PROPFIND: no names, no page)
        assert listing.refused("not_permitted") and b"f.txt" not in listing.body
    elif kind == "http":  # the drop box page: an upload form, and no names
        assert listing.ok and b"drop box" in listing.body and b"f.txt" not in listing.body
    else:
        assert listing.refused("not_permitted")
    h.send(h.wire.put("f.txt", b"dropped", overwrite=True))  # a taken name...
    stored = h.replies()[-1]
    assert stored.ok and b"(2)" not in stored.body  # ...is not admitted to be taken
    assert (root / "f.txt").read_text() == "hello"  # never replaced
    assert (root / "f (2).txt").read_bytes() == b"dropped"  # but stored beside it
    h.send(h.wire.rm("f.txt"))
    assert h.replies()[-1].refused("not_permitted")


def test_the_upload_only_server_is_a_drop_box(make, root):
    h = make(ceiling=Ceiling(upload_only=True, allow_overwrite=True, allow_delete=True))
    h.send(h.wire.put("in.txt", b"in"))
    assert h.replies()[-1].ok and (root / "in.txt").read_bytes() == b"in"
    h.send(h.wire.get("in.txt"))
    assert h.replies()[-1].refused("not_permitted")
    h.send(h.wire.mv("in.txt", "out.txt"))
    assert h.replies()[-1].refused("not_permitted")


def test_a_token_with_every_right_does_everything_the_server_allows(make, root):
    h = make(tokens={"all": frozenset({"read", "write", "delete"})}, ceiling=OPEN)
    h.login("all")
    for change in EVERY_CHANGE[:3]:
        h.send(change(h.wire))
        assert h.replies()[-1].ok
    assert (root / "f.txt").read_bytes() == b"x"  # replaced: write and delete, and the flag


# ---------------------------------------------------------------------- the CLI


def run(*argv: str, capsys) -> tuple[int, str]:
    status = cli.main(list(argv))
    return status, capsys.readouterr().err


def test_cli_mkdir_mv_rm(make_server, capsys):
    server = make_server(allow_delete=True)
    port = ["--port", str(server.port)]
    assert run("mkdir", "-p", "a/b", *port, capsys=capsys) == (0, "made a/b/\n")
    (server.root / "a" / "b" / "x.txt").write_text("x")
    assert run("mv", "a/b/x.txt", "a/y.txt", *port, capsys=capsys) == (
        0, "moved a/b/x.txt -> a/y.txt\n")
    status, err = run("rm", "a", *port, capsys=capsys)
    assert status == 1 and "rm a failed" in err and "recursive (rm -r)" in err
    assert run("rm", "-r", "a", *port, capsys=capsys) == (0, "removed a (3 entries)\n")
    assert not os.path.exists(server.root / "a")


def test_cli_rm_on_a_server_that_does_not_delete(server, capsys):
    (server.root / "keep.txt").write_text("keep")
    status, err = run("rm", "keep.txt", "--port", str(server.port), capsys=capsys)
    assert status == 1 and "--allow-delete" in err
    assert (server.root / "keep.txt").exists()
