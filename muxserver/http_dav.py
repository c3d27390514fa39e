"""WebDAV (RFC 4918, classes 1 and 2) over HTTP: file managers mount the share.

Finder, Windows Explorer, GNOME Files, Dolphin, davfs2, rclone and cadaver speak it.
This module only translates WebDAV's requests and answers, the XML of them in
``dav_xml.py``; what each one may do, and how it is done, are the request machine's
rules (``rules.py``) like every other wire's: rights, the grant's folder, limits, the
atomic commit of what is stored (a COPY is stored as an upload is), and locks
(``locks.py``), which hold for every wire.

* ``OPTIONS``: ``DAV: 1, 2`` (and ``MS-Author-Via: DAV``, which Windows looks for).
* ``PROPFIND``: depth 0 and 1, ``allprop``, ``propname`` and named properties; the
  live ones (type, size, times, the ETag where the digest is known, locks, quota) and
  the dead ones PROPPATCH keeps. A folder's members are written a page per loop step
  as they are listed, so no step and no buffer grows with the folder. Depth infinity
  is refused (403 ``propfind-finite-depth``, as RFC 4918 section 9.1 allows).
* ``PROPPATCH``: dead properties set and removed, all or none (storage/properties.py).
* ``MKCOL``, ``DELETE``, ``COPY`` (depth 0 and infinity), ``MOVE``: ``Overwrite: F``
  keeps an existing destination (412); ``T`` replaces it where the server and the
  request's rights allow replacing (and removing, for a folder in the way).
* ``LOCK`` (exclusive and shared, depth 0 and infinity, a new empty file for a name
  that does not exist, refresh), ``UNLOCK``, and the ``If`` header: its lists of lock
  tokens and ETags are checked first (412 when none holds), and the tokens in it are
  the ones the request submits.
"""

from __future__ import annotations

import dataclasses
import logging
import mimetypes
import os
import urllib.parse
from typing import Any

import h11

from . import dav_xml
from .dav_xml import DAV, BadXml
from .digests import SHA256
from .http_codec import HttpCodec, HttpError, parse_target, refusal
from .listings import LeftOutLog
from .locks import parse_timeout
from .names import printable
from .storage import StorageError

log = logging.getLogger("muxserver")

DAV_METHODS = frozenset({"OPTIONS", "PROPFIND", "PROPPATCH", "MKCOL", "COPY", "MOVE",
                         "DELETE", "LOCK", "UNLOCK"})
ALLOWED_METHODS = ("OPTIONS, GET, HEAD, PUT, DELETE, MKCOL, COPY, MOVE, PROPFIND, "
                   "PROPPATCH, LOCK, UNLOCK")
#: Members of a folder written per loop step of a PROPFIND (each may cost an open and
#: a read of its attributes), and the properties one may name (Windows and Finder ask
#: for a dozen or two): together they bound a step's work.
PROPFIND_PER_STEP = 128
MAX_NAMES_ASKED = 64
XML_TYPE = ("Content-Type", 'application/xml; charset="utf-8"')
LIVE_NAMES = frozenset(DAV + name for name in dav_xml.LIVE + dav_xml.QUOTA)


@dataclasses.dataclass(frozen=True)
class Condition:
    """One condition of an If header's list: a lock token or an ETag, maybe negated."""

    negated: bool
    token: str = ""  # a state token (a lock's, or DAV:no-lock)
    etag: str = ""


