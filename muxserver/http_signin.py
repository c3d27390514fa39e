"""Signing in over HTTP, and share links in a browser.

* **Credentials** of a request, first found wins: a share link's ``?share=`` (any
  method: ``curl -T`` uploads into a drop box), a token's ``?token=`` (GET, once, to
  sign a browser in), ``Authorization: Bearer
  TOKEN``, ``Authorization: Basic`` (a name and password, or a token as the password
  with no name: WebDAV clients and curl ``-u``), and last the session cookie.
* **A browser without credentials** (a GET that accepts HTML) gets the sign-in page, in
  the index page's style, with status 401 and no Basic challenge (a browser would answer
  one with its own password box); any other client gets a one-line 401 that offers
  Bearer and Basic. The page signs in by ``POST /.muxserver-auth/signin`` with the
  name and password (or the token) in an Authorization header, from its own script:
  the answer sets the session cookie and the page reloads itself.
* **The session cookie** is signed (seals.py) and names who it is for and until when
  (``--session-days``): ``HttpOnly`` (no script reads it), ``SameSite=Strict`` (no
  other site's page sends it), ``Secure`` under TLS. It is checked against the user
  file at every request, so a removed user is signed out at once. ``POST
  /.muxserver-auth/signout`` ends it in this browser.
* **A share link** opened in a browser: a link to a file is served at once; a link to
  a folder becomes the browser's session (the cookie), so the folder's page, its
  subfolders and its uploads work, and the address bar loses the capability. Since a
  link usually comes from another site (a mail, a chat), whose navigations a
  ``SameSite=Strict`` cookie does not follow, that first answer is a small page of ours
  that moves on to the folder itself. An expired, revoked or changed link gets a page
  that says so.
* **Links from the page**: ``POST /.muxserver-auth/share?name=N&expires=7d[&write=1]``
  makes one (JSON: its id, path and expiry), ``GET /.muxserver-auth/shares`` lists
  this account's links, ``POST /.muxserver-auth/revoke?id=ID`` revokes one: the rules
  are rules.py's, the same as the native ``share`` request's.
"""

from __future__ import annotations

import base64
import binascii
import urllib.parse

from .access import LINK, PASSWORD, READ, SESSION, TOKEN, Credential, Grant, Refusal
from .addresses import is_loopback_address
from .http_codec import STATUS, HttpCodec, HttpError, parse_query
from .index_page import INDEX_CSP, signin_page
from .shares import DEFAULT_EXPIRY, parse_expiry

AUTH_PATH = "/.muxserver-auth/"
SESSION_COOKIE = "muxserver_session"
#: A client that is no browser is told how to get in (WebDAV clients need Basic).
CHALLENGE = 'Bearer realm="muxserver", Basic realm="muxserver", charset="UTF-8"'


