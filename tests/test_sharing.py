"""Sharing with people: named users, folder scope, sessions, share links, the live user
file; the rules run against both sessions in memory (session_harness.py), the command
line and a running server end to end. The same in a real browser: test_browser.py.
"""

from __future__ import annotations

import json
import os
import signal
import stat
import urllib.parse
from pathlib import Path

import pytest

from muxserver import protocol
from muxserver.access import Access, Ceiling, HostNames
from muxserver.accounts import (
    TOKEN,
    USER,
    Account,
    LiveAccounts,
    hash_password,
    parse_line,
    write_lines,
)
from muxserver.limits import Limits
from muxserver.seals import SESSION, SHARE, Seal
from muxserver.shares import BOOK_NAME, ShareBook

from .conftest import run_cli, spawn_server, stop_process
from .session_harness import harnesses

pytestmark = pytest.mark.timeout(120)

ALICE_PW, BOB_PW = "alice's password", "bob's password"
CI_TOKEN = "ci-token-0123456789abcdef"
HASHES: dict[str, str] = {}  # (Argon2id takes a while: hashed once per password)


def hashed(password: str) -> str:
    if password not in HASHES:
        HASHES[password] = hash_password(password)
    return HASHES[password]


def user_lines(**extra: str) -> list[str]:
    lines = [Account(USER, "alice", hashed(ALICE_PW), folder="friends/alice").line(),
             Account(USER, "bob", hashed(BOB_PW)).line(),
             Account(TOKEN, "ci", CI_TOKEN, frozenset({"read"}), "friends").line()]
    return lines + [Account(USER, name, hashed(pw)).line() for name, pw in extra.items()]


class World:
    """A root with folders for several people, a user file, and an access policy with
    clocks the test moves (the monotonic one for the file's checks, the wall one for
    expiries)."""

    def __init__(self, tmp_path: Path, limits: Limits | None = None) -> None:
        self.root = tmp_path / "root"
        for folder in ("friends/alice/sub", "friends/carol", "private", "shared"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)
        (self.root / "friends/alice/a.txt").write_text("alice's")
        (self.root / "friends/carol/c.txt").write_text("carol's")
        (self.root / "private/s.txt").write_text("secret")
        (self.root / "shared/poster.txt").write_text("poster")
        self.users = tmp_path / "users"
        write_lines(str(self.users), user_lines())
        self.clock, self.wall = [0.0], [2_000_000_000.0]
        self.limits = limits or Limits()
        self.accounts = LiveAccounts(str(self.users), clock=lambda: self.clock[0])
        self.seal = Seal.from_file(str(tmp_path / "secret"))
        self.shares = ShareBook(str(self.root / BOOK_NAME), self.seal,
                                clock=lambda: self.clock[0], wall=lambda: self.wall[0])
        self.access = Access(None, self.limits, HostNames("127.0.0.1"),
                             Ceiling(allow_delete=True, allow_overwrite=True),
                             clock=lambda: self.clock[0], accounts=self.accounts,
                             seal=self.seal, shares=self.shares, wall=lambda: self.wall[0])

    def rewrite(self, lines: list[str]) -> None:
        """A new user file, seen once the server looks again (a second later)."""
        write_lines(str(self.users), lines)
        self.clock[0] += 1.0


@pytest.fixture(params=["native", "http", "webdav"])
def kind(request) -> str:
    return request.param


@pytest.fixture
def world(tmp_path) -> World:
    return World(tmp_path)


@pytest.fixture
def make(kind, world):
    with harnesses(kind, world.root) as make_harness:
        yield lambda **kw: make_harness(access=kw.pop("access", world.access),
                                        limits=kw.pop("limits", world.limits), **kw)


def names_listed(reply) -> list[str]:
    assert reply.ok, reply
    body = reply.body.decode()
    if "content-type" in reply.headers:  # HTTP's JSON listing
        return sorted(entry["name"] for entry in json.loads(body)["entries"])
    return sorted(json.loads(line)["name"] for line in body.splitlines() if line.strip())


def listing(h, path: str = ""):
    if h.kind != "native":
        h.send(h.wire.request("GET", "/" + path + ("/" if path else "") + "?format=json"))
    else:
        h.send(h.wire.listing(path))
    return h.replies()[-1]


# --------------------------------------------------------------- names and passwords


def test_a_user_signs_in_with_a_name_and_password(make):
    h = make()
    h.sign_in("bob", BOB_PW)
    h.send(h.wire.get("private/s.txt"))
    assert h.replies()[-1].ok and h.replies()[-1].body == b"secret"
    h = make()
    h.sign_in("bob", "not bob's password")
    h.send(h.wire.get("private/s.txt"))
    assert h.replies()[-1].refused("unauthorized")
    said = [r.body.decode() + r.headers.get("message", "") for r in h.replies()]
    assert any("wrong name or password" in text for text in said)  # (native: the auth's)


def test_a_password_is_hashed_once_then_remembered(make, world):
    for _ in range(3):
        h = make()
        h.sign_in("bob", BOB_PW)
        h.send(h.wire.get("private/s.txt"))
        assert h.replies()[-1].ok
    assert world.access.passwords.slow_checks == 1


def test_wrong_passwords_and_wrong_tokens_share_one_back_off(make, tmp_path):
    world = World(tmp_path, Limits(address_auth_failures=3, auth_backoff=60.0))
    for wrong in ("password", "password", "token"):
        h = make(access=world.access, limits=world.limits)
        if wrong == "token":
            h.login("a guessed token")
        else:
            h.sign_in("alice", "guess")
        h.send(h.wire.get("a.txt"))
        assert h.replies()[0].refused("unauthorized")
    h = make(access=world.access, limits=world.limits)
    h.sign_in("alice", ALICE_PW)  # the right password, now refused too
    h.send(h.wire.get("a.txt"))
    assert h.replies()[-1].refused("too_many_attempts")