class DavRequests(HttpCodec):
    """WebDAV's requests on an HTTP connection."""

    def dav_request(self, method: str, path: str, headers: dict[str, str],
                    has_body: bool) -> None:
        name = path.rstrip("/")
        if method == "OPTIONS":
            self.respond(200, [("DAV", "1, 2"), ("MS-Author-Via", "DAV"),
                               ("Allow", ALLOWED_METHODS)])
            return
        if method == "PROPFIND":
            self.read_body_then(lambda body: self.propfind(name, body), has_body)
            return
        if has_body and method not in ("PROPPATCH", "LOCK"):
            raise HttpError(415, f"{method} takes no body here", close=True)
        self.preconditions(name)
        if method == "PROPPATCH":
            self.read_body_then(lambda body: self.proppatch(name, body), has_body)
        elif method == "LOCK":
            self.read_body_then(lambda body: self.lock(name, body), has_body)
        elif method == "UNLOCK":
            self.unlock(name)
        elif not name:
            raise HttpError(403, "the served root itself cannot be removed, made, copied or "
                                 "moved")
        elif method == "MKCOL":
            self.mkcol(name)
        elif method == "DELETE":
            self.name = name
            self.start_removal(name, recursive=True,
                               done=lambda removed: self.respond(204, []),
                               failed=lambda exc: self.fail_request(refusal(exc, close=False)))
        else:
            self.copy_or_move(method, name, headers)

    # -- the If header (RFC 4918, 10.4)

    def preconditions(self, name: str) -> None:
        """Check the request's If header (412 when none of its lists holds) and take
        the lock tokens it submits."""
        value = self.request_headers.get("if")
        self.lock_tokens = frozenset()
        if value is None:
            return
        lists = parse_if(value)
        self.lock_tokens = frozenset(c.token for _, conditions in lists for c in conditions
                                     if c.token)
        for tag, conditions in lists:
            resource = name if tag is None else self.tagged_name(tag)
            if resource is not None and all(self.condition_holds(resource, c) != c.negated
                                             for c in conditions):
                return
        raise HttpError(412, "the conditions of the If header do not hold (a lock token "
                             "that ended, or a file that changed)")

    def tagged_name(self, tag: str) -> str | None:
        """The name an If header's resource tag points to; None: not on this server."""
        parts = urllib.parse.urlsplit(tag)
        if parts.netloc and parts.netloc.lower() != self.request_headers.get("host", "").lower():
            return None
        try:
            return parse_target(parts.path or "/")[0].rstrip("/")
        except HttpError:
            return None

    def condition_holds(self, name: str, condition: Condition) -> bool:
        if condition.token:
            return any(lock.token == condition.token for lock in self.locks_on(name))
        return self.etag_of(name) == condition.etag

    def etag_of(self, name: str) -> str | None:
        """A file's ETag (its SHA-256, as GET says it), or None: a folder, no such
        file, or a big file whose digest is not known (no client can hold its ETag)."""
        try:
            info = self.properties_of(name, dead=False)
            if info["type"] != "file":
                return None
            if SHA256 not in info:
                opened = self.open_download(name)
                try:
                    if not self.hashed_at_once(opened):
                        return None
                    self.services.root.hash_now(opened)
                    assert opened.digest is not None
                    return f'"{opened.digest.hex}"'
                finally:
                    opened.close()
        except StorageError:
            return None
        return f'"{info[SHA256]}"'

    # -- PROPFIND

    def propfind(self, name: str, body: bytes) -> None:
        depth = self.request_headers.get("depth", "infinity").strip().lower()
        if depth not in ("0", "1"):
            self.respond(403, [XML_TYPE], dav_xml.error_body("propfind-finite-depth"))
            return
        try:
            mode, asked = dav_xml.propfind_request(body)
        except BadXml as exc:
            raise HttpError(400, str(exc)) from None
        asked = list(dict.fromkeys(asked))  # (each name once: a member's work is bounded)
        if len(asked) > MAX_NAMES_ASKED:
            raise HttpError(400, f"a PROPFIND asks for at most {MAX_NAMES_ASKED} properties "
                                 f"(this one, {len(asked)})")
        opens = mode != "prop" or any(n not in LIVE_NAMES or n == DAV + "getetag"
                                      for n in asked)
        try:
            info = self.properties_of(name, dead=opens)
        except StorageError as exc:
            if exc.code not in ("not_found", "not_a_directory"):
                raise
            # (clients ask whether a name exists this way: the answer, not trouble)
            raise HttpError(404, exc.message, expected=True) from None
        first = self.prop_response(info, mode, asked)
        if info["type"] != "dir" or depth == "0":
            self.respond(207, [XML_TYPE], (dav_xml.MULTISTATUS_OPEN + first
                                           + dav_xml.MULTISTATUS_CLOSE).encode())
            return
        entries = self.entries(name)
        self.queue(h11.Response(status_code=207, headers=self.base_headers(None) + [XML_TYPE]))
        self.stream_body((dav_xml.MULTISTATUS_OPEN + first).encode(), last=False)
        left_out = LeftOutLog(self.channel.peer, self.channel.id, self.wire, name)

        def page(batch: list[dict[str, Any]], more: bool) -> None:
            # (links and special files are never served)
            members: list[dict[str, Any] | None] = [
                entry for entry in batch if entry["type"] in ("file", "dir")]
            if opens and members:
                members = self.members_properties(
                    name, [entry["name"] for entry in members if entry is not None], dead=True)
            parts = [self.prop_response(member, mode, asked) for member in members
                     if member is not None]  # (None: gone since it was listed)
            self.end_multistatus(parts, more)

        def failed(batch: list[dict[str, Any]], exc: StorageError) -> None:
            log.warning("%s HTTP PROPFIND of %s incomplete: %s", self.channel.peer,
                        printable(name or "/"), exc.message,
                        extra={"event": "refused", "conn": self.channel.id})
            self.end_multistatus([dav_xml.status_response(dav_xml.href(name, True), 500,
                                                          exc.message)], False)

        self.start_job(self.listing_job(entries, PROPFIND_PER_STEP, left_out, page, failed),
                       label="listing")

    def end_multistatus(self, parts: list[str], more: bool) -> None:
        if not more:
            parts.append(dav_xml.MULTISTATUS_CLOSE)
        self.stream_body("".join(parts).encode(), last=not more, status=207)

    def prop_response(self, info: dict[str, Any], mode: str, asked: list[str]) -> str:
        """The ``response`` of one file or folder to a PROPFIND."""
        folder = info["type"] == "dir"
        href = dav_xml.href(info["name"], folder)
        wants_quota = folder and any(n[len(DAV):] in dav_xml.QUOTA for n in asked)
        live = self.live_properties(info, folder, wants_quota)
        dead: dict[str, str] = info.get("props", {})
        if mode == "propname":
            return dav_xml.response(href, [dav_xml.empty_element(n) for n in [*live, *dead]])
        if mode == "allprop":
            extra = [n for n in asked if n not in live and n not in dead]
            return dav_xml.response(href, [*live.values(), *dead.values()], extra)
        found, missing = [], []
        for prop in asked:
            value = live.get(prop) if prop in live else dead.get(prop)
            if value is None:
                missing.append(prop)
            else:
                found.append(value)
        return dav_xml.response(href, found, missing)

    def live_properties(self, info: dict[str, Any], folder: bool, quota: bool) -> dict[str, str]:
        name = info["name"]
        leaf = name.rsplit("/", 1)[-1]
        props = {
            DAV + "resourcetype": ("<D:resourcetype><D:collection/></D:resourcetype>"
                                   if folder else "<D:resourcetype/>"),
            DAV + "displayname": f"<D:displayname>{dav_xml.escape(leaf)}</D:displayname>",
            DAV + "getlastmodified": f"<D:getlastmodified>{dav_xml.http_date(info['mtime'])}"
                                     "</D:getlastmodified>",
            DAV + "creationdate": f"<D:creationdate>{dav_xml.iso_date(info['mtime'])}"
                                  "</D:creationdate>",
            DAV + "supportedlock": dav_xml.SUPPORTED_LOCK,
        }
        if not folder:
            media = mimetypes.guess_type(leaf)[0] or "application/octet-stream"
            props[DAV + "getcontentlength"] = (f"<D:getcontentlength>{info['size']}"
                                               "</D:getcontentlength>")
            props[DAV + "getcontenttype"] = f"<D:getcontenttype>{media}</D:getcontenttype>"
            if SHA256 in info:
                props[DAV + "getetag"] = f'<D:getetag>"{info[SHA256]}"</D:getetag>'
        locks = self.locks_on(name)
        props[DAV + "lockdiscovery"] = dav_xml.lockdiscovery(
            locks, [dav_xml.href(self.lock_root_seen(lock), False) for lock in locks])
        if quota:
            st = os.statvfs(self.services.root.dir_fd)
            props[DAV + "quota-available-bytes"] = (
                f"<D:quota-available-bytes>{st.f_bavail * st.f_frsize}"
                "</D:quota-available-bytes>")
            props[DAV + "quota-used-bytes"] = (
                f"<D:quota-used-bytes>{(st.f_blocks - st.f_bfree) * st.f_frsize}"
                "</D:quota-used-bytes>")
        return props

    # -- PROPPATCH

    def proppatch(self, name: str, body: bytes) -> None:
        try:
            changes = dav_xml.proppatch_request(body)
        except BadXml as exc:
            raise HttpError(400, str(exc)) from None
        info = self.properties_of(name, dead=False)  # (404 for a name that is not there)
        href = dav_xml.href(info["name"], info["type"] == "dir")
        names = list(dict.fromkeys(n for n, _ in changes))
        protected = [n for n in names if n in dav_xml.PROTECTED]
        if protected:
            why = "a live property: the server keeps it"
            self.send_multistatus(dav_xml.response(href, [], (), [
                (n, 403, why) if n in protected else (n, 424, "") for n in names]))
            return
        try:
            self.change_properties(name, changes)
        except StorageError as exc:
            if exc.code != "no_space":
                raise
            self.send_multistatus(dav_xml.response(href, [], (), [
                (n, 507, exc.message) for n in names]))
            return
        self.send_multistatus(dav_xml.response(href, [dav_xml.empty_element(n)
                                                      for n in names]))

    def send_multistatus(self, *responses: str) -> None:
        self.respond(207, [XML_TYPE], (dav_xml.MULTISTATUS_OPEN + "".join(responses)
                                       + dav_xml.MULTISTATUS_CLOSE).encode())

    # -- MKCOL, COPY, MOVE

    def mkcol(self, name: str) -> None:
        self.name = name
        try:
            self.make_directory(name, parents=False)
        except StorageError as exc:
            # (clients make a folder to learn whether it or its parent exists: answers)
            if exc.code == "exists":
                raise HttpError(405, exc.message, [("Allow", ALLOWED_METHODS)],
                                expected=True) from None
            if exc.code in ("not_found", "not_a_directory"):
                raise HttpError(409, f"the folder to make {name!r} in is not there",
                                expected=True) from None
            raise
        self.respond(201, [("Location", dav_xml.href(name, True))])

    def copy_or_move(self, method: str, name: str, headers: dict[str, str]) -> None:
        self.name = name
        target = self.destination(headers)
        overwrite = headers.get("overwrite", "T").strip().upper() != "F"
        if target == name:
            raise HttpError(403, "the destination is the source itself")
        self.describe(name)  # (a source that is not there: 404, before the destination)
        self.destination_folder(target)
        location = [("Location", dav_xml.href(target, False))]

        def failed(exc: StorageError) -> None:
            self.fail_request(self.copy_refusal(exc))

        def moved(replaced: bool) -> None:
            self.respond(204 if replaced else 201, location)

        def copied(replaced: bool, skipped: list[tuple[str, str]]) -> None:
            if skipped:
                self.send_multistatus(*(dav_xml.status_response(dav_xml.href(n, False), 403, why)
                                        for n, why in skipped))
            else:
                moved(replaced)

        try:
            if method == "MOVE":
                if headers.get("depth", "infinity").strip().lower() != "infinity":
                    raise HttpError(400, "a MOVE moves a folder with all it holds (Depth: "
                                         "infinity)")
                self.start_move(name, target, overwrite=overwrite, done=moved, failed=failed)
            else:
                depth = headers.get("depth", "infinity").strip().lower()
                if depth not in ("0", "infinity"):
                    raise HttpError(400, "a COPY has Depth 0 or infinity")
                self.start_copy(name, target, tree=depth == "infinity", overwrite=overwrite,
                                done=copied, failed=failed)
        except StorageError as exc:
            raise self.copy_refusal(exc) from None

    @staticmethod
    def copy_refusal(exc: StorageError) -> HttpError:
        if exc.code == "exists":  # (Overwrite: F, and it exists)
            return HttpError(412, exc.message)
        return refusal(exc, close=False)

    def destination(self, headers: dict[str, str]) -> str:
        """The name the Destination header names, on this server (502 if elsewhere)."""
        value = headers.get("destination", "")
        if not value:
            raise HttpError(400, f"{self.request_method} needs a Destination header")
        try:
            parts = urllib.parse.urlsplit(value)
        except ValueError:  # (an unclosed "[", an address that is none)
            raise HttpError(400, f"the Destination {value!r} is not a URL") from None
        if parts.scheme.lower() not in ("", "http", "https"):
            raise HttpError(400, f"the Destination {value!r} is not an http URL")
        if parts.netloc and parts.netloc.lower() != headers.get("host", "").lower():
            raise HttpError(502, "the Destination is on another server")
        target = parse_target(parts.path or "/")[0].rstrip("/")
        if not target:
            raise HttpError(403, "the served root itself cannot be replaced")
        return target

    def destination_folder(self, target: str) -> None:
        """The folder the destination goes in is there (409 otherwise: RFC 4918, 9.8.5)."""
        folder = target.rpartition("/")[0]
        try:
            is_folder = self.describe(folder)["type"] == "dir" if folder else True
        except StorageError as exc:
            if exc.code not in ("not_found", "not_a_directory"):
                raise
            is_folder = False
        if not is_folder:
            raise HttpError(409, f"the folder of the destination {target!r} is not there")

    # -- LOCK and UNLOCK

    def lock(self, name: str, body: bytes) -> None:
        timeout = parse_timeout(self.request_headers.get("timeout", ""))
        if not body.strip():  # a refresh: the If header names the lock
            for token in sorted(self.lock_tokens):
                try:
                    lock = self.refresh_lock(token, name, timeout)
                except StorageError:
                    continue
                self.respond(200, [XML_TYPE], dav_xml.lock_reply(
                    lock, dav_xml.href(self.lock_root_seen(lock), False)))
                return
            raise HttpError(412, "a LOCK without a body refreshes a lock of yours: name "
                                 "one that holds in an If header")
        try:
            exclusive, owner = dav_xml.lock_request(body)
        except BadXml as exc:
            raise HttpError(400, str(exc)) from None
        depth = self.request_headers.get("depth", "infinity").strip().lower()
        if depth not in ("0", "infinity"):
            raise HttpError(400, "a LOCK has Depth 0 or infinity")
        exists = self._existing_or_none(name) if name else {"type": "dir"}
        if exists is None:
            self.destination_folder(name)
        elif exists["type"] not in ("file", "dir"):  # (a link, a FIFO: never served)
            raise HttpError(403, f"{name!r} is not a file or folder")
        lock = self.take_lock(name, infinite=depth == "infinity", exclusive=exclusive,
                              owner=owner, timeout=timeout)
        if exists is None:
            try:
                self.lock_tokens |= {lock.token}
                self.create_empty(name)
            except BaseException:
                self.services.locks.release(lock.token)
                raise
        self.respond(201 if exists is None else 200,
                     [XML_TYPE, ("Lock-Token", f"<{lock.token}>")],
                     dav_xml.lock_reply(lock, dav_xml.href(name, False)))

    def unlock(self, name: str) -> None:
        token = self.request_headers.get("lock-token", "").strip()
        if not (token.startswith("<") and token.endswith(">")):
            raise HttpError(400, "UNLOCK needs a Lock-Token header: <token>")
        try:
            self.release_lock(token[1:-1], name)
        except StorageError as exc:
            if exc.code != "bad_request":
                raise
            self.respond(409, [XML_TYPE], dav_xml.error_body("lock-token-matches-request-uri"))
            return
        self.respond(204, [])