class SignInRequests(HttpCodec):
    """Credentials, the sign-in page, sessions and share links over HTTP."""

    # -- what a request offers

    def credentials(self, method: str, target: str,
                    headers: dict[str, str]) -> tuple[Credential | None, str]:
        """(what this request offers, and "token" or "share" if it came in the query
        string: a browser then gets a session and the same address without it)."""
        if "?" in target:  # (a link for any method: curl -T uploads into a drop box)
            query = parse_query(target.partition("?")[2])
            if "share" in query:
                return Credential(LINK, query["share"]), "share"
            if "token" in query and method in ("GET", "HEAD"):
                return Credential(TOKEN, query["token"]), "token"
        authorization = headers.get("authorization", "")
        scheme, _, value = authorization.strip().partition(" ")
        if scheme.lower() == "bearer":
            return Credential(TOKEN, value.strip()), ""
        if scheme.lower() == "basic":
            if not self.basic_allowed(target):
                raise HttpError(403, "a name and password sent as HTTP Basic over plain "
                                     "HTTP could be read by anyone on the way: connect "
                                     "with https (the server's --tls-cert), or its "
                                     "operator may allow it with --allow-basic-over-http",
                                close=True)
            return basic_credential(value.strip()), ""
        session = session_cookie(headers)
        return (Credential(SESSION, session), "") if session else (None, "")

    def basic_allowed(self, target: str) -> bool:
        """HTTP Basic sends the password with every request, readable on a plain
        connection: taken over TLS, from this machine, where the operator allows it,
        and by the sign-in page, which trades it once for a session."""
        return (self.channel.tls or self.services.access.basic_over_http
                or is_loopback_address(self.channel.peer_host)
                or target.partition("?")[0] == AUTH_PATH + "signin")

    def wants_a_page(self) -> bool:
        """A browser showing what it gets (a GET that accepts HTML): it is given pages
        (the sign-in page, a link's), never a bare 401."""
        headers = self.request_headers
        return (self.request_method == "GET"
                and "text/html" in headers.get("accept", "")
                and headers.get("sec-fetch-dest", "document") == "document")

    # -- refusals

    def send_refusal(self, refusal: Refusal, close: bool) -> None:
        if self.wants_a_page():
            self.send_signin_page(refusal, close)
            return
        headers = [("Content-Type", "text/plain; charset=utf-8")]
        if refusal.code != "unauthorized":  # (wait: the back-off, or a busy helper)
            headers.append(("Retry-After", str(refusal.retry_after)))
            message = refusal.message
        else:
            browser = "sec-fetch-mode" in self.request_headers  # (no password box, please)
            headers.append(("WWW-Authenticate", 'Bearer realm="muxserver"' if browser
                            else CHALLENGE))
            message = refusal.message + (
                "" if refusal.lapsed else ": send 'Authorization: Bearer TOKEN' or a name "
                "and password (Basic), or sign in with a browser")
        if close:
            headers.append(("Connection", "close"))
        status = STATUS[refusal.code]
        self.respond(status, headers, f"{status} {message}\n".encode())

    def send_signin_page(self, refusal: Refusal, close: bool) -> None:
        status = STATUS[refusal.code]
        if refusal.missing:
            note = "Sign in to see the files here."
        elif self.offered_kind == LINK:
            note = refusal.message[0].upper() + refusal.message[1:] + (
                ". Ask the person who shared it for a new one.")
        else:
            note = refusal.message[0].upper() + refusal.message[1:] + "."
        headers = [("WWW-Authenticate", 'Bearer realm="muxserver"')]
        if refusal.code != "unauthorized":
            headers.append(("Retry-After", str(refusal.retry_after)))
        elif self.offered_kind == SESSION:  # (the cookie is worthless now: forget it)
            headers.append(("Set-Cookie", self.cookie("", 0)))
        if close:
            headers.append(("Connection", "close"))
        link_refused = self.offered_kind == LINK and not refusal.missing
        page = signin_page(note, has_users=self.services.access.has_users,
                           link_refused=link_refused, recheck=refusal.missing)
        self.send_page(status, page, headers)

    # -- sessions

    def cookie(self, value: str, max_age: int) -> str:
        return (f"{SESSION_COOKIE}={value}; Path=/; Max-Age={max_age}; HttpOnly; "
                "SameSite=Strict" + ("; Secure" if self.channel.tls else ""))

    def start_session(self) -> str:
        """The Set-Cookie header value of a new session for this request's grant."""
        value, lifetime = self.services.access.session_for(self.grant)
        return self.cookie(value, lifetime)

    def sign_in_from_query(self, path: str, query: dict[str, str], kind: str) -> bool:
        """``?token=T`` and a folder's ``?share=L`` in a browser: a session, then the same
        address without them. True if answered; False: serve the request as it is (a
        link to a file, or a client that is no browser)."""
        if kind == "share" and (self.grant.only or not self.wants_a_page()):
            return False  # (served now: curl, the CLI, a link to one file)
        if kind == "token" and not self.services.access.token_required:
            return False
        rest = {k: v for k, v in query.items() if k not in ("token", "share", "replace")}
        # Always a path on this server: "//x" would be another site, so slashes go.
        location = "/" + urllib.parse.quote(path.lstrip("/")) + (
            "?" + urllib.parse.urlencode(rest) if rest else "")
        same_origin = self.request_headers.get("sec-fetch-site", "none") in (
            "same-origin", "none")
        if kind == "token":
            if not same_origin:  # (another site's link must not sign this browser in)
                page = signin_page("Sign in with the token in this address?",
                                   has_users=False, token=query.get("token", ""))
                self.send_page(200, page)
                return True
            self.respond(303, [("Location", location), ("Set-Cookie", self.start_session())],
                         b"token accepted\n")
            return True
        current = self.signed_in_as()
        if current is not None:  # (a person signed in here opens a link)
            shown = self.own_view_of_link(current)
            if shown is not None:  # their own view of what the link opens
                self.respond(303, [("Location", shown)], b"you can see it signed in\n")
                return True
            if query.get("replace") != "1" or not same_origin:
                again = self.request_target + ("&" if "?" in self.request_target else "?")
                page = signin_page(f"You are signed in as {current.who or 'somebody'}. This "
                                   "link opens what your account cannot; opening it signs "
                                   "you out in this browser.", has_users=False,
                                   confirm_url=again + "replace=1")
                self.send_page(200, page)
                return True
        # A page of ours that moves on: a link mostly comes from another site, and the
        # Strict cookie goes with a navigation our page starts, not with a redirect.
        page = signin_page("Opening the shared folder…", has_users=False, next_url=location)
        self.send_page(200, page, [("Set-Cookie", self.start_session())])
        return True

    def send_page(self, status: int, page: str,
                  headers: list[tuple[str, str]] | None = None) -> None:
        self.respond(status, [("Content-Type", "text/html; charset=utf-8"),
                              ("Cache-Control", "no-store"),
                              ("Content-Security-Policy", INDEX_CSP), *(headers or [])],
                     page.encode())

    def signed_in_as(self) -> Grant | None:
        """The account this browser's session cookie is for, if any, and valid."""
        session = session_cookie(self.request_headers)
        if not session:
            return None
        grant = self.services.access.check(self.channel.peer_host, Credential(SESSION, session))
        return grant if isinstance(grant, Grant) and grant.principal[:1] != (LINK,) else None

    def own_view_of_link(self, account: Grant) -> str | None:
        """Where ``account`` sees what the link of this request opens, if it can."""
        link = self.grant
        folder = account.scope
        target = link.scope + ("/" + link.only if link.only else "")
        if folder and not (target == folder or target.startswith(folder + "/")):
            return None
        if not account.allows(READ):
            return None
        shown = target[len(folder):].lstrip("/") if folder else target
        return "/" + urllib.parse.quote(shown) + ("" if link.only or not shown else "/")

    # -- /.muxserver-auth/

    def auth_request(self, method: str, route: str, query: dict[str, str]) -> None:
        """The routes below AUTH_PATH (admitted already, but sign-out)."""
        if route == "signin" and method == "POST":
            if self.offered_kind == SESSION:
                raise HttpError(400, "sign in with a name and password or a token")
            self.respond(204, [("Set-Cookie", self.start_session())])
        elif route == "whoami" and method == "GET":
            grant = self.grant
            self.send_json(200, {"who": grant.who, "link": self.offered_kind == LINK
                                 or grant.principal[:1] == (LINK,)})
        elif route == "share" and method == "POST":
            try:
                lifetime = parse_expiry(query.get("expires", "")) if query.get(
                    "expires") else DEFAULT_EXPIRY
            except ValueError as exc:
                raise HttpError(400, str(exc)) from None
            name = query.get("name", "").strip("/")
            link, capability = self.make_link(name, write=query.get("write") == "1",
                                              lifetime=lifetime)
            leaf = self.outside(link.path).rsplit("/", 1)[-1] if link.file else ""
            path = "/" + urllib.parse.quote(leaf) + "?share=" + capability
            # (the address this browser reached us by: what its person can pass on)
            url = (("https" if self.channel.tls else "http") + "://"
                   + self.request_headers.get("host", "") + path)
            self.send_json(201, {"id": link.id, "expires": link.expires, "file": link.file,
                                 "write": link.write, "path": path, "url": url,
                                 "qr": qr_data_uri(url)})
        elif route == "shares" and method == "GET":
            self.send_json(200, {"links": self.my_links()})
        elif route == "revoke" and method == "POST":
            self.revoke_link(query.get("id", ""))
            self.respond(204, [])
        else:
            raise HttpError(404, f"no such route {route!r} (signin, signout, whoami, share, "
                                 "shares, revoke)")

    def sign_out(self) -> None:
        """``POST /.muxserver-auth/signout``: the cookie goes (whatever it held)."""
        self.respond(204, [("Set-Cookie", self.cookie("", 0)),
                           ("Clear-Site-Data", '"cookies"')])



def basic_credential(value: str) -> Credential:
    """``Authorization: Basic`` (RFC 7617): a name and password; with no name, the
    password is a token. Anything that does not decode is a wrong password."""
    try:
        text = base64.b64decode(value, validate=True).decode("utf-8")
    except (binascii.Error, ValueError):
        return Credential(PASSWORD, "", "\0")
    user, _, password = text.partition(":")
    if not user:
        return Credential(TOKEN, password)
    return Credential(PASSWORD, password, user)


def qr_data_uri(text: str) -> str:
    """``text`` as a QR code: an SVG in a data: URI (the page's policy allows those)."""
    import segno

    return str(segno.make(text, error="m").svg_data_uri(scale=4, border=2))


def session_cookie(headers: dict[str, str]) -> str:
    """The session cookie's value a request carries ("" for none)."""
    for cookie in headers.get("cookie", "").split(";"):
        key, _, value = cookie.strip().partition("=")
        if key == SESSION_COOKIE and value:
            return value
    return ""