def test_an_unknown_name_is_told_like_a_wrong_password(make):
    h = make()
    h.sign_in("mallory", "anything")
    h.send(h.wire.get("a.txt"))
    refusal = h.replies()[-1]
    assert refusal.refused("unauthorized")
    assert b"mallory" not in refusal.body and "mallory" not in json.dumps(refusal.headers)


# ------------------------------------------------------------------ folder scope


def test_a_user_limited_to_a_folder_sees_it_as_the_root(make, world):
    h = make()
    h.sign_in("alice", ALICE_PW)
    assert names_listed(listing(h)) == ["a.txt", "sub"]
    h.send(h.wire.get("a.txt"))
    assert h.replies()[-1].body == b"alice's"
    h.send(h.wire.put("new.txt", b"from alice"))
    assert h.replies()[-1].ok
    assert (world.root / "friends/alice/new.txt").read_bytes() == b"from alice"
    h.send(h.wire.mkdir("made"))
    assert h.replies()[-1].ok and (world.root / "friends/alice/made").is_dir()
    h.send(h.wire.mv("new.txt", "made/moved.txt"))
    assert h.replies()[-1].ok and (world.root / "friends/alice/made/moved.txt").exists()
    h.send(h.wire.rm("made", recursive=True))
    assert h.replies()[-1].ok and not (world.root / "friends/alice/made").exists()


def told(answer) -> str:
    return answer.body.decode() + json.dumps(answer.headers)


@pytest.mark.parametrize("name", ["../carol/c.txt", "../../private/s.txt", "/private/s.txt",
                                  "..", "../carol", "friends/../../carol/c.txt"])
def test_no_name_leads_above_a_users_folder(make, world, name):
    h = make()
    h.sign_in("alice", ALICE_PW)
    for request in (h.wire.get(name), h.wire.header_only(name), h.wire.rm(name),
                    h.wire.mv("a.txt", name), h.wire.mv(name, "stolen.txt"),
                    h.wire.mkdir(name + "/x"), h.wire.put(name + "/x.txt", b"planted")):
        h.send(request)
        if h.closing:  # (HTTP closes after refusing a body: a new connection)
            h = make()
            h.sign_in("alice", ALICE_PW)
            continue
        answer = h.replies()[-1]
        assert not answer.ok, (name, answer)
        assert "friends/alice" not in told(answer) and "alice/" not in told(answer)
    assert (world.root / "friends/carol/c.txt").read_text() == "carol's"
    assert (world.root / "private/s.txt").read_text() == "secret"
    assert (world.root / "friends/alice/a.txt").read_text() == "alice's"
    assert not list(world.root.rglob("x.txt")) and not list(world.root.rglob("stolen.txt"))


@pytest.mark.parametrize("name", ["private/s.txt", "friends/carol/c.txt", "carol/c.txt"])
def test_what_is_above_a_users_folder_does_not_exist_for_them(make, world, name):
    h = make()
    h.sign_in("alice", ALICE_PW)
    for request in (h.wire.get(name), h.wire.header_only(name), h.wire.rm(name),
                    h.wire.mv(name, "stolen.txt")):
        h.send(request)
        answer = h.replies()[-1]
        assert answer.refused("not_found"), (name, answer)
        assert "friends/alice" not in told(answer) and b"secret" not in answer.body
    h.send(h.wire.put(name, b"her own"))  # the same name, written: inside her folder
    assert h.replies()[-1].ok
    assert (world.root / "friends/alice" / name).read_bytes() == b"her own"
    assert (world.root / "private/s.txt").read_text() == "secret"
    assert (world.root / "friends/carol/c.txt").read_text() == "carol's"


def test_the_folder_itself_cannot_be_removed_or_moved_by_its_user(make, world):
    h = make()
    h.sign_in("alice", ALICE_PW)
    h.send(h.wire.rm("", recursive=True) if h.kind == "native" else h.wire.request("DELETE", "/"))
    assert not h.replies()[-1].ok
    h.send(h.wire.mv("", "elsewhere"))
    assert not h.replies()[-1].ok
    assert (world.root / "friends/alice/a.txt").exists()


def test_a_symbolic_link_in_a_users_folder_does_not_lead_out(make, world):
    os.symlink("../../private", world.root / "friends/alice/out")
    h = make()
    h.sign_in("alice", ALICE_PW)
    h.send(h.wire.get("out/s.txt"))
    assert h.replies()[-1].refused("forbidden") or h.replies()[-1].refused("not_found")
    assert not listing(h, "out").ok


