"""WebDAV (http_dav.py): its requests in memory, then real clients on a live server.

In memory (session_harness.py, the "webdav" wire), each request's answer is checked
as RFC 4918 says it. The rules shared with every wire (rights, the grant's folder,
limits, the commit) run against this wire in test_file_ops.py, test_sessions.py and
test_sharing.py. On live servers: the public compliance suite ``litmus`` (with and
without a user, and under ``--workers 2``), cadaver, and davfs2 where this machine can
mount; each is skipped, saying why, where it is not installed.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import shutil
import socket
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from muxserver import dav_xml
from muxserver.access import Ceiling
from muxserver.limits import Limits
from muxserver.locks import MAX_TIMEOUT, parse_timeout

from .conftest import run_cli, spawn_server, stop_process
from .session_harness import Harness, Reply, harnesses

pytestmark = pytest.mark.timeout(120)

OPEN = Ceiling(allow_overwrite=True, allow_delete=True)
DAV = "{DAV:}"


@pytest.fixture
def root(tmp_path) -> Path:
    path = tmp_path / "root"
    path.mkdir()
    (path / "f.txt").write_text("hello")
    (path / "docs").mkdir()
    (path / "docs" / "a.txt").write_text("a")
    return path


@pytest.fixture
def make(root):
    with harnesses("webdav", root) as make_harness:
        yield make_harness


def ask(h: Harness, method: str, path: str, headers: dict[str, str] | None = None,
        body: bytes = b"") -> Reply:
    headers = dict(headers or {})
    if body:
        headers["Content-Length"] = str(len(body))
    h.send(h.wire.request(method, path, headers, body))
    return h.replies()[-1]


def multistatus(reply: Reply) -> dict[str, dict[str, tuple[int, ET.Element]]]:
    """href -> {property name: (status, element)} of a 207 body."""
    assert reply.status == 207, reply
    found: dict[str, dict[str, tuple[int, ET.Element]]] = {}
    for response in ET.fromstring(reply.body).iter(DAV + "response"):
        href = response.findtext(DAV + "href")
        props = found.setdefault(href, {})
        for propstat in response.iter(DAV + "propstat"):
            status = int(propstat.findtext(DAV + "status").split()[1])
            for prop in propstat.find(DAV + "prop"):
                props[prop.tag] = (status, prop)
    return found


PROPFIND_NAMED = (b'<?xml version="1.0"?><D:propfind xmlns:D="DAV:" xmlns:X="urn:x"><D:prop>'
                  b"<D:getcontentlength/><D:resourcetype/><D:getetag/><X:color/>"
                  b"</D:prop></D:propfind>")


# ------------------------------------------------------------------- in memory


def test_options_says_dav_classes_1_and_2(make):
    reply = ask(make(), "OPTIONS", "/")
    assert reply.status == 200 and reply.headers["dav"] == "1, 2"
    assert reply.headers["ms-author-via"] == "DAV" and "PROPFIND" in reply.headers["allow"]


def test_propfind_depth_0_and_1_name_live_properties(make):
    h = make()
    h.send(h.wire.get("f.txt"))  # (a get has the digest computed: the ETag is known)
    found = multistatus(ask(h, "PROPFIND", "/f.txt", {"Depth": "0"}, PROPFIND_NAMED))
    props = found["/f.txt"]
    assert props[DAV + "getcontentlength"][0] == 200
    assert props[DAV + "getcontentlength"][1].text == "5"
    assert props[DAV + "getetag"][1].text == '"' + h.replies()[0].headers["etag"].strip('"') + '"'
    assert props["{urn:x}color"][0] == 404  # (no such property: named, and missing)
    listing = multistatus(ask(h, "PROPFIND", "/", {"Depth": "1"}, PROPFIND_NAMED))
    assert set(listing) == {"/", "/f.txt", "/docs/"}
    assert listing["/docs/"][DAV + "resourcetype"][1].find(DAV + "collection") is not None


def test_propfind_allprop_propname_and_an_empty_body(make):
    h = make()
    allprop = multistatus(ask(h, "PROPFIND", "/f.txt", {"Depth": "0"}))["/f.txt"]
    assert {DAV + "getlastmodified", DAV + "supportedlock", DAV + "displayname"} <= set(allprop)
    names = multistatus(ask(h, "PROPFIND", "/docs", {"Depth": "0"},
                            b'<propfind xmlns="DAV:"><propname/></propfind>'))["/docs/"]
    assert all(len(element) == 0 and not (element.text or "").strip()
               for _, element in names.values())


def test_propfind_depth_infinity_is_refused_as_rfc_4918_allows(make):
    reply = ask(make(), "PROPFIND", "/", {"Depth": "infinity"})
    assert reply.status == 403 and b"propfind-finite-depth" in reply.body
    assert ask(make(), "PROPFIND", "/").status == 403  # (no Depth means infinity)


@pytest.mark.parametrize("body", [
    b"<propfind xmlns='DAV:'><prop>",  # not well-formed
    b"<D:propfind xmlns:D='DAV:'><D:prop><x:a xmlns:x=''/></D:prop></D:propfind>",
    b'<?xml version="1.0"?><!DOCTYPE lolz [<!ENTITY lol "lol"><!ENTITY lol2 "&lol;&lol;">]>'
    b"<propfind xmlns='DAV:'><prop><x>&lol2;</x></prop></propfind>",  # entities
    b'<?xml version="1.0"?><!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]>'
    b"<propfind xmlns='DAV:'><prop>&e;</prop></propfind>",  # an external entity
])
def test_bad_or_hostile_xml_is_a_400_and_the_connection_goes_on(make, body):
    h = make()
    reply = ask(h, "PROPFIND", "/", {"Depth": "0"}, body)
    assert reply.status == 400 and not h.closing
    assert b"passwd" not in reply.body and b"root:" not in reply.body


def test_xml_nested_too_deep_to_write_back_is_a_400(make, root):
    h = make(ceiling=OPEN)
    value = b"<a>" * 5000 + b"</a>" * 5000
    patch = (b'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><x xmlns="urn:x">' + value
             + b"</x></D:prop></D:set></D:propertyupdate>")
    assert ask(h, "PROPPATCH", "/f.txt", {}, patch).status == 400 and not h.closing


def test_an_xml_body_over_the_limit_is_refused_unread(make):
    h = make(limits=Limits(max_xml_body=1000))
    h.send(h.wire.request("PROPFIND", "/", {"Depth": "0", "Content-Length": "5000"},
                          b"x" * 10, send_body=True))
    assert h.replies()[-1].status == 413 and h.closing


def test_proppatch_sets_removes_and_keeps_dead_properties_with_the_file(make, root):
    h = make(ceiling=OPEN)
    patch = (b'<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:" xmlns:Z="urn:z">'
             b'<D:set><D:prop><Z:color>red <b xmlns="urn:b">bold</b></Z:color>'
             b"<Z:size>big</Z:size></D:prop></D:set>"
             b"<D:remove><D:prop><Z:size/></D:prop></D:remove></D:propertyupdate>")
    reply = ask(h, "PROPPATCH", "/f.txt", {}, patch)
    assert all(status == 200 for status, _ in multistatus(reply)["/f.txt"].values())
    ask(h, "MOVE", "/f.txt", {"Destination": "http://127.0.0.1/g.txt"})
    asked = (b'<propfind xmlns="DAV:"><prop><color xmlns="urn:z"/><size xmlns="urn:z"/>'
             b"</prop></propfind>")
    props = multistatus(ask(h, "PROPFIND", "/g.txt", {"Depth": "0"}, asked))["/g.txt"]
    status, color = props["{urn:z}color"]
    assert status == 200 and color.text == "red " and color[0].tag == "{urn:b}b"
    assert props["{urn:z}size"][0] == 404  # (removed in the same request)
    assert os.getxattr(root / "g.txt", "user.muxserver.props")  # (kept with the file)


def test_proppatch_of_a_live_property_changes_nothing(make):
    h = make(ceiling=OPEN)
    patch = (b'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
             b"<D:getcontentlength>9</D:getcontentlength><D:other>x</D:other>"
             b"</D:prop></D:set></D:propertyupdate>")
    props = multistatus(ask(h, "PROPPATCH", "/f.txt", {}, patch))["/f.txt"]
    assert props[DAV + "getcontentlength"][0] == 403 and props[DAV + "other"][0] == 424
    allprop = multistatus(ask(h, "PROPFIND", "/f.txt", {"Depth": "0"}))["/f.txt"]
    assert DAV + "other" not in allprop


def test_proppatch_needs_write_rights(make):
    h = make(ceiling=Ceiling(read_only=True))
    patch = (b'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><D:x>1</D:x></D:prop>'
             b"</D:set></D:propertyupdate>")
    assert ask(h, "PROPPATCH", "/f.txt", {}, patch).refused("not_permitted")


def test_copy_of_a_file_and_a_tree_and_overwrite(make, root):
    h = make(ceiling=OPEN)
    assert ask(h, "COPY", "/f.txt", {"Destination": "/g.txt"}).status == 201
    assert (root / "g.txt").read_text() == "hello"
    assert ask(h, "COPY", "/docs/a.txt", {"Destination": "/g.txt",
                                           "Overwrite": "F"}).status == 412
    assert ask(h, "COPY", "/docs/a.txt", {"Destination": "/g.txt"}).status == 204
    assert (root / "g.txt").read_text() == "a"
    assert ask(h, "COPY", "/docs", {"Destination": "/docs2"}).status == 201
    assert (root / "docs2" / "a.txt").read_text() == "a"
    assert ask(h, "COPY", "/docs", {"Destination": "/shallow", "Depth": "0"}).status == 201
    assert list((root / "shallow").iterdir()) == []
    assert ask(h, "COPY", "/f.txt", {"Destination": "/nowhere/f.txt"}).status == 409
    assert ask(h, "COPY", "/docs", {"Destination": "/docs/inside"}).status == 400
    assert [n for n in os.listdir(root) if n.startswith(".muxserver-tmp")] == []


def test_copy_over_a_folder_needs_the_right_to_replace(make, root):
    h = make(ceiling=Ceiling(allow_delete=True))  # (no --allow-overwrite)
    reply = ask(h, "COPY", "/f.txt", {"Destination": "/docs"})
    assert reply.refused("overwrite_refused") and (root / "docs" / "a.txt").exists()


def test_move_onto_a_folder_replaces_it_when_allowed(make, root):
    (root / "other").mkdir()
    (root / "other" / "b.txt").write_text("b")
    h = make(ceiling=OPEN)
    assert ask(h, "MOVE", "/other", {"Destination": "/docs", "Overwrite": "F"}).status == 412
    assert ask(h, "MOVE", "/other", {"Destination": "/docs"}).status == 204
    assert sorted(os.listdir(root / "docs")) == ["b.txt"] and not (root / "other").exists()


def test_mkcol_answers_as_rfc_4918_says(make, root):
    h = make(ceiling=OPEN)
    assert ask(h, "MKCOL", "/new").status == 201 and (root / "new").is_dir()
    assert ask(h, "MKCOL", "/new").status == 405
    assert ask(h, "MKCOL", "/no/parent").status == 409
    h.send(h.wire.request("MKCOL", "/withbody", {"Content-Length": "3"}, b"abc"))
    assert h.replies()[-1].status == 415 and not (root / "withbody").exists()


LOCKINFO = (b'<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/>'
            b"</D:lockscope><D:locktype><D:write/></D:locktype><D:owner>ann</D:owner>"
            b"</D:lockinfo>")


def lock(h: Harness, path: str, headers: dict[str, str] | None = None) -> str:
    reply = ask(h, "LOCK", path, {"Timeout": "Second-60", **(headers or {})}, LOCKINFO)
    assert reply.status in (200, 201), reply
    return reply.headers["lock-token"].strip("<>")


def test_a_lock_keeps_others_out_on_every_wire_until_unlocked(root):
    with harnesses("webdav", root) as make:
        h = make(ceiling=OPEN)
        token = lock(h, "/f.txt")
        stranger = Harness("webdav", root, ceiling=OPEN, shared_root=h.root)
        stranger.services.locks = h.services.locks  # (one server: one table)
        try:
            stranger.send(stranger.wire.put("f.txt", b"mine"))
            assert stranger.replies()[-1].status == 423
            assert ask(stranger, "DELETE", "/f.txt").status == 423
            assert ask(stranger, "MOVE", "/f.txt", {"Destination": "/x"}).status == 423
        finally:
            stranger.close()
        native = Harness("native", root, ceiling=OPEN, shared_root=h.root)
        native.services.locks = h.services.locks
        try:
            native.send(native.wire.put("f.txt", b"mine"))
            assert native.replies()[-1].refused("locked")
            native.send(native.wire.rm("f.txt"))
            assert native.replies()[-1].refused("locked")
        finally:
            native.close()
        assert (root / "f.txt").read_text() == "hello"
        h.send(h.wire.request("PUT", "/f.txt", {"If": f"(<{token}>)", "Content-Length": "4"},
                              b"ours"))
        assert h.replies()[-1].status == 204 or h.replies()[-1].ok
        assert (root / "f.txt").read_text() == "ours"
        assert ask(h, "UNLOCK", "/f.txt", {"Lock-Token": f"<{token}>"}).status == 204
        assert ask(h, "DELETE", "/f.txt").status == 204



def test_lock_conflicts_refresh_discovery_and_unlock(make, root):
    h = make(ceiling=OPEN)
    token = lock(h, "/docs", {"Depth": "infinity"})
    assert ask(h, "LOCK", "/docs/a.txt", {}, LOCKINFO).status == 423  # (inside it)
    refreshed = ask(h, "LOCK", "/docs", {"If": f"(<{token}>)", "Timeout": "Second-30"})
    assert refreshed.status == 200 and b"Second-30" in refreshed.body
    found = multistatus(ask(h, "PROPFIND", "/docs/a.txt", {"Depth": "0"}))["/docs/a.txt"]
    active = found[DAV + "lockdiscovery"][1].find(DAV + "activelock")
    assert active.find(f"{DAV}locktoken/{DAV}href").text == token
    assert active.find(f"{DAV}lockroot/{DAV}href").text == "/docs"
    assert ask(h, "UNLOCK", "/docs", {"Lock-Token": "<urn:x-lock:nothing>"}).status == 409
    assert ask(h, "UNLOCK", "/docs/a.txt", {"Lock-Token": f"<{token}>"}).status == 204
    assert ask(h, "LOCK", "/docs/a.txt", {}, LOCKINFO).status == 200



def test_a_lock_of_a_missing_name_makes_an_empty_file(make, root):
    h = make(ceiling=OPEN)
    reply = ask(h, "LOCK", "/new.txt", {}, LOCKINFO)
    assert reply.status == 201 and (root / "new.txt").read_bytes() == b""
    assert ask(h, "LOCK", "/nowhere/new.txt", {}, LOCKINFO).status == 409



def test_the_if_header_checks_etags_and_tokens(make, root):
    h = make(ceiling=OPEN)
    h.send(h.wire.get("f.txt"))
    etag = h.replies()[-1].headers["etag"]
    put = lambda condition: ask(h, "PUT", "/f.txt", {"If": condition}, b"new")  # noqa: E731
    assert put('(["not-the-etag"])').status == 412
    assert put("(<urn:x-lock:gone>)").status == 412
    assert put(f"(Not <DAV:no-lock> [{etag}])").ok
    assert put("(<DAV:no-lock>) (Not <DAV:no-lock>)").ok  # (one list that holds is enough)
    assert put("(<unclosed").status == 400


def test_parse_timeout_is_bounded():
    assert parse_timeout("Second-30") == 30
    assert parse_timeout("Infinite, Second-99999999") == MAX_TIMEOUT
    assert parse_timeout("") == parse_timeout("Infinite") == 600


def test_a_big_folder_is_written_a_page_per_loop_step(make, root):
    for i in range(1000):
        (root / "docs" / f"n{i:04}").write_bytes(b"")
    h = make()
    steps = []
    call_soon = h.loop.call_soon

    def counting(callback, owner=None) -> None:
        steps.append(1)
        call_soon(callback)

    h.loop.call_soon = counting
    found = multistatus(ask(h, "PROPFIND", "/docs", {"Depth": "1"}, PROPFIND_NAMED))
    assert len(found) == 1002  # (the folder, and every member)
    assert len(steps) >= 1000 // 128  # (a job step per page, each a bounded one)


def test_basic_over_plain_http_only_from_this_machine_or_tls(root, tmp_path):
    users = tmp_path / "users"
    env = {**os.environ, "MUXSERVER_PASSWORD": "correct horse"}
    assert run_cli("user", "add", "ann", "--file", str(users), env=env).returncode == 0
    from muxserver.accounts import LiveAccounts
    from muxserver.access import Access, HostNames

    def harness(peer: str, tls: bool = False, allow: bool = False) -> Harness:
        access = Access({}, Limits(), HostNames("127.0.0.1"), accounts=LiveAccounts(str(users)))
        access.basic_over_http = allow
        return Harness("webdav", root, peer_host=peer, tls=tls, access=access)

    for peer, tls, allow, status in (("192.0.2.7", False, False, 403),
                                     ("192.0.2.7", True, False, 207),
                                     ("192.0.2.7", False, True, 207),
                                     ("127.0.0.1", False, False, 207)):
        h = harness(peer, tls, allow)
        try:
            h.wire.authorization = "Basic " + base64.b64encode(b"ann:correct horse").decode()
            reply = ask(h, "PROPFIND", "/", {"Depth": "0"})
            assert reply.status == status, (peer, tls, allow)
            if status == 403:
                assert b"--allow-basic-over-http" in reply.body
        finally:
            h.close()


# ------------------------------------------------------------ real clients, live


def litmus_result(url: str, *credentials: str) -> str:
    done = subprocess.run(["litmus", url, *credentials], capture_output=True, text=True,
                          timeout=100, cwd=os.environ.get("TMPDIR", "/tmp"))
    return done.stdout + done.stderr


needs_litmus = pytest.mark.skipif(shutil.which("litmus") is None,
                                  reason="litmus is not installed (apt-get install litmus)")


def every_suite_passed(output: str) -> None:
    summaries = re.findall(r"summary for `(\w+)': of (\d+) tests run: (\d+) passed", output)
    assert {s[0] for s in summaries} == {"basic", "copymove", "props", "locks", "http"}, output
    failed = [s for s in summaries if s[1] != s[2]]
    assert not failed and "FAIL" not in output, output


@needs_litmus
@pytest.mark.parametrize("how", ["open", "with a user", "two workers"])
def test_litmus_passes_every_suite(root, tmp_path, how):
    args, credentials = ["--allow-delete", "--allow-overwrite"], []
    if how == "with a user":
        users = tmp_path / "users"
        env = {**os.environ, "MUXSERVER_PASSWORD": "litmus pass"}
        assert run_cli("user", "add", "litmus", "--file", str(users), env=env).returncode == 0
        args += ["--token-file", str(users)]
        credentials = ["litmus", "litmus pass"]
    if how == "two workers":
        args += ["--workers", "2"]
    server = spawn_server(root, *args)
    try:
        every_suite_passed(litmus_result(f"http://127.0.0.1:{server.port}/", *credentials))
    finally:
        stop_process(server.proc)


def test_locks_hold_across_worker_processes(root):
    server = spawn_server(root, "--workers", "2", "--allow-delete", "--allow-overwrite")
    try:
        def status(request: bytes) -> tuple[int, bytes]:
            with socket.create_connection(("127.0.0.1", server.port), timeout=30) as sock:
                sock.sendall(request)
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = sock.recv(65536)
                    assert chunk
                    data += chunk
            return int(data.split(b" ", 2)[1]), data

        body = LOCKINFO
        code, head = status(b"LOCK /f.txt HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: "
                            + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert code == 200
        # Forty connections: the kernel spreads them over both workers (all on one:
        # a chance of 2 in 2**40); every one is refused.
        for _ in range(40):
            code, _ = status(b"DELETE /f.txt HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
            assert code == 423
    finally:
        stop_process(server.proc)
    assert (root / "f.txt").read_text() == "hello"


@pytest.mark.skipif(shutil.which("cadaver") is None,
                    reason="cadaver is not installed (apt-get install cadaver)")
def test_cadaver_puts_gets_copies_moves_locks_and_deletes(root, tmp_path):
    local = tmp_path / "local.txt"
    local.write_text("from cadaver\n")
    script = "\n".join([
        "mkcol box", f"put {local} box/one.txt", "copy box/one.txt box/two.txt",
        "move box/two.txt box/three.txt", "lock box/three.txt", "unlock box/three.txt",
        f"get box/three.txt {tmp_path / 'back.txt'}", "delete box/one.txt", "quit", ""])
    server = spawn_server(root, "--allow-delete", "--allow-overwrite")
    try:
        done = subprocess.run(["cadaver", f"http://127.0.0.1:{server.port}/"],
                              input=script, capture_output=True, text=True, timeout=60,
                              env={**os.environ, "HOME": str(tmp_path)})
    finally:
        stop_process(server.proc)
    assert done.stdout.count("succeeded") >= 7, done.stdout
    assert "failed" not in done.stdout.lower(), done.stdout
    assert (tmp_path / "back.txt").read_text() == "from cadaver\n"
    assert sorted(os.listdir(root / "box")) == ["three.txt"]


def davfs_mountable() -> str:
    """Why davfs2 cannot mount here, or ""."""
    if shutil.which("mount.davfs") is None:
        return "davfs2 is not installed (apt-get install davfs2)"
    if os.geteuid() != 0:
        return "mounting needs root"
    if not os.path.exists("/dev/fuse"):
        return "no /dev/fuse: this machine cannot mount FUSE file systems"
    return ""


@pytest.mark.skipif(bool(davfs_mountable()), reason=davfs_mountable() or "mountable")
def test_davfs2_mounts_the_share_and_cp_mv_rm_work(root, tmp_path):
    """Files by name: reading the mounted folder itself (``ls``) fails with EINVAL on
    some kernels for davfs2's FUSE side, whatever the server (rclone's too)."""
    mount = tmp_path / "mnt"
    mount.mkdir()
    config = tmp_path / "davfs2.conf"
    config.write_text("use_locks 1\ndelay_upload 0\n")  # (the cache: davfs2's own)
    server = spawn_server(root, "--allow-delete", "--allow-overwrite")
    mounted = False
    try:
        done = subprocess.run(["mount.davfs", "-o", f"conf={config}",
                               f"http://127.0.0.1:{server.port}/", str(mount)],
                              input="\n\n", capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        mounted = True
        assert (mount / "f.txt").read_text() == "hello"
        shutil.copy(root / "f.txt", mount / "copy.txt")
        os.rename(mount / "copy.txt", mount / "moved.txt")
        os.remove(mount / "f.txt")
        subprocess.run(["umount", str(mount)], check=True, timeout=60)
        mounted = False
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(mount)], timeout=60)
        stop_process(server.proc)
    assert (root / "moved.txt").read_text() == "hello" and not (root / "f.txt").exists()


@pytest.mark.parametrize("hashed_before", [True, False])
def test_a_copy_is_stored_whole_with_its_digest_or_not_at_all(tmp_path, hashed_before):
    from muxserver.storage import Root, StorageError
    from muxserver.storage.copies import COPY_STEP

    data = os.urandom(3 * COPY_STEP + 5)
    (tmp_path / "src.bin").write_bytes(data)
    root = Root(tmp_path)
    try:
        if hashed_before:  # (a get or an upload remembered its digest: the kernel copies)
            opened = root.open_file("src.bin")
            root.hash_now(opened)
            opened.close()
        for _ in root.copy_file_in_steps("src.bin", "dst.bin", overwrite=False,
                                         allow_overwrite=False, step=COPY_STEP // 8):
            pass
        assert (tmp_path / "dst.bin").read_bytes() == data
        copy = root.open_file("dst.bin")
        assert copy.digest is not None and copy.digest.hex == hashlib.sha256(data).hexdigest()
        copy.close()
        steps = root.copy_file_in_steps("src.bin", "again.bin", overwrite=False,
                                        allow_overwrite=False, step=COPY_STEP // 8)
        next(steps)
        with open(tmp_path / "src.bin", "ab") as f:  # changed while it is copied
            f.write(b"more")
        with pytest.raises(StorageError, match="changed while being copied"):
            for _ in steps:
                pass
        assert sorted(os.listdir(tmp_path)) == ["dst.bin", "src.bin"]  # (nothing half-made)
    finally:
        root.close()


def test_a_copy_goes_through_python_where_the_kernel_cannot_copy(tmp_path, monkeypatch):
    import errno

    from muxserver.storage import Root

    def no_kernel_copy(*args, **kw):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    data = os.urandom(100_000)
    (tmp_path / "src.bin").write_bytes(data)
    root = Root(tmp_path)
    try:
        opened = root.open_file("src.bin")
        root.hash_now(opened)  # (a remembered digest: the kernel would copy)
        opened.close()
        monkeypatch.setattr(os, "copy_file_range", no_kernel_copy)
        for _ in root.copy_file_in_steps("src.bin", "dst.bin", overwrite=False,
                                         allow_overwrite=False):
            pass
        assert (tmp_path / "dst.bin").read_bytes() == data
    finally:
        root.close()


def test_a_clients_probes_are_answered_but_not_logged_as_refusals(make, caplog):
    h = make(ceiling=OPEN)
    with caplog.at_level("INFO", logger="muxserver"):
        assert ask(h, "PROPFIND", "/nothing", {"Depth": "0"}).status == 404
        assert ask(h, "MKCOL", "/docs").status == 405
        assert ask(h, "MKCOL", "/no/parent").status == 409
        assert not [r for r in caplog.records if "refused" in r.getMessage()]
        assert ask(h, "DELETE", "/nothing").status == 404  # (a real refusal still is)
        assert [r for r in caplog.records if "refused" in r.getMessage()]


# ------------------------------------------------- what an attacker tried, refused


def test_a_copy_onto_a_folder_that_holds_the_source_removes_nothing(make, root):
    (root / "docs" / "child").mkdir()
    (root / "docs" / "child" / "precious.txt").write_text("keep")
    h = make(ceiling=OPEN)
    assert ask(h, "COPY", "/docs/child", {"Destination": "/docs"}).status == 400
    assert ask(h, "COPY", "/docs/a.txt", {"Destination": "/docs"}).status == 400
    assert (root / "docs" / "child" / "precious.txt").read_text() == "keep"
    assert (root / "docs" / "a.txt").read_text() == "a"


def test_a_propfind_names_at_most_so_many_properties(make):
    h = make()
    many = b"".join(b"<z:p%d/>" % i for i in range(65))
    body = b'<D:propfind xmlns:D="DAV:" xmlns:z="zz"><D:prop>' + many + b"</D:prop></D:propfind>"
    assert ask(h, "PROPFIND", "/", {"Depth": "1"}, body).status == 400
    same = b"<z:a/>" * 5000  # (the same name again and again: once)
    body = b'<D:propfind xmlns:D="DAV:" xmlns:z="zz"><D:prop>' + same + b"</D:prop></D:propfind>"
    assert ask(h, "PROPFIND", "/", {"Depth": "1"}, body).status == 207


def test_locks_are_bounded_per_holder_and_per_name(make, monkeypatch):
    from muxserver import locks

    monkeypatch.setattr(locks, "MAX_PER_HOLDER", 3)
    monkeypatch.setattr(locks, "MAX_PER_NAME", 2)
    shared = LOCKINFO.replace(b"<D:exclusive/>", b"<D:shared/>")
    h = make(ceiling=OPEN)
    assert [ask(h, "LOCK", "/f.txt", {}, shared).status for _ in range(3)] == [200, 200, 503]
    assert ask(h, "LOCK", "/docs", {}, shared).status == 200
    reply = ask(h, "LOCK", "/docs/a.txt", {}, shared)
    assert reply.status == 503 and b"unlock some" in reply.body


def test_an_owner_too_long_to_keep_is_refused_not_cut(make):
    h = make(ceiling=OPEN)
    body = LOCKINFO.replace(b"ann", b"A" * 5000)
    assert ask(h, "LOCK", "/f.txt", {}, body).status == 400
    assert b"activelock" not in ask(h, "PROPFIND", "/f.txt", {"Depth": "0"}).body


def test_a_drop_box_writer_can_neither_lock_nor_learn_of_locks(root):
    with harnesses("webdav", root) as make:
        owner = make(ceiling=OPEN)
        token = lock(owner, "/docs", {"Depth": "0"})
        assert token
        drop = Harness("webdav", root, ceiling=Ceiling(upload_only=True),
                       shared_root=owner.root)
        drop.services.locks = owner.services.locks
        try:
            assert ask(drop, "LOCK", "/", {}, LOCKINFO).status == 403
            answers = [ask(drop, "PUT", f"/{folder}/probe", {}, b"x").status
                       for folder in ("docs", "nothere")]
            assert answers == [201, 201]  # (the same answer: no lock, no name is told)
        finally:
            drop.close()


def test_a_depth_0_lock_on_a_folder_keeps_new_members_out_at_any_depth(make, root):
    h = make(ceiling=OPEN)
    lock(h, "/docs", {"Depth": "0"})

    def put_by_another(path: str) -> int:  # (a refused PUT closes its connection)
        other = Harness("webdav", root, ceiling=OPEN, shared_root=h.root)
        other.services.locks = h.services.locks
        try:
            return ask(other, "PUT", path, {}, b"x").status
        finally:
            other.close()

    assert put_by_another("/docs/new.txt") == 423
    assert put_by_another("/docs/sub/new.txt") == 423
    assert put_by_another("/free/new.txt") == 201
    assert not (root / "docs" / "sub").exists()


def test_a_busy_lock_table_is_an_answer_at_once_not_a_wait(make):
    import sqlite3

    h = make(ceiling=OPEN)
    lock(h, "/f.txt")  # (the table exists now)
    other = sqlite3.connect(h.services.locks.path, isolation_level=None)
    try:
        other.execute("begin immediate")  # another process's change, under way
        reply = ask(h, "LOCK", "/docs/a.txt", {}, LOCKINFO)
        assert reply.status == 503 and reply.headers["retry-after"] == "1"
        assert ask(h, "DELETE", "/docs").status == 204  # (reading it goes on: no lock here)
        assert ask(h, "DELETE", "/f.txt").status == 423  # (nor a lock's token: f.txt's)
    finally:
        other.execute("rollback")
        other.close()
    assert ask(h, "LOCK", "/g.txt", {}, LOCKINFO).status == 201  # (free again: a new file)


def test_properties_in_the_xml_namespace_are_written_well_formed(make):
    h = make(ceiling=OPEN)
    patch = (b'<D:propertyupdate xmlns:D="DAV:"><D:set><D:prop><xml:foo>1</xml:foo>'
             b"</D:prop></D:set></D:propertyupdate>")
    for reply in (ask(h, "PROPPATCH", "/f.txt", {}, patch),
                  ask(h, "PROPFIND", "/f.txt", {"Depth": "0"},
                      b'<propfind xmlns="DAV:"><propname/></propfind>'),
                  ask(h, "PROPFIND", "/f.txt", {"Depth": "0"},
                      b'<propfind xmlns="DAV:"><prop><xml:bar/></prop></propfind>')):
        multistatus(reply)  # (parses: no reserved prefix declared)


def test_a_long_folder_of_an_account_is_never_told_in_a_bad_name(root, tmp_path):
    from muxserver.access import Access, HostNames
    from muxserver.accounts import LiveAccounts

    folder = "department-of-secret-projects-" + "x" * 40 + "/project-bluebird-" + "y" * 30
    (root / folder).mkdir(parents=True)
    users = tmp_path / "users"
    users.write_text(f"token eve eve-token-0123456789 folder={folder}\n")
    access = Access({}, Limits(), HostNames("127.0.0.1"), OPEN,
                    accounts=LiveAccounts(str(users)))
    h = Harness("webdav", root, access=access)
    try:
        h.login("eve-token-0123456789")
        for method, path, headers in (("PROPFIND", "/bad%5Cname", {"Depth": "0"}),
                                      ("PROPFIND", "/CON", {"Depth": "0"}),
                                      ("GET", "/bad%5Cname", {})):
            reply = ask(h, method, path, headers)
            assert reply.status == 400 and b"department" not in reply.body, reply
    finally:
        h.close()
