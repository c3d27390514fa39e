"""What an attacker tried, pinned: upload identities that cannot be forged or aliased,
a drop box that learns nothing, pages of other sites that change nothing and lock
nobody out, archives and listings that survive any name on disk and stay bounded,
partial files bounded in count, strict numbers, absolute-form targets, tus while a
PATCH is under way, and tokens that never look like a flag.

Each test drives the sessions in memory (session_harness.py), every route it names:
the native protocol, HTTP, and tus.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest

from muxserver import protocol, tus
from muxserver.access import READ, WRITE, Ceiling
from muxserver.digests import SHA256, Digest
from muxserver.limits import Limits
from muxserver.storage import Root, native_identity, partial_key

from .session_harness import Harness, Reply, harnesses

pytestmark = pytest.mark.timeout(60)

WRITER, OTHER = "writer-token", "other-token"
BOTH = {WRITER: frozenset({READ, WRITE}), OTHER: frozenset({READ, WRITE})}
TUS = {"Tus-Resumable": "1.0.0"}


@pytest.fixture
def make(root):
    with harnesses("http", root) as make_http, harnesses("native", root) as make_native:
        yield lambda kind, **kw: (make_http if kind == "http" else make_native)(**kw)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def meta(**fields: str) -> str:
    return ",".join(f"{k} {base64.b64encode(v.encode()).decode()}" for k, v in fields.items())


def tus_create(h: Harness, name: str, size: int, **more: str) -> Reply:
    h.send(h.wire.request("POST", "/.tus/", {"Upload-Length": str(size),
                                             "Upload-Metadata": meta(filename=name, **more),
                                             **TUS}))
    return h.replies()[-1]


def tus_patch(h: Harness, location: str, offset: int, data: bytes, **extra: str) -> Reply:
    h.send(h.wire.request("PATCH", location, {
        "Content-Type": "application/offset+octet-stream", "Content-Length": str(len(data)),
        "Upload-Offset": str(offset), **TUS, **extra}, data))
    return h.replies()[-1]


def tus_ask(h: Harness, method: str, location: str) -> Reply:
    h.send(h.wire.request(method, location, dict(TUS)))
    return h.replies()[-1]


def again(make, h: Harness) -> Harness:
    """A new connection of the same kind, with the same access policy and credentials
    (a refused request with a body closes its connection)."""
    fresh = make(h.kind, limits=h.limits, access=h.access, shared_root=h.root)
    if isinstance(h.wire.token if h.kind == "http" else None, str):
        fresh.login(h.wire.token)
    return fresh


def hidden(root: Path) -> list[str]:
    return sorted(p.name for p in root.rglob(".muxserver-*"))


# ------------------------------------------------------- 1. upload identities


def interrupted_native_put(make, name: str, data: bytes, sent: int, token: str) -> None:
    """A resumable native put of ``data`` broken off after ``sent`` bytes."""
    h = make("native", tokens=BOTH)
    h.login(token)
    h.send(protocol.encode_put(900, name, len(data), sha256(data), resumable=True)
           + data[:sent])
    h.channel.lose()


def native_held(make, name: str, data: bytes, token: str) -> int:
    h = make("native", tokens=BOTH)
    h.login(token)
    h.send(protocol.encode_partial(901, name, sha256(data), len(data)))
    reply = h.replies()[-1]
    assert reply.ok, reply
    return json.loads(reply.headers["offset"])


def test_a_tus_upload_never_reaches_a_native_partial_file(make, root):
    data = os.urandom(20_000)
    interrupted_native_put(make, "shared.bin", data, 12_000, WRITER)
    assert native_held(make, "shared.bin", data, WRITER) == 12_000
    h = make("http", tokens=BOTH)
    h.login(WRITER)
    # The same name, size and declared SHA-256 (the old ID's nonce was its first 16
    # hex digits, and so was the native partial file's key).
    location = tus_create(h, "shared.bin", len(data), sha256=sha256(data)).headers["location"]
    assert tus_ask(h, "HEAD", location).headers["upload-offset"] == "0"
    evil = os.urandom(len(data))
    assert tus_patch(h, location, 0, evil).refused("checksum_mismatch")  # whole file
    assert not (root / "shared.bin").exists()
    assert native_held(make, "shared.bin", data, WRITER) == 12_000  # untouched


def test_an_upload_id_cannot_be_forged_edited_or_guessed(make, root):
    h = make("http", tokens=BOTH)
    h.login(WRITER)
    declared = sha256(b"good")
    first = tus_create(h, "s.bin", 4, sha256=declared).headers["location"]
    second = tus_create(h, "s.bin", 4, sha256=declared).headers["location"]
    assert first != second  # not computable from the name, size and digest
    payload, _, seal = first.rsplit("/", 1)[1].partition(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    fields["h"] = ""  # drop the declared digest, keep the seal
    edited = base64.urlsafe_b64encode(json.dumps(fields).encode()).decode().rstrip("=")
    old_style = base64.urlsafe_b64encode(json.dumps(
        {"n": "s.bin", "s": 4, "h": declared[:16], "o": 0}).encode()).decode().rstrip("=")
    for forged in (f"/.tus/{edited}.{seal}", f"/.tus/{old_style}", f"/.tus/{payload}"):
        assert tus_ask(h, "HEAD", forged).status == 404
        assert tus_patch(again(make, h), forged, 0, b"evil").status == 404
    assert tus_patch(again(make, h), first, 0, b"evil").refused("checksum_mismatch")
    assert not (root / "s.bin").exists()


def test_an_upload_belongs_to_the_token_that_made_it(make, root):
    owner = make("http", tokens=BOTH)
    owner.login(WRITER)
    location = tus_create(owner, "mine.bin", 6).headers["location"]
    assert tus_patch(owner, location, 0, b"abc").status == 204
    stranger = make("http", access=owner.access)
    stranger.login(OTHER)
    for method in ("HEAD", "DELETE"):
        assert tus_ask(stranger, method, location).status == 404  # as for a guessed ID
    assert tus_patch(stranger, location, 3, b"xyz").status == 404
    assert tus_ask(again(make, owner), "HEAD", location).headers["upload-offset"] == "3"
    # and the native protocol's interrupted uploads are a token's own as well
    data = os.urandom(5000)
    interrupted_native_put(make, "n.bin", data, 2000, WRITER)
    assert native_held(make, "n.bin", data, OTHER) == 0
    assert native_held(make, "n.bin", data, WRITER) == 2000


def test_no_key_of_one_kind_of_upload_is_ever_another_kinds():
    digest = Digest(SHA256, sha256(b"x"))
    upload = tus.TusUpload("a.bin", 1, digest.hex, digest.hex[:32], False)
    native = partial_key("a.bin", b"w", native_identity(digest, None), 1)
    trailer = partial_key("a.bin", b"w", native_identity(None, 123.0), 1)
    assert len({upload.key(b"w"), native, trailer, upload.key(b"v")}) == 4
    assert upload.key(b"w").split("-")[2][0] == "u" and native.split("-")[2][0] == "n"


def test_a_native_put_of_a_file_never_takes_a_tus_uploads_bytes(make, root):
    data = os.urandom(10_000)
    h = make("http", tokens=BOTH)
    h.login(WRITER)
    location = tus_create(h, "both.bin", len(data), sha256=sha256(data)).headers["location"]
    assert tus_patch(h, location, 0, data[:4000]).status == 204
    n = make("native", tokens=BOTH)
    n.login(WRITER)
    n.send(n.wire.put("both.bin", data))
    assert n.replies()[-1].ok and (root / "both.bin").read_bytes() == data
    assert tus_ask(h, "HEAD", location).headers["upload-offset"] == "4000"  # its own


# -------------------------------------------------------- 2. the drop box


ROUTES = ["native mkdir", "native mkdir -p", "native put below", "http put below",
          "mkcol", "tus below"]


def shape(reply: Reply) -> Any:
    """What a reply tells, without what always differs (ids, dates, tus IDs)."""
    headers = {k: v for k, v in reply.headers.items()
               if k not in ("id", "date", "location", "upload-expires", "etag",
                            "content-length")}
    return reply.ok, reply.status, reply.code, headers, reply.body


def drop_box_route(make, route: str, name: str) -> Any:
    kind = "native" if route.startswith("native") else "http"
    h = make(kind, ceiling=Ceiling(upload_only=True))
    if route == "native mkdir":
        h.send(h.wire.mkdir(name))
    elif route == "native mkdir -p":
        h.send(protocol.encode_mkdir(7, name, parents=True))
    elif route == "native put below":
        h.send(h.wire.put(f"{name}/x.txt", b"data"))
    elif route == "http put below":
        h.send(h.wire.put(f"{name}/x.txt", b"data"))
    elif route == "mkcol":
        h.send(h.wire.mkdir(name))
    else:
        reply = tus_create(h, f"{name}/x.txt", 4)
        location = reply.headers.get("location", "")
        return shape(reply), shape(tus_patch(h, location, 0, b"data"))
    return shape(h.replies()[-1])


@pytest.mark.parametrize("route", ROUTES)
def test_a_drop_box_is_told_the_same_whatever_the_name_holds(make, root, route):
    (root / "dir").mkdir()
    (root / "file").write_bytes(b"secret")
    (root / "link").symlink_to("/etc")
    (root / "locked").mkdir(mode=0o000)
    try:
        answers = {state: drop_box_route(make, route, state)
                   for state in ("fresh", "dir", "file", "link", "locked")}
    finally:
        (root / "locked").chmod(0o755)
    told = {json.dumps(answer, default=repr).replace(state, "NAME")
            for state, answer in answers.items()}
    assert len(told) == 1, answers
    reply = answers["fresh"]
    assert (reply[-1] if route == "tus below" else reply)[0], reply  # and it succeeded
    assert (root / "file").read_bytes() == b"secret" and (root / "link").is_symlink()
    if "below" in route:
        assert (root / "file (2)" / "x.txt").read_bytes() == b"data"
        assert (root / "link (2)" / "x.txt").read_bytes() == b"data"
        assert (root / "dir" / "x.txt").read_bytes() == b"data"


def test_the_drop_box_keeps_going_to_the_same_place(make, root):
    (root / "taken").write_bytes(b"secret")
    h = make("native", ceiling=Ceiling(upload_only=True))
    h.send(h.wire.put("taken/a.txt", b"a") + h.wire.put("taken/b.txt", b"b"))
    assert all(r.ok for r in h.replies())
    assert sorted(os.listdir(root / "taken (2)")) == ["a.txt", "b.txt"]


def test_a_writer_that_may_not_read_may_not_remove_move_or_replace(make, root):
    (root / "there.txt").write_bytes(b"old")
    tokens = {WRITER: frozenset({WRITE, "delete"})}
    ceiling = Ceiling(allow_delete=True, allow_overwrite=True)
    for kind in ("native", "http"):
        h = make(kind, tokens=tokens, ceiling=ceiling)
        h.login(WRITER)
        before = len(h.replies())  # (the native auth reply)
        h.send(h.wire.rm("there.txt") + h.wire.rm("never.txt"))
        h.send(h.wire.mv("there.txt", "x.txt") + h.wire.mv("never.txt", "x.txt"))
        replies = h.replies()[before:]
        assert all(r.refused("not_permitted") for r in replies)
        told = [json.dumps(shape(r), default=repr).replace("there", "NAME")
                .replace("never", "NAME") for r in replies]
        assert told[0] == told[1] and told[2] == told[3]
        h.send(h.wire.put("there.txt", b"new", overwrite=True))
        assert h.replies()[-1].ok
    assert (root / "there.txt").read_bytes() == b"old"  # put beside it, never replaced


# ---------------------------------------------------- 3. pages of other sites


def browser_get(h: Harness, target: str, **headers: str) -> Reply:
    h.send(h.wire.request("GET", target, headers))
    return h.replies()[-1]


def test_a_foreign_page_cannot_lock_the_owner_out(make):
    limits = Limits(address_auth_failures=3)
    h = make("http", token=WRITER, limits=limits)
    access = h.access
    for _ in range(11):  # <img src=http://127.0.0.1:PORT/?token=x> from another site
        g = make("http", limits=limits, access=access)
        reply = browser_get(g, "/?token=x", **{"Sec-Fetch-Site": "cross-site",
                                               "Sec-Fetch-Mode": "no-cors",
                                               "Sec-Fetch-Dest": "image"})
        assert reply.status == 401
    owner = make("native", limits=limits, access=access)  # the owner's own CLI
    owner.login(WRITER)
    owner.send(owner.wire.listing())
    assert owner.replies()[-1].ok


def test_a_guesser_claiming_to_be_cross_site_gains_nothing(make):
    h = make("http", token=WRITER)
    reply = browser_get(h, "/?token=" + WRITER, **{"Sec-Fetch-Site": "cross-site"})
    assert reply.status == 401  # not even the right token is looked at
    h.send(h.wire.request("GET", "/", {"Origin": "http://evil.example",
                                       "Authorization": f"Bearer {WRITER}"}))
    assert h.replies()[-1].status == 401


CLICKED = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
           "Sec-Fetch-Dest": "document", "Sec-Fetch-User": "?1"}


def test_a_token_link_followed_from_another_site_asks_before_signing_in(make):
    h = make("http", token=WRITER)
    reply = browser_get(h, "/?token=" + WRITER, **CLICKED)
    # (no cookie yet: another site's page must not sign this browser in to an account
    # of its choosing; the sign-in page, the token filled in, signs in when asked)
    assert reply.status == 200 and "set-cookie" not in reply.headers
    assert WRITER.encode() in reply.body
    for _ in range(12):  # wrong ones that way still count: a guesser could click too
        g = make("http", access=h.access)
        browser_get(g, "/?token=guess", **CLICKED)
    assert g.replies()[-1].status == 429


def test_a_page_that_navigates_by_script_neither_bans_nor_signs_in(make):
    scripted = {**CLICKED}
    del scripted["Sec-Fetch-User"]  # (no gesture of the person: a popup's location=...)
    h = make("http", token=WRITER)
    for _ in range(12):
        g = make("http", access=h.access)
        assert browser_get(g, "/?token=guess", **scripted).status == 401
    reply = browser_get(make("http", access=h.access), "/?token=" + WRITER, **scripted)
    assert reply.status == 401 and "set-cookie" not in reply.headers  # (no login CSRF)
    owner = make("native", access=h.access)
    owner.login(WRITER)
    owner.send(owner.wire.listing())
    assert owner.replies()[-1].ok


def test_the_pages_own_requests_work_behind_a_proxy_that_rewrites_host(make, root):
    h = make("http")
    h.wire.host = "127.0.0.1"  # what nginx's default proxy_set_header Host sends
    h.send(h.wire.request("PUT", "/via-proxy.txt", {
        "Sec-Fetch-Site": "same-origin", "Origin": "https://files.example.org",
        "Content-Length": "1"}, b"x"))
    assert h.replies()[-1].status == 201


@pytest.mark.parametrize("method", ["PUT", "DELETE", "MKCOL", "MOVE", "POST", "PATCH"])
@pytest.mark.parametrize("where", [{"Sec-Fetch-Site": "cross-site"},
                                   {"Sec-Fetch-Site": "same-site"},
                                   {"Origin": "http://evil.example"},
                                   {"Origin": "null"}])
def test_a_foreign_page_changes_nothing(make, root, method, where):
    (root / "f.txt").write_bytes(b"keep")
    h = make("http", ceiling=Ceiling(allow_delete=True, allow_overwrite=True))
    target = "/.tus/" if method in ("POST", "PATCH") else "/f.txt"
    headers = {**where, "Destination": "/g.txt", "Content-Length": "3", **TUS,
               "Upload-Length": "3", "Upload-Metadata": meta(filename="t.txt")}
    h.send(h.wire.request(method, target, headers, b"new"))
    reply = h.replies()[-1]
    assert reply.status == 403 and b"another site" in reply.body and h.closing
    assert sorted(os.listdir(root)) == ["f.txt"] and (root / "f.txt").read_bytes() == b"keep"


def test_the_pages_own_requests_and_plain_clients_may_change_things(make, root):
    for i, headers in enumerate(({"Sec-Fetch-Site": "same-origin",
                                  "Origin": "http://127.0.0.1"},
                                 {"Sec-Fetch-Site": "none"}, {},
                                 {"Origin": "https://127.0.0.1:443"})):
        h = make("http")
        h.send(h.wire.request("PUT", f"/p{i}.txt", {**headers, "Content-Length": "1"}, b"x"))
        assert h.replies()[-1].status in (200, 201), headers


# ------------------------------------------- 4 and 5. archives and listings


ODD_DIRS = ["aux", "con.d", "new\nline", "back\\slash"]


def odd_tree(root: Path) -> None:
    (root / "top" / "ok").mkdir(parents=True)
    (root / "top" / "ok" / "a.txt").write_bytes(b"a")
    for name in ODD_DIRS:
        (root / "top" / name).mkdir()
        (root / "top" / name / "inside.txt").write_bytes(b"i")
        (root / "top" / f"file-{name}").write_bytes(b"f")
    deep = root / "top" / "deep"
    for level in range(70):
        deep = deep / f"d{level}"
    deep.mkdir(parents=True)
    (deep / "bottom.txt").write_bytes(b"b")


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_an_odd_folder_never_breaks_an_archive_of_its_ancestors(make, root, kind, tmp_path):
    import tarfile
    import zipfile

    odd_tree(root)
    h = make("http")
    h.send(h.wire.request("GET", f"/?download={kind}"))
    reply = h.replies()[-1]
    assert reply.status == 200 and not h.closing
    archive = tmp_path / f"a.{kind}"
    archive.write_bytes(reply.body)
    if kind == "zip":
        with zipfile.ZipFile(archive) as z:
            names = z.namelist()
            assert z.testzip() is None
            listed = z.read("root/muxserver-left-out.txt").decode()
    else:
        with tarfile.open(archive) as t:
            names = [m.name + ("/" if m.isdir() else "") for m in t.getmembers()]
            listed = t.extractfile("root/muxserver-left-out.txt").read().decode()
    assert "root/top/ok/a.txt" in names and "root/top/file-aux" in names
    assert any(n.endswith("/d61/") for n in names)  # 64 levels below the root, no more
    assert not any("d62" in n or "slash" in n or "line" in n for n in names)
    assert not any(n.startswith(("root/top/aux", "root/top/con.d")) for n in names)
    for name in ("top/aux", "top/con.d", "top/new\\x0aline", "top/back\\slash",
                 "top/file-new\\x0aline", "top/file-back\\slash"):
        assert name in listed, listed
    assert "top/deep/d0/" in listed and "nested too deep" in listed


def test_native_ls_r_and_http_listings_leave_odd_names_out_and_say_so(make, root):
    odd_tree(root)
    n = make("native")
    n.send(protocol.encode_list(5, "", recursive=True))
    replies = n.replies()
    assert all(r.ok for r in replies)
    assert json.loads(replies[-1].headers["left_out"]) == len(ODD_DIRS) + 2 + 1
    names = [json.loads(line)["name"] for r in replies for line in r.body.splitlines()]
    assert "top/ok/a.txt" in names and "top/aux" not in names
    h = make("http")
    h.send(h.wire.request("GET", "/top/?format=json"))
    listing = json.loads(h.replies()[-1].body)
    assert "6 entries left out" in listing["left_out"]
    assert sorted(e["name"] for e in listing["entries"]) == [
        "top/deep", "top/file-aux", "top/file-con.d", "top/ok"]
    h.send(h.wire.request("GET", "/top/", {"Accept": "text/plain"}))
    assert "# 6 entries left out" in h.replies()[-1].body.decode()


def steps_of(h: Harness, request: bytes, *, read: bool) -> int:
    """Send ``request``; return how many loop callbacks ran its job (one per step)."""
    h.session.data_received(memoryview(bytearray(request)))
    steps = 0
    while h.loop.ready:
        steps += 1
        h.loop.ready.popleft()()
        if read:
            h.channel.drain()
    return steps


@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_every_member_of_an_archive_is_a_bounded_step(make, root, kind):
    from muxserver.http_folders import MEMBERS_PER_STEP

    (root / "empty").mkdir()
    for i in range(20 * MEMBERS_PER_STEP):
        (root / "empty" / f"{i}.txt").write_bytes(b"")
    for i in range(5 * MEMBERS_PER_STEP):
        (root / "empty" / f"d{i}").mkdir()
    h = make("http")
    steps = steps_of(h, h.wire.request("GET", f"/empty/?download={kind}"), read=True)
    assert steps >= 25, steps  # a step per MEMBERS_PER_STEP members at most
    assert h.session.job is None and h.replies()[-1].status == 200



def test_a_file_that_shrinks_under_a_tar_is_filled_in_bounded_steps(make, root):
    """A tar header promised the size: the missing bytes are zeros, a step's worth at a
    time, never one block the size of what went missing."""
    import tarfile

    from muxserver.http_folders import ARCHIVE_STEP

    (root / "d").mkdir()
    (root / "d" / "big.bin").write_bytes(b"b" * (16 * ARCHIVE_STEP))
    h = make("http")
    real = h.root.open_file

    def opened_then_truncated(name: str, *args: Any, **kw: Any) -> Any:
        opened = real(name, *args, **kw)
        os.truncate(root / name, 0)
        return opened

    h.root.open_file = opened_then_truncated  # type: ignore[method-assign]
    steps = steps_of(h, h.wire.request("GET", "/d/?download=tar"), read=True)
    assert steps >= 16, steps
    with tarfile.open(fileobj=io.BytesIO(h.replies()[-1].body)) as tar:
        member = tar.extractfile("d/big.bin")
        assert member is not None and member.read() == bytes(16 * ARCHIVE_STEP)

def test_an_archive_nobody_reads_stops_at_the_high_water_mark(make, root):
    (root / "many").mkdir()
    for i in range(3000):
        (root / "many" / f"{'n' * 120}{i}.txt").write_bytes(b"")
    limits = Limits(output_high_water=64 * 1024, output_low_water=16 * 1024)
    h = make("http", limits=limits)
    steps_of(h, h.wire.request("GET", "/many/?download=zip"), read=False)
    assert h.session.job is not None  # waiting for the reader
    assert h.channel.out.total < limits.output_high_water + 32 * 1024  # one step's worth


def test_a_huge_listing_of_names_left_out_is_still_a_listing_in_steps(make, root):
    for i in range(3000):
        (root / f"aux.{i}").write_bytes(b"")
    n = make("native")
    steps = steps_of(n, protocol.encode_list(3, ""), read=True)
    assert steps >= 2 and json.loads(n.replies()[-1].headers["left_out"]) == 3000
    h = make("http")
    steps = steps_of(h, h.wire.request("GET", "/?format=json"), read=True)
    assert steps >= 3000 // 1000  # (ROWS_PER_STEP entries met per step)


# ------------------------------------------------------ 6. partials in count


def test_a_writer_may_keep_only_so_many_unfinished_uploads(make, root):
    limits = Limits(partials_per_writer=3, partial_count=5)
    h = make("http", tokens=BOTH, limits=limits)
    h.login(WRITER)
    made = [tus_create(h, f"u{i}.bin", 1 << 30) for i in range(4)]
    assert [r.status for r in made] == [201, 201, 201, 507]
    assert b"unfinished uploads" in made[-1].body and b"give up" in made[-1].body
    assert tus_ask(h, "DELETE", made[0].headers["location"]).status == 204
    assert tus_create(h, "again.bin", 10).status == 201  # room again
    o = make("http", limits=limits, access=h.access, shared_root=h.root)
    o.login(OTHER)
    made = [tus_create(o, f"o{i}.bin", 10) for i in range(3)]
    assert [r.status for r in made] == [201, 201, 507]  # the server's count: 5
    assert b"the server keeps 5" in made[-1].body
    assert len(hidden(root)) == 5


def test_interrupted_native_uploads_over_the_count_evict_the_oldest(make, root):
    limits = Limits(partials_per_writer=2)
    data = [os.urandom(3000) for _ in range(3)]
    first = make("native", tokens=BOTH, limits=limits)
    for i, blob in enumerate(data):
        h = make("native", limits=limits, access=first.access, shared_root=first.root)
        h.login(WRITER)
        h.send(protocol.encode_put(1, f"k{i}.bin", len(blob), sha256(blob), resumable=True)
               + blob[:1000])
        h.channel.lose()
        assert len(hidden(root)) <= 2
    assert native_held(make, "k0.bin", data[0], WRITER) == 0  # the oldest went
    assert native_held(make, "k2.bin", data[2], WRITER) == 1000


def test_the_count_is_kept_across_a_restart(root):
    first = Root(root, partials_per_writer=2)
    for i in range(2):
        first.create_partial(f"p{i}.bin", partial_key(f"p{i}.bin", b"w", f"u{i:016x}", 9))
    first.close()
    again = Root(root, partials_per_writer=2)
    again.sweep_temporary_files()
    assert again.partials.full_for(partial_key("x", b"w", "u" + "0" * 16, 9).split("-")[1])
    again.close()


# ----------------------------------------------------------- 7. numbers


@pytest.mark.parametrize("value", ["\u00b2", "9" * 5000, "+5", "1_0", "-1", "",
                                   "\u0661\u0662", "0x10", "5.0"])
def test_tus_numbers_are_plain_ascii_digits(make, value):
    h = make("http")
    h.send(h.wire.request("POST", "/.tus/", {"Upload-Length": value, **TUS,
                                             "Upload-Metadata": meta(filename="n.bin")}))
    reply = h.replies()[-1]
    assert reply.status == 400 and b"Upload-Length" in reply.body
    location = tus_create(h, "m.bin", 10).headers["location"]
    h.send(h.wire.request("PATCH", location, {
        "Content-Type": "application/offset+octet-stream", "Content-Length": "0",
        "Upload-Offset": value, **TUS}))
    assert h.replies()[-1].status == 400


@pytest.mark.parametrize("value", ["bytes=\u0661-\u0662", "bytes=1_0-20", "bytes=+1-2",
                                   "bytes=-" + "9" * 5000])
def test_a_range_of_odd_numbers_is_ignored(make, root, value):
    (root / "r.txt").write_bytes(b"0123456789" * 3)
    h = make("http")
    h.send(h.wire.request("GET", "/r.txt", {"Range": value}))
    reply = h.replies()[-1]
    assert reply.status == 200 and len(reply.body) == 30


# -------------------------------------------------- 8. absolute-form targets


def test_an_absolute_form_target_is_served_for_this_server(make, root):
    (root / "x.txt").write_bytes(b"hello")
    h = make("http")
    h.send(h.wire.request("GET", "http://127.0.0.1:9009/x.txt"))
    assert h.replies()[-1].status == 200 and h.replies()[-1].body == b"hello"
    h.send(h.wire.request("GET", "HTTP://localhost/?format=json"))
    assert h.replies()[-1].status == 200
    h.send(h.wire.request("GET", "http://evil.example/x.txt"))
    assert h.replies()[-1].status == 403  # another authority: checked as a Host is


# -------------------------------------------------------- 9. tus in flight


def test_a_tus_head_during_a_patch_says_wait_never_404(make, root):
    h = make("http")
    location = tus_create(h, "slow.bin", 10).headers["location"]
    h.send(h.wire.request("PATCH", location, {
        "Content-Type": "application/offset+octet-stream", "Content-Length": "10",
        "Upload-Offset": "0", **TUS}) + b"01234")  # half the piece: under way
    other = make("http")
    for method in ("HEAD", "DELETE"):
        reply = tus_ask(other, method, location)
        assert reply.status == 423 and reply.headers["retry-after"] == "1"
    reply = tus_patch(other, location, 0, b"0123456789")
    assert reply.status == 423
    h.send(b"56789")
    assert h.replies()[-1].status == 204
    assert (root / "slow.bin").read_bytes() == b"0123456789"


def test_the_tus_address_is_no_name(make, root):
    h = make("http")
    assert tus_create(h, ".tus/x", 3).status == 400
    n = make("native")
    n.send(n.wire.put(".tus/x", b"abc"))
    assert n.replies()[-1].refused("bad_name")
    assert not (root / ".tus").exists()


# ------------------------------------------------------------- 10. tokens


def test_a_new_token_never_begins_with_a_dash(monkeypatch):
    import secrets

    from muxserver.cli_tokens import new_token

    drawn = iter(["-K4Qsbflag", "-again", "good-token_"])
    monkeypatch.setattr(secrets, "token_urlsafe", lambda n: next(drawn))
    assert new_token() == "good-token_"
    monkeypatch.undo()
    assert not any(new_token().startswith("-") for _ in range(500))


# ------------------------------------------- found on review: each pinned, every route


@pytest.mark.parametrize("kind", ["native", "http"])
def test_storing_a_name_tells_a_drop_box_nothing_through_its_kept_uploads(make, root, kind):
    """A file stored supersedes the writer's own kept uploads of the name it asked for,
    whether it landed there or beside it: the answers are the same either way."""
    told = []
    for exists in (False, True):
        name = f"secret-{exists}.txt"
        if exists:
            (root / name).write_bytes(b"s")
        h = make("http", ceiling=Ceiling(upload_only=True))
        location = tus_create(h, name, 100).headers["location"]
        p = make(kind, access=h.access, shared_root=h.root)  # (one server)
        p.send(p.wire.put(name, b"x"))
        assert p.replies()[-1].ok
        told.append(tus_ask(again(make, h), "HEAD", location).status)
    assert told == [404, 404]


def test_another_writers_put_leaves_an_upload_under_way_alone(make, root):
    a = make("http", tokens=BOTH)
    a.login(WRITER)
    location = tus_create(a, "report.pdf", 10).headers["location"]
    assert tus_patch(a, location, 0, b"01234").status == 204
    b = make("http", access=a.access, shared_root=a.root)
    b.login(OTHER)
    b.send(b.wire.put("report.pdf", b"mine"))
    assert b.replies()[-1].status == 201
    assert tus_ask(again(make, a), "HEAD", location).headers["upload-offset"] == "5"


@pytest.mark.parametrize("route", ["native put", "http put", "mkcol", "native mkdir"])
def test_a_long_name_tells_a_drop_box_nothing_either(make, root, route):
    name = "a" * 253  # no room for " (2)" beside it: the name is cut to make room
    answers = []
    for exists in (False, True):
        where = root / str(exists)
        where.mkdir()
        if exists:
            (where / name).write_bytes(b"s")
        h = make("native" if route.startswith("native") else "http",
                 ceiling=Ceiling(upload_only=True))
        target = f"{exists}/{name}"
        h.send(h.wire.put(target, b"x") if "put" in route else h.wire.mkdir(target))
        answers.append(shape(h.replies()[-1]))
    assert json.dumps(answers[0], default=repr).replace("False", "X") == \
        json.dumps(answers[1], default=repr).replace("True", "X")
    assert answers[0][0] and (root / "True" / name).read_bytes() == b"s"


def test_one_writers_kept_uploads_never_evict_anothers(make, root):
    limits = Limits(partial_count=2, partials_per_writer=2)
    a = make("http", tokens=BOTH, limits=limits)
    a.login(WRITER)
    location = tus_create(a, "a.bin", 10).headers["location"]
    for i in range(3):  # the other writer's interrupted uploads: over the server's count
        n = make("native", limits=limits, access=a.access, shared_root=a.root)
        n.login(OTHER)
        blob = os.urandom(3000)
        n.send(protocol.encode_put(1, f"b{i}.bin", len(blob), sha256(blob), resumable=True)
               + blob[:1000])
        n.channel.lose()
    assert tus_ask(again(make, a), "HEAD", location).status == 200  # still there
    assert len(a.root.partials) <= 2


def test_an_upload_being_written_still_counts(make, root):
    limits = Limits(partial_count=2, partials_per_writer=2)
    a = make("http", tokens=BOTH, limits=limits)
    a.login(WRITER)
    location = tus_create(a, "a.bin", 10).headers["location"]
    a.send(a.wire.request("PATCH", location, {
        "Content-Type": "application/offset+octet-stream", "Content-Length": "5",
        "Upload-Offset": "0", **TUS}) + b"01")  # under way: its partial file is claimed
    b = make("http", limits=limits, access=a.access, shared_root=a.root)
    b.login(OTHER)
    made = [tus_create(b, f"b{i}.bin", 10).status for i in range(2)]
    assert made == [201, 507]  # the one being written is counted
    a.send(b"234")
    assert a.replies()[-1].status == 204


def test_a_piece_that_fails_to_be_written_keeps_the_pieces_before_it(make, root,
                                                                     monkeypatch):
    import errno

    from muxserver.storage import uploads

    h = make("http")
    location = tus_create(h, "big.bin", 20).headers["location"]
    assert tus_patch(h, location, 0, b"0123456789").status == 204
    real_write = uploads.os.write

    def full(fd: int, data: Any) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(uploads.os, "write", full)
    assert tus_patch(again(make, h), location, 10, b"abcdefghij").status == 507
    monkeypatch.setattr(uploads.os, "write", real_write)
    assert tus_ask(again(make, h), "HEAD", location).headers["upload-offset"] == "10"



@pytest.mark.parametrize("kind", ["native", "tus"])
def test_a_resumed_upload_that_fails_its_checksum_leaves_nothing_counted(make, root, kind):
    """Its partial file goes, and its entry in the books with it: nothing stays charged
    to the budget, the count, or its writer's count."""
    data = os.urandom(5000)
    if kind == "native":
        h = make("native")
        h.send(protocol.encode_put(1, "f.bin", len(data), sha256(data), resumable=True)
               + data[:2000])
        h.channel.lose()
        h = make("native", shared_root=h.root)
        h.send(protocol.encode_put(2, "f.bin", 3000, sha256(data), resumable=True,
                                   offset=2000) + b"x" * 3000)
    else:
        h = make("http")
        location = tus_create(h, "f.bin", 5000, sha256=sha256(data)).headers["location"]
        assert tus_patch(h, location, 0, data[:2000]).status == 204
        h = again(make, h)
        tus_patch(h, location, 2000, b"x" * 3000)
    assert h.replies()[-1].refused("checksum_mismatch")
    assert hidden(root) == [] and len(h.root.partials) == 0 and h.root.partials.bytes == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="needs to act as another user")