def test_an_archive_of_a_users_root_holds_their_folder_only(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.sign_in("alice", ALICE_PW)
        h.send(h.wire.request("GET", "/?download=tar"))
        reply = h.replies()[-1]
        assert reply.ok and b"alice's" in reply.body
        assert b"carol" not in reply.body and b"secret" not in reply.body
        assert b"friends" not in reply.body and "alice.tar" in reply.headers[
            "content-disposition"]


def test_a_tus_upload_of_a_user_lands_in_their_folder(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.sign_in("alice", ALICE_PW)
        meta = "filename " + "dGh1cy50eHQ="  # thus.txt
        h.send(h.wire.request("POST", "/.tus/", {"Tus-Resumable": "1.0.0",
                                                 "Upload-Length": "4", "Upload-Metadata": meta}))
        created = h.replies()[-1]
        assert created.status == 201
        location = created.headers["location"]
        assert "friends" not in location
        h.send(h.wire.request("PATCH", urllib.parse.urlsplit(location).path, {
            "Tus-Resumable": "1.0.0", "Upload-Offset": "0", "Content-Length": "4",
            "Content-Type": "application/offset+octet-stream"}, b"tusd"))
        assert h.replies()[-1].status == 204
        assert (world.root / "friends/alice/thus.txt").read_bytes() == b"tusd"
        h.send(h.wire.request("POST", "/.tus/", {
            "Tus-Resumable": "1.0.0", "Upload-Length": "1",
            "Upload-Metadata": "filename Li4vY2Fyb2wveC50eHQ="}))  # ../carol/x.txt
        assert not h.replies()[-1].ok


def test_a_token_with_a_folder_and_read_only(make, world):
    h = make()
    h.login(CI_TOKEN)  # token "ci": folder friends, read
    assert names_listed(listing(h)) == ["alice", "carol"]
    h.send(h.wire.put("alice/x.txt", b"no"))
    assert h.replies()[-1].refused("not_permitted")
    h = make()
    h.login(CI_TOKEN)
    h.send(h.wire.get("s.txt"))
    assert h.replies()[-1].refused("not_found")


# ------------------------------------------------------------------- the live file


def test_a_user_added_changed_or_removed_takes_effect_without_a_restart(make, world):
    h = make()
    h.sign_in("dave", "dave's password")
    h.send(h.wire.get("private/s.txt"))
    assert h.replies()[-1].refused("unauthorized")
    world.rewrite(user_lines(dave="dave's password"))  # added
    h = make()
    h.sign_in("dave", "dave's password")
    h.send(h.wire.get("private/s.txt"))
    assert h.replies()[-1].ok
    world.rewrite(user_lines(dave="a new password"))  # changed
    h = make()
    h.sign_in("dave", "dave's password")
    h.send(h.wire.get("private/s.txt"))
    assert h.replies()[-1].refused("unauthorized")
    world.rewrite(user_lines())  # removed: a connection signed in before loses it too
    h.send(h.wire.get("private/s.txt"))
    assert h.replies()[-1].refused("unauthorized")


def test_the_file_is_looked_at_at_most_once_a_second(world):
    write_lines(str(world.users), user_lines(dave="pw"))
    assert "dave" not in world.accounts.get().users  # (no second has passed)
    world.clock[0] += 1.0
    assert "dave" in world.accounts.get().users


def test_sighup_reads_the_file_at_once(world):
    write_lines(str(world.users), user_lines(dave="pw"))
    world.accounts.reload_now()
    assert "dave" in world.accounts.get().users


def test_a_broken_file_keeps_the_last_good_one_and_says_why(world, caplog):
    world.users.write_text(world.users.read_text() + "user eve no-hash-here\n")
    world.clock[0] += 1.0
    with caplog.at_level("WARNING", logger="muxserver"):
        accounts = world.accounts.get()
    assert set(accounts.users) == {"alice", "bob"}
    assert "no password hash" in world.accounts.problem
    assert any("keeping the accounts read before" in r.getMessage() for r in caplog.records)
    world.users.unlink()
    world.clock[0] += 1.0
    assert set(world.accounts.get().users) == {"alice", "bob"}  # (gone: kept too)


def test_the_file_format():
    assert parse_line("# a comment") is None and parse_line("   ") is None
    assert parse_line("correct horse battery staple").secret == (
        "correct horse battery staple")  # (a pass phrase is one token)
    legacy = parse_line("s3cret-token read,write")
    assert legacy == Account(TOKEN, "", "s3cret-token", frozenset({"read", "write"}))
    named = parse_line("token ci T0K-T0K-T0K rights=read folder=a%20b/c")
    assert (named.name, named.secret, named.rights, named.folder) == (
        "ci", "T0K-T0K-T0K", frozenset({"read"}), "a b/c")
    assert parse_line(named.line()) == named
    for bad in ("token ci T0K-T0K-T0K folder=../up", "token ci T0K-T0K-T0K rights=reed",
                "user x nohash", "token -x T0K-T0K-T0K", "token ci T0K-T0K-T0K colour=blue",
                "s3cret-token read,wirte", "user grace", "x",
                "usr bob $argon2id$v=19$m=19456 rights=read", "token ci short"):
        with pytest.raises(ValueError):
            parse_line(bad)


# ----------------------------------------------------------------------- sessions


def sign_in_over_http(h, user: str, password: str) -> str:
    """POST /.muxserver-auth/signin as the page does: the session cookie's value."""
    h.sign_in(user, password)
    h.send(h.wire.request("POST", "/.muxserver-auth/signin"))
    answer = h.replies()[-1]
    assert answer.status == 204, answer
    cookie = answer.headers["set-cookie"]
    for attribute in ("HttpOnly", "SameSite=Strict", "Path=/", "Max-Age=2592000"):
        assert attribute in cookie
    h.wire.authorization = None
    return cookie.split(";")[0].split("=", 1)[1]


def test_a_session_cookie_signs_a_browser_in_until_its_user_goes(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        session = sign_in_over_http(h, "alice", ALICE_PW)
        cookie = {"Cookie": f"muxserver_session={session}"}
        h.send(h.wire.request("GET", "/a.txt", cookie))
        assert h.replies()[-1].body == b"alice's"
        tampered = session[:-2] + ("AA" if not session.endswith("AA") else "BB")
        h.send(h.wire.request("GET", "/a.txt", {"Cookie": f"muxserver_session={tampered}"}))
        assert h.replies()[-1].refused("unauthorized")
        world.rewrite([line for line in user_lines() if not line.startswith("user alice")])
        h.send(h.wire.request("GET", "/a.txt", cookie))
        gone = h.replies()[-1]
        assert gone.refused("unauthorized") and b"session has ended" in gone.body


def test_a_session_ends_when_its_password_changes_or_it_expires(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        session = sign_in_over_http(h, "bob", BOB_PW)
        cookie = {"Cookie": f"muxserver_session={session}"}
        world.wall[0] += 29 * 86400  # still within 30 days
        h.send(h.wire.request("GET", "/private/s.txt", cookie))
        assert h.replies()[-1].ok
        world.wall[0] += 2 * 86400
        h.send(h.wire.request("GET", "/private/s.txt", cookie))
        assert h.replies()[-1].refused("unauthorized")
        h = make(access=world.access)
        session = sign_in_over_http(h, "bob", BOB_PW)
        world.rewrite([line for line in user_lines() if not line.startswith("user bob")]
                      + [Account(USER, "bob", hash_password("new")).line()])
        h.send(h.wire.request("GET", "/private/s.txt",
                              {"Cookie": f"muxserver_session={session}"}))
        assert h.replies()[-1].refused("unauthorized")


def test_a_session_cannot_pass_for_a_link_nor_a_link_for_a_session(world):
    value = world.seal.sign(SESSION, ["link", "x", 2**40])
    assert world.seal.open(SHARE, value) is None and world.seal.open(SESSION, value)


def test_sign_out_clears_the_cookie_whatever_it_holds(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.send(h.wire.request("POST", "/.muxserver-auth/signout",
                              {"Cookie": "muxserver_session=anything"}))
        answer = h.replies()[-1]
        assert answer.status == 204 and "Max-Age=0" in answer.headers["set-cookie"]


def test_a_browser_gets_the_sign_in_page_and_a_client_a_401(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.send(h.wire.request("GET", "/", {"Accept": "text/html,*/*",
                                           "Sec-Fetch-Mode": "navigate"}))
        page = h.replies()[-1]
        assert page.status == 401 and page.headers["content-type"].startswith("text/html")
        assert b"<h1>Sign in</h1>" in page.body and b'type="password"' in page.body
        assert "Basic" not in page.headers["www-authenticate"]  # (no password box, please)
        h.send(h.wire.request("GET", "/", {"Accept": "application/json"}))
        plain = h.replies()[-1]
        assert plain.status == 401 and plain.headers["content-type"].startswith("text/plain")
        assert "Basic" in plain.headers["www-authenticate"]


def test_basic_auth_with_no_name_is_a_token(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.sign_in("", CI_TOKEN)
        h.send(h.wire.request("GET", "/?format=json"))
        assert names_listed(h.replies()[-1]) == ["alice", "carol"]


# --------------------------------------------------------------------- share links


def make_link(world, name: str, *, write: bool = False, who: str = "bob") -> dict:
    """A link made through the native share request, as ``who``."""
    with harnesses("native", world.root) as make:
        h = make(access=world.access)
        h.sign_in(who, BOB_PW if who == "bob" else ALICE_PW)
        h.send(protocol.encode_share(99, "make", name, write=write, expires=3600))
        reply = h.replies()[-1]
        assert reply.ok, reply
        return {k: json.loads(v) for k, v in reply.headers.items()}


def open_link(h, link: str) -> None:
    if h.kind == "native":
        h.send(protocol.encode_auth(1, {"link": link}))


def link_get(h, link: str, name: str):
    if h.kind != "native":
        h.send(h.wire.request("GET", "/" + urllib.parse.quote(name) + "?share=" + link))
    else:
        open_link(h, link)
        h.send(h.wire.get(name))
    return h.replies()[-1]


def test_a_link_to_a_file_opens_that_file_and_nothing_else(make, world):
    made = make_link(world, "private/s.txt")
    h = make()
    assert link_get(h, made["link"], "s.txt").body == b"secret"
    for other in ("a.txt", "../shared/poster.txt", "private/s.txt", ""):
        answer = link_get(h, made["link"], other)
        assert not answer.ok and b"secret" not in answer.body


def test_a_link_to_a_folder_opens_it_read_only(make, world):
    made = make_link(world, "shared")
    h = make()
    assert link_get(h, made["link"], "poster.txt").body == b"poster"
    if h.kind == "native":
        assert names_listed(listing(h)) == ["poster.txt"]
        h.send(h.wire.put("new.txt", b"x"))
        assert h.replies()[-1].refused("not_permitted")
        h.send(protocol.encode_share(7, "make", "poster.txt", expires=60))
        assert h.replies()[-1].refused("not_permitted")  # a link makes no links
    assert link_get(h, made["link"], "../private/s.txt").refused("bad_name")


def test_a_drop_box_link_takes_uploads_and_shows_nothing(world):
    made = make_link(world, "shared", write=True)
    with harnesses("native", world.root) as make:
        h = make(access=world.access)
        open_link(h, made["link"])
        h.send(h.wire.put("poster.txt", b"dropped"))  # a taken name: stored beside it
        assert h.replies()[-1].ok
        assert (world.root / "shared/poster.txt").read_text() == "poster"
        assert (world.root / "shared/poster (2).txt").read_bytes() == b"dropped"
        assert not listing(h).ok
        h.send(h.wire.get("poster.txt"))
        assert h.replies()[-1].refused("not_permitted")


def test_a_changed_expired_or_revoked_link_opens_nothing(make, world):
    made = make_link(world, "shared")
    h = make()
    link = made["link"]
    import base64

    payload, mac = link.split(".")
    fields = json.loads(base64.urlsafe_b64decode(payload + "=="))
    assert "shared" == fields[2] and len(fields) == 3  # (id, expiry, leaf: no folders)
    fields[1] += 10**6  # the same signature, a later expiry
    other = base64.urlsafe_b64encode(json.dumps(fields, separators=(",", ":")).encode()
                                     ).rstrip(b"=").decode() + "." + mac
    answer = link_get(h, other, "poster.txt")
    assert answer.refused("unauthorized") and b"poster" not in answer.body
    world.wall[0] += 3601
    assert link_get(make(), link, "poster.txt").refused("unauthorized")
    world.wall[0] -= 3601
    with harnesses("native", world.root) as native:
        owner = native(access=world.access)
        owner.sign_in("bob", BOB_PW)
        owner.send(protocol.encode_share(5, "revoke", link_id=made["link_id"]))
        assert owner.replies()[-1].ok
    answer = link_get(make(), link, "poster.txt")
    assert answer.refused("unauthorized")
    assert h.session.strikes <= 3  # (a dead link is no guess: no back-off for its holder)


def test_links_are_listed_and_revoked_by_their_maker_only(world):
    made = make_link(world, "friends/alice/a.txt", who="bob")
    mine = make_link(world, "a.txt", who="alice")
    with harnesses("native", world.root) as make:
        alice = make(access=world.access)
        alice.sign_in("alice", ALICE_PW)
        alice.send(protocol.encode_share(3, "list"))
        links = json.loads(alice.replies()[-1].headers["links"])
        assert [link["id"] for link in links] == [mine["link_id"]]
        assert links[0]["name"] == "a.txt"  # (as alice sees it: her folder is her root)
        alice.send(protocol.encode_share(4, "revoke", link_id=made["link_id"]))
        assert alice.replies()[-1].refused("not_found")
        bob = make(access=world.access)
        bob.sign_in("bob", BOB_PW)
        bob.send(protocol.encode_share(5, "list"))
        assert len(json.loads(bob.replies()[-1].headers["links"])) == 2  # (bob: all)


def test_a_link_to_a_folder_in_a_browser_becomes_its_session(world):
    made = make_link(world, "shared")
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.send(h.wire.request("GET", "/?share=" + made["link"], {
            "Accept": "text/html", "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Site": "cross-site",
            "Sec-Fetch-User": "?1", "Sec-Fetch-Dest": "document"}))
        page = h.replies()[-1]
        assert page.status == 200 and b'data-next="/"' in page.body
        session = page.headers["set-cookie"].split(";")[0].split("=", 1)[1]
        h.send(h.wire.request("GET", "/?format=json", {"Cookie": f"muxserver_session={session}"}))
        assert names_listed(h.replies()[-1]) == ["poster.txt"]


def test_an_expired_link_in_a_browser_gets_a_page_that_says_so(world):
    made = make_link(world, "shared")
    world.wall[0] += 7200
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.send(h.wire.request("GET", "/?share=" + made["link"], {"Accept": "text/html"}))
        page = h.replies()[-1]
        assert page.status == 401 and b"Link refused" in page.body and b"expired" in page.body


def test_an_open_server_makes_no_links(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    with harnesses("native", root) as make:
        h = make()
        h.send(protocol.encode_share(1, "make", "", expires=60))
        assert h.replies()[-1].refused("not_permitted")


def test_a_link_made_by_another_process_is_found_at_once(world, tmp_path):
    other = ShareBook(world.shares.path, world.seal, clock=lambda: world.clock[0],
                      wall=lambda: world.wall[0])
    world.shares.links()  # (this one has read the book: nothing in it)
    link, capability = other.make("shared", write=False, file=False, lifetime=60, by="x")
    found = world.shares.check(capability)  # (within the same second)
    assert not isinstance(found, str) and found.id == link.id


# ------------------------------------------------------------------- the command line


def test_user_add_list_and_remove(tmp_path):
    users = tmp_path / "users"
    added = run_cli("user", "add", "alice", "--file", str(users), "--rights", "read,write",
                    "--path", "friends/alice", input="a password\n")
    assert added.returncode == 0, added.stderr
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    again = run_cli("user", "add", "alice", "--file", str(users), input="other\n")
    assert again.returncode == 2 and "--replace" in again.stderr
    listed = run_cli("user", "list", "--file", str(users))
    assert "alice" in listed.stdout and "/friends/alice" in listed.stdout
    assert "argon2" not in listed.stdout and "a password" not in users.read_text()
    token = run_cli("token", "--append", str(users), "--name", "ci", "--rights", "read",
                    "--path", "builds")
    assert token.returncode == 0 and token.stdout.strip() in users.read_text()
    assert "token ci " in users.read_text()
    assert run_cli("user", "remove", "alice", "--file", str(users)).returncode == 0
    assert "alice" not in users.read_text() and "token ci " in users.read_text()
    missing = run_cli("user", "remove", "alice", "--file", str(users))
    assert missing.returncode != 0 and "no user 'alice'" in missing.stderr


def test_a_running_server_takes_a_new_user_and_the_cli_signs_in(tmp_path):
    root, users = tmp_path / "root", tmp_path / "users"
    root.mkdir()
    (root / "f.txt").write_text("for carol")
    write_lines(str(users), [Account(TOKEN, "", "admin-token").line()])
    server = spawn_server(root, "--token-file", str(users))
    try:
        env = {**os.environ, "MUXSERVER_PASSWORD": "carol's password"}
        port = str(server.port)
        refused = run_cli("ls", "--port", port, "--user", "carol", env=env)
        assert refused.returncode == 1 and "wrong name or password" in refused.stderr
        assert run_cli("user", "add", "carol", "--file", str(users),
                       input="carol's password\n").returncode == 0
        server.proc.send_signal(signal.SIGHUP)  # (or wait a second: the file is looked at)
        server.wait_for_stderr(r"the user file .* was read again: 1 user")
        listed = run_cli("ls", "--port", port, "--user", "carol", env=env)
        assert listed.returncode == 0 and "f.txt" in listed.stdout
    finally:
        stop_process(server.proc)


def test_share_prints_a_link_that_get_and_put_follow(tmp_path):
    root, users = tmp_path / "root", tmp_path / "users"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "plan.txt").write_text("the plan")
    (root / "inbox").mkdir()
    write_lines(str(users), [Account(USER, "bob", hashed(BOB_PW)).line()])
    server = spawn_server(root, "--token-file", str(users))
    try:
        common = ["--port", str(server.port), "--user", "bob"]
        env = {**os.environ, "MUXSERVER_PASSWORD": BOB_PW}
        made = run_cli("share", "docs/plan.txt", "--expires", "1h", *common, env=env)
        assert made.returncode == 0, made.stderr
        url = made.stdout.strip().splitlines()[-1]
        assert url.startswith(f"http://127.0.0.1:{server.port}/plan.txt?share=")
        out = tmp_path / "out"
        out.mkdir()
        got = run_cli("get", url, "-o", str(out))
        assert got.returncode == 0, got.stderr
        assert (out / "plan.txt").read_text() == "the plan"
        drop = run_cli("share", "inbox", "--write", *common, env=env).stdout.splitlines()[-1]
        (tmp_path / "gift.txt").write_text("a gift")
        put = run_cli("put", str(tmp_path / "gift.txt"), drop)
        assert put.returncode == 0, put.stderr
        assert (root / "inbox" / "gift.txt").read_text() == "a gift"
        listed = run_cli("share", "--list", *common, env=env)
        link_ids = [line.split()[0] for line in listed.stdout.splitlines()[1:]]  # (a header)
        assert all("?share=" in line for line in listed.stdout.splitlines()[1:])
        assert len(link_ids) == 2
        revoked = run_cli("share", "--revoke", link_ids[0], *common, env=env)
        assert revoked.returncode == 0
        again = run_cli("get", url, "-o", str(out), "--overwrite")
        assert again.returncode == 1 and "revoked" in again.stderr
    finally:
        stop_process(server.proc)


def test_a_link_made_on_one_worker_opens_on_every_worker(tmp_path):
    root, users = tmp_path / "root", tmp_path / "users"
    (root / "docs").mkdir(parents=True)
    (root / "docs" / "plan.txt").write_text("the plan")
    write_lines(str(users), [Account(USER, "bob", hashed(BOB_PW)).line()])
    server = spawn_server(root, "--token-file", str(users), "--workers", "2")
    try:
        env = {**os.environ, "MUXSERVER_PASSWORD": BOB_PW}
        made = run_cli("share", "docs", "--port", str(server.port), "--user", "bob", env=env)
        url = made.stdout.strip().splitlines()[-1]
        for attempt in range(8):  # (connections spread over both workers)
            got = run_cli("ls", "--port", str(server.port), "--user", "bob", env=env)
            assert got.returncode == 0
            out = tmp_path / f"out{attempt}"
            out.mkdir()
            fetched = run_cli("get", url.replace("/?", "/plan.txt?"), "-o", str(out))
            assert fetched.returncode == 0, fetched.stderr
    finally:
        stop_process(server.proc)


def test_a_drop_box_link_whose_folder_is_gone_stores_nothing(world):
    made = make_link(world, "shared", write=True)
    (world.root / "shared" / "poster.txt").unlink()
    (world.root / "shared").rmdir()
    (world.root / "shared").write_text("a file where the folder was")
    with harnesses("native", world.root) as make:
        h = make(access=world.access)
        open_link(h, made["link"])
        h.send(h.wire.put("x.txt", b"lost?"))
        assert h.replies()[-1].refused("not_found")
    assert not list(world.root.rglob("x.txt")) and not (world.root / "shared (2)").exists()


def test_a_resumed_upload_of_a_user_stays_in_their_folder(world):
    with harnesses("native", world.root) as make:
        h = make(access=world.access)
        h.sign_in("alice", ALICE_PW)
        data = os.urandom(300_000)
        digest = __import__("hashlib").sha256(data).hexdigest()
        h.send(protocol.encode_put(7, "big.bin", len(data), digest, resumable=True)
               + data[:100_000], read=False)
        h.channel.lose()  # (cut off: what arrived is kept for resume)
        kept = [p for p in world.root.rglob(".muxserver-part-*")]
        assert kept and all("friends/alice" in str(p) for p in kept)
        h = make(access=world.access, shared_root=None)
        h.sign_in("alice", ALICE_PW)
        h.send(protocol.encode_frame({"id": 8, "op": "partial", "name": "big.bin",
                                      "size": len(data), "sha256": digest}))
        assert json.loads(h.replies()[-1].headers["offset"]) == 100_000


def test_removing_a_token_ends_its_browser_sessions(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.sign_in("", CI_TOKEN)
        h.send(h.wire.request("POST", "/.muxserver-auth/signin"))
        cookie = h.replies()[-1].headers["set-cookie"].split(";")[0]
        h.wire.authorization = None
        h.send(h.wire.request("GET", "/?format=json", {"Cookie": cookie}))
        assert h.replies()[-1].ok
        world.rewrite([line for line in user_lines() if not line.startswith("token ci")])
        h.send(h.wire.request("GET", "/?format=json", {"Cookie": cookie}))
        assert h.replies()[-1].refused("unauthorized")


def test_a_links_url_names_the_server_as_others_reach_it():
    import argparse

    from muxserver.cli_client import link_url

    here = argparse.Namespace(host="127.0.0.1", port=9009, tls=False, cafile=None)
    assert link_url(here, "a/b c.txt", "CAP", "192.168.1.5") == (
        "http://192.168.1.5:9009/b%20c.txt?share=CAP")
    assert link_url(here, "", "CAP", "") == "http://127.0.0.1:9009/?share=CAP"
    there = argparse.Namespace(host="fd00::5", port=443, tls=True, cafile=None)
    assert link_url(there, "", "CAP", "192.168.1.5") == "https://[fd00::5]:443/?share=CAP"


# ------------------------------------------------- passwords are hashed off the loop


def test_a_password_is_hashed_by_a_helper_while_the_session_waits(world):
    from muxserver.lifecycle import Work

    with harnesses("native", world.root) as make:
        h = make(access=world.access)
        auth = protocol.encode_auth(1, {"user": "bob", "password": BOB_PW})
        h.session.data_received(memoryview(bytearray(auth + h.wire.listing(""))))
        assert h.session.work.state is Work.CHECKING  # (the loop went on meanwhile)
        assert h.replies() == []  # nothing answered, nothing decoded behind it
        h.settle()
        first, second = h.replies()
        assert first.ok and second.ok  # the auth, then the listing pipelined behind it


def test_an_upload_with_basic_auth_waits_for_its_password_then_is_stored(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.sign_in("alice", ALICE_PW)
        h.send(h.wire.put("fresh.bin", b"x" * 100_000))
        assert h.replies()[-1].status == 201
        assert (world.root / "friends/alice/fresh.bin").read_bytes() == b"x" * 100_000


def test_too_many_passwords_waiting_is_a_busy_server(world, kind):
    world.access.passwords.waiting = world.access.passwords.MAX_WAITING
    with harnesses(kind, world.root) as make:
        h = make(access=world.access)
        h.sign_in("bob", BOB_PW)
        h.send(h.wire.get("private/s.txt"))
        assert h.replies()[0].refused("server_busy")
        assert h.session.strikes <= 1 and world.access._strikes.blocked_until(
            h.channel.peer_host) == 0  # (not a guess)


def test_a_link_stops_when_its_maker_loses_the_access_it_gives(world):
    made = make_link(world, "a.txt", who="alice")  # (friends/alice/a.txt)
    with harnesses("native", world.root) as make:
        h = make(access=world.access)
        open_link(h, made["link"])
        h.send(h.wire.get("a.txt"))
        assert h.replies()[-1].ok
        moved = Account(USER, "alice", hashed(ALICE_PW), folder="friends/elsewhere")
        world.rewrite([line for line in user_lines() if not line.startswith("user alice")]
                      + [moved.line()])
        h = make(access=world.access)
        open_link(h, made["link"])
        assert h.replies()[-1].refused("unauthorized")
        assert "no longer" in h.replies()[-1].headers["message"]


def test_a_book_line_cut_short_does_not_bring_a_revoked_link_back(world):
    made = make_link(world, "shared")
    with open(world.shares.path, "a") as book:
        book.write('{"made":{"id":"dead","name":"pub","wri')  # (a crash mid-line)
    world.shares.revoke(made["link_id"])
    fresh = ShareBook(world.shares.path, world.seal, clock=lambda: world.clock[0],
                      wall=lambda: world.wall[0])
    assert isinstance(fresh.check(made["link"]), str)
    assert fresh.revoked(made["link_id"])


def test_a_link_shows_no_folder_above_what_it_opens(world):
    made = make_link(world, "friends/alice/a.txt")
    import base64

    payload = made["link"].split(".")[0]
    shown = base64.urlsafe_b64decode(payload + "==").decode()
    assert "friends" not in shown and "a.txt" in shown


def test_one_maker_has_at_most_so_many_links(world):
    world.shares.PER_MAKER = 2
    make_link(world, "shared")
    make_link(world, "private")
    with harnesses("native", world.root) as make:
        h = make(access=world.access)
        h.sign_in("bob", BOB_PW)
        h.send(protocol.encode_share(9, "make", "shared", expires=60))
        refused = h.replies()[-1]
        assert not refused.ok and "revoke some" in refused.headers["message"]


def test_users_added_at_the_same_time_are_all_kept(tmp_path):
    import subprocess
    import sys

    users = tmp_path / "users"
    adding = [subprocess.Popen([sys.executable, "-m", "muxserver", "user", "add", f"u{i}",
                                "--file", str(users)], stdin=subprocess.PIPE,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True)
              for i in range(8)]
    try:
        for proc in adding:
            proc.communicate("a password\n", timeout=60)
    finally:
        for proc in adding:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    assert sorted(line.split()[1] for line in users.read_text().splitlines()) == sorted(
        f"u{i}" for i in range(8))


def test_a_user_file_being_written_is_read_once_it_is_whole(world):
    text = world.users.read_text()
    cut = [line for line in user_lines() if line.startswith("user alice")][0]
    cut = cut.rsplit(" folder=", 1)[0]  # (alice, not yet limited to her folder)
    world.users.write_text("\n".join(line for line in text.splitlines()
                                     if not line.startswith("user alice")) + "\n" + cut)
    world.clock[0] += 1.0
    assert world.accounts.get().users["alice"].folder == "friends/alice"  # (the old one)
    world.users.write_text(world.users.read_text() + " folder=friends/alice2\n")
    world.clock[0] += 1.0
    assert world.accounts.get().users["alice"].folder == "friends/alice2"


def test_empty_settings_in_the_user_file_are_refused():
    for bad in ("token ci T0K-T0K-T0K rights=", "token ci T0K-T0K-T0K folder=",
                "token ci T0K-T0K-T0K rights=,", "token ci T0K-T0K-T0K folder=//"):
        with pytest.raises(ValueError):
            parse_line(bad)


def test_a_token_link_from_another_site_asks_before_it_signs_in(world):
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.send(h.wire.request("GET", "/?token=" + CI_TOKEN, {
            "Accept": "text/html", "Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "navigate",
            "Sec-Fetch-User": "?1", "Sec-Fetch-Dest": "document"}))
        page = h.replies()[-1]
        assert page.status == 200 and "set-cookie" not in page.headers
        assert f'value="{CI_TOKEN}"'.encode() in page.body  # (signed in when they say so)
        h.send(h.wire.request("GET", "/?token=" + CI_TOKEN, {"Sec-Fetch-Site": "none"}))
        typed = h.replies()[-1]
        assert typed.status == 303 and "muxserver_session=" in typed.headers["set-cookie"]


def test_a_person_signed_in_who_opens_a_link_keeps_their_session(world):
    link_headers = {"Accept": "text/html", "Sec-Fetch-Site": "none",
                    "Sec-Fetch-Mode": "navigate", "Sec-Fetch-Dest": "document"}
    made = make_link(world, "friends/alice/sub")
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        alice = sign_in_over_http(h, "alice", ALICE_PW)
        h.send(h.wire.request("GET", "/?share=" + made["link"],
                              {**link_headers, "Cookie": f"muxserver_session={alice}"}))
        own = h.replies()[-1]
        assert own.status == 303 and own.headers["location"] == "/sub/"
        assert "set-cookie" not in own.headers
        other = make_link(world, "shared")  # (not hers to see)
        h.send(h.wire.request("GET", "/?share=" + other["link"],
                              {**link_headers, "Cookie": f"muxserver_session={alice}"}))
        asked = h.replies()[-1]
        assert asked.status == 200 and "set-cookie" not in asked.headers
        assert b"signs you out" in asked.body and b"replace=1" in asked.body
        h.send(h.wire.request("GET", "/?share=" + other["link"] + "&replace=1",
                              {**link_headers, "Sec-Fetch-Site": "same-origin",
                               "Cookie": f"muxserver_session={alice}"}))
        assert "muxserver_session=" in h.replies()[-1].headers["set-cookie"]


def test_sign_ins_from_one_address_wait_two_at_a_time(world):
    world.access.passwords.waiting_from["192.0.2.7"] = 2
    with harnesses("http", world.root) as make:
        h = make(access=world.access)
        h.sign_in("bob", BOB_PW)
        h.send(h.wire.get("private/s.txt"))
        assert h.replies()[-1].refused("server_busy")
        other = make(access=world.access, peer_host="192.0.2.8")
        other.sign_in("bob", BOB_PW)
        other.send(other.wire.get("private/s.txt"))
        assert other.replies()[-1].ok


def test_in_a_terminal_sighup_is_a_hangup_and_stops_the_server(tmp_path):
    import pty
    import subprocess
    import sys

    root = tmp_path / "root"
    root.mkdir()
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "muxserver", "serve", "--root", str(root),
                             "--port", "0", "--no-console"], stdin=follower, stdout=follower,
                            stderr=subprocess.DEVNULL)
    os.close(follower)
    try:
        said = b""
        while b"listening on" not in said:  # (the banner's last line: signals are handled)
            chunk = os.read(leader, 4096)
            assert chunk, said
            said += chunk
        proc.send_signal(signal.SIGHUP)
        assert proc.wait(timeout=30) == 0  # (stopped, as a closed terminal has always meant)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(leader)


def test_a_lock_above_a_users_folder_is_told_as_on_the_top_of_hers(world):
    lockinfo = (b'<D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
                b"<D:locktype><D:write/></D:locktype></D:lockinfo>")
    with harnesses("webdav", world.root) as make:
        bob = make(access=world.access, limits=world.limits)
        bob.sign_in("bob", BOB_PW)
        bob.send(bob.wire.request("LOCK", "/friends", {"Content-Length": str(len(lockinfo))},
                                  lockinfo))
        assert bob.replies()[-1].status == 200
        alice = make(access=world.access, limits=world.limits, shared_root=bob.root)
        alice.services.locks = bob.services.locks  # (one server: one table)
        alice.sign_in("alice", ALICE_PW)
        alice.send(alice.wire.request("PROPFIND", "/a.txt", {"Depth": "0"}))
        found = alice.replies()[-1]
        assert found.status == 207 and b"<D:lockroot><D:href>/</D:href>" in found.body
        alice.send(alice.wire.put("a.txt", b"changed"))
        refused = alice.replies()[-1]
        assert refused.status == 423
        assert b"friends" not in found.body and b"friends" not in refused.body
    assert (world.root / "friends/alice/a.txt").read_text() == "alice's"