def parse_if(value: str) -> list[tuple[str | None, list[Condition]]]:
    """An If header as its lists: (the resource tag, or None for the request's own
    name; its conditions). HttpError 400 if it is not one (RFC 4918, 10.4)."""
    lists: list[tuple[str | None, list[Condition]]] = []
    tag: str | None = None
    i, n = 0, len(value)

    def bad(why: str) -> HttpError:
        return HttpError(400, f"the If header is malformed: {why}")

    while i < n:
        c = value[i]
        if c.isspace():
            i += 1
        elif c == "<":
            end = value.find(">", i)
            if end < 0:
                raise bad("an unclosed <")
            tag = value[i + 1:end]
            i = end + 1
        elif c == "(":
            i += 1
            conditions: list[Condition] = []
            while True:
                while i < n and value[i].isspace():
                    i += 1
                if i >= n:
                    raise bad("an unclosed (")
                if value[i] == ")":
                    i += 1
                    break
                negated = False
                if value.startswith("Not", i) or value.startswith("not", i):
                    negated = True
                    i += 3
                    while i < n and value[i].isspace():
                        i += 1
                if i < n and value[i] == "<":
                    end = value.find(">", i)
                    if end < 0:
                        raise bad("an unclosed <")
                    conditions.append(Condition(negated, token=value[i + 1:end]))
                    i = end + 1
                elif i < n and value[i] == "[":
                    end = value.find("]", i)
                    if end < 0:
                        raise bad("an unclosed [")
                    conditions.append(Condition(negated, etag=value[i + 1:end].strip()))
                    i = end + 1
                else:
                    raise bad(f"unexpected {value[i:i + 10]!r}")
            if not conditions:
                raise bad("an empty list")
            lists.append((tag, conditions))
        else:
            raise bad(f"unexpected {value[i:i + 10]!r}")
    if not lists:
        raise bad("no list")
    return lists