@pytest.mark.parametrize("route", ["native put", "http put", "mkcol", "native mkdir"])
def test_a_drop_box_below_a_folder_it_may_not_search_is_refused_not_walked(make, root,
                                                                           route):
    """A folder that may be read but not searched refuses every name alike: the walk
    beside taken names would never end; the request is refused instead."""
    root.chmod(0o755)
    (root / "locked").mkdir()
    (root / "locked").chmod(0o744)  # others: r--, no x
    h = make("native" if route.startswith("native") else "http",
             ceiling=Ceiling(upload_only=True))
    target = "locked/sub/f.txt"
    pid = os.fork()
    if pid == 0:  # (a child as nobody: root passes every permission check)
        try:
            signal.alarm(60)  # (were it to walk forever, it would not outlive the test)
            os.setgid(65534)
            os.setuid(65534)
            h.send(h.wire.put(target, b"x") if "put" in route else h.wire.mkdir(target))
            os._exit(0 if h.replies()[-1].refused("forbidden") else 1)
        except BaseException:
            os._exit(2)
    assert os.waitpid(pid, 0)[1] == 0


def test_a_removal_the_disk_cannot_make_durable_is_an_error_reply(make, root, monkeypatch):
    import errno

    from muxserver.storage import directories

    (root / "f.txt").write_bytes(b"f")
    (root / "t").mkdir()
    (root / "t" / "g.txt").write_bytes(b"g")

    def failing(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(directories.os, "fsync", failing)
    h = make("native", ceiling=Ceiling(allow_delete=True))
    for request in (h.wire.rm("f.txt"), h.wire.rm("t", recursive=True)):
        h.send(request)
        assert h.replies()[-1].refused("io_error")  # an answer, and the connection lives


@pytest.mark.parametrize("destination", ["http://[::1/b", "http://[zz]/b", "//[/b"])
def test_a_move_to_a_destination_that_is_no_url_is_a_bad_request(make, root, destination):
    (root / "a.txt").write_bytes(b"a")
    h = make("http", ceiling=Ceiling(allow_delete=True))
    h.send(h.wire.request("MOVE", "/a.txt", {"Destination": destination}))
    assert h.replies()[-1].status == 400 and (root / "a.txt").exists()

def opened_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.mark.parametrize("target", ["/", "/?format=json", "/?download=zip", "/?download=tar"])
def test_a_head_of_a_listing_or_an_archive_leaks_no_descriptor(make, root, target):
    (root / "d").mkdir()
    h = make("http")
    h.send(h.wire.request("HEAD", target))
    before = opened_descriptors()
    for _ in range(10):
        h.send(h.wire.request("HEAD", target))
    assert opened_descriptors() == before


def test_a_listing_that_never_got_its_first_step_leaks_no_descriptor(make, root):
    (root / "d").mkdir()
    h = make("http", limits=Limits(output_high_water=100, output_low_water=10))
    (root / "big.txt").write_bytes(b"b" * 5000)
    before = opened_descriptors()
    h.send(h.wire.get("big.txt") + h.wire.request("GET", "/d/"), read=False)
    h.channel.lose()  # (the listing's job waited for a reader that never came)
    assert opened_descriptors() == before


@pytest.mark.parametrize("request_", ["zip", "tar", "ls -r", "rm -r"])
def test_a_tree_of_empty_folders_is_walked_in_bounded_steps(make, root, request_):
    for i in range(600):
        (root / "t" / f"d{i}").mkdir(parents=True)
    kind = "native" if request_ in ("ls -r", "rm -r") else "http"
    h = make(kind, ceiling=Ceiling(allow_delete=True))
    opened = [0]
    real = h.root.open_dir

    def counting(*args: Any, **kw: Any) -> int:
        opened[0] += 1
        return real(*args, **kw)

    h.root.open_dir = counting  # type: ignore[method-assign]
    if request_ == "ls -r":
        request = protocol.encode_list(2, "t", recursive=True)
    elif request_ == "rm -r":
        request = h.wire.rm("t", recursive=True)
    else:
        request = h.wire.request("GET", f"/t/?download={request_}")
    h.session.data_received(memoryview(bytearray(request)))
    most = 0
    while h.loop.ready:
        before = opened[0]
        h.loop.ready.popleft()()
        h.channel.drain()
        most = max(most, opened[0] - before)
    assert h.replies()[-1].ok
    assert most <= 300, most  # (600 folders in one step before)
