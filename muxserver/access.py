"""Who may use the server, and for what: tokens, users, browser sessions and share
links, each checked into a :class:`Grant` (its rights and its folder); the server's
own limits on writing; the back-off after wrong guesses; and the HTTP Host names.

Every rule of access lives here, once, for both protocols; the sessions only ask.

* **Rights.** What a request may do is a :class:`Grant`: the rights ``read`` (get,
  stat, list, the index page), ``write`` (put, mkdir) and ``delete`` (rm, mv), and
  whether it may *replace* an existing file (which destroys the old one: it takes
  ``write`` and ``delete``, and ``read``: see the drop box below). The server's flags
  are the ceiling (``--read-only``: no writes of any kind; ``--upload-only``: a drop
  box, nothing read or listed, nothing replaced or deleted; ``--allow-overwrite`` and
  ``--allow-delete``: replacing and deleting at all), and an account's rights narrow it
  (the user file, accounts.py: ``TOKEN read,write``, ``user NAME HASH rights=read``); a
  bare token, or no credentials at all on an open server, means the whole ceiling.
* **A folder.** An account (or a link) limited to a folder sees it as the root: the
  grant carries it (``scope``) and rules.py joins every name of every request below
  it, for every route; nothing above it exists for the request.
* **Who.** A request offers a :class:`Credential`: a token, a name and password
  (checked against an Argon2id hash, accounts.py), a browser's session (a value the
  server signed, seals.py, naming the account and checked against the user file as it
  is *now*: a removed user or a changed password ends it), or a share link (shares.py:
  read-only, or a drop box, on one file or folder, until it expires).
* **A writer that may not read** (a drop box) is never told which names exist: the
  storage puts its uploads and folders beside whatever is there, and what would
  answer differently for a taken name (removing, moving, replacing) needs ``read``.
* **Tokens** are looked up by their SHA-256: a lookup's timing can tell at most how
  many leading bytes of a digest match, and a digest does not give its token back; a
  password's hash is checked by Argon2 itself. Any string a client sends (even one
  holding a lone surrogate, which UTF-8 cannot encode) is simply wrong, never an
  exception. Neither a token nor a password is ever logged.
* **Wrong tokens and passwords count per address**, together, not only per connection: a connection is closed
  after a few failures (vsftpd's ``max_login_fails``), but a guesser just reconnects.
  So after ``address_auth_failures`` wrong tokens from one address within
  ``auth_backoff`` seconds, every attempt from that address is refused, right or
  wrong, until ``auth_backoff`` seconds have passed (fail2ban's ban). Refusing the right
  token too is the point: otherwise the back-off would still answer the guesser's
  question. Requests that carry no credentials at all are not guesses and do not count
  here, and neither do an ended session or a dead link (nobody guesses those: a forged
  one is refused by its signature).
* **Cross-site requests** (HTTP only): any web page can make a browser send requests
  here (an ``<img>``, a form, a script). Browsers say where a request comes from
  (``Sec-Fetch-Site``, ``Origin``); a request from another site may change nothing
  (Django's CSRF middleware, Jupyter's origin check), and the credentials it carries
  are not even looked at unless it is a navigation a person made (a link followed):
  otherwise a page could make its visitors' browsers guess tokens, and ban the
  owner's own address with the wrong ones. A guesser that claims to be cross-site
  gains nothing: its guesses are not checked.
* **Host names** (HTTP only): a server on loopback is still reachable from any web page
  by DNS rebinding: a page on ``evil.example`` whose name is made to resolve to
  127.0.0.1 talks to us with ``Host: evil.example``. Like Jupyter, webpack-dev-server
  and Transmission, we answer only Host names we know: IP literals (a rebinding needs a
  *name*), ``localhost``, the bound name, the machine's names when bound beyond
  loopback, and those given with ``--allow-host``.

This module does no I/O but asking the OS for the machine's host name, once.
"""

from __future__ import annotations

import dataclasses
import hashlib
import ipaddress
import secrets
import socket
import time
from typing import Callable, Iterable, Mapping

from .accounts import (
    ALL_RIGHTS,
    DELETE,
    READ,
    WRITE,
    Account,
    Accounts,
    LiveAccounts,
    PasswordCheck,
    PasswordChecks,
    token_digest,
)
from .accounts import TOKEN as ACCOUNT_TOKEN
from .limits import Limits
from .seals import SESSION, Seal
from .shared import LocalStrikes, StrikeBook
from .shares import ShareBook
from .units import parse_count

__all__ = ["ALL_RIGHTS", "DELETE", "READ", "WRITE"]


@dataclasses.dataclass(frozen=True, slots=True)
class Grant:
    """What one admitted request may do, and on whose behalf."""

    rights: frozenset[str]
    replace: bool  # may replace an existing file (rights read, write and delete, and the flag)
    #: Who writes (the SHA-256 of the token; b"" on a server without tokens): what an
    #: upload left for later (a partial file, a tus upload) belongs to its writer.
    writer: bytes = b""
    #: The folder this grant sees as its whole root ("" is the served root): Scope.
    scope: str = ""
    #: A link to one file: the only name (in ``scope``) it may read; "" otherwise.
    only: str = ""
    who: str = ""  # how logs and the console name it ("" on a server without accounts)
    #: What a browser's session for it names (Access.session_for); () for none.
    principal: tuple[str, ...] = ()
    #: An account with every right and no folder: it sees every share link, not only its own.
    admin: bool = False

    def allows(self, right: str) -> bool:
        return right in self.rights


@dataclasses.dataclass(frozen=True, slots=True)
class Ceiling:
    """What the server's flags allow anyone at all."""

    read_only: bool = False
    upload_only: bool = False
    allow_overwrite: bool = False
    allow_delete: bool = False

    def __post_init__(self) -> None:
        if self.read_only and self.upload_only:
            raise ValueError("--read-only and --upload-only exclude each other")

    def grant(self, rights: frozenset[str]) -> Grant:
        """The grant of a token with ``rights``, under this ceiling."""
        allowed = set(rights)
        if self.read_only:
            allowed -= {WRITE, DELETE}
        if self.upload_only:
            allowed -= {READ, DELETE}
        if not self.allow_delete:
            allowed.discard(DELETE)
        # Replacing needs read too: a writer that may not read must not learn which
        # names exist, and "replaced" against "created" would tell it.
        replace = (self.allow_overwrite and not self.read_only and not self.upload_only
                   and {READ, WRITE, DELETE} <= rights)
        return Grant(frozenset(allowed), replace)


@dataclasses.dataclass(frozen=True, slots=True)
class Credential:
    """What a request offers to be let in: a token, a name and password, a browser's
    signed session (seals.py), or a share link's capability (shares.py)."""

    kind: str  # TOKEN, PASSWORD, SESSION or LINK
    value: str
    user: str = ""  # the name, with a password

    @property
    def guess(self) -> bool:
        """Whether a wrong one is somebody guessing (and counts for the back-off)."""
        return self.kind in (TOKEN, PASSWORD)


TOKEN, PASSWORD, SESSION, LINK = "token", "password", "session", "link"


@dataclasses.dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request is not admitted: a stable error code, a sentence, and (for a
    back-off) how many seconds until the address may try again."""

    code: str
    message: str
    retry_after: int = 0
    missing: bool = False  # no credentials were offered at all (not a guess)
    #: What was refused was a share link or a session (expired, revoked, changed): the
    #: page says so, instead of asking to sign in as if nothing had been offered.
    lapsed: bool = False


#: A session lasts this long by default (--session-days).
SESSION_DAYS = 30


class Access:
    """The server's access policy: asked once per request, by every session."""

    def __init__(self, tokens: Mapping[str, frozenset[str]] | None, limits: Limits,
                 hosts: "HostNames", ceiling: Ceiling = Ceiling(),
                 clock: Callable[[], float] = time.monotonic,
                 strikes: StrikeBook | None = None, *, accounts: LiveAccounts | None = None,
                 seal: Seal | None = None, shares: ShareBook | None = None,
                 wall: Callable[[], float] = time.time,
                 session_days: float = SESSION_DAYS) -> None:
        """``tokens``: each token and its rights, fixed for the server's life (--token);
        ``accounts``: the user file, read again when it changes; with neither, no
        credentials are needed. ``strikes``: where wrong guesses are counted (shared.py:
        one book for all the worker processes of a server). ``seal``: signs sessions
        (seals.py); ``shares``: the share links (shares.py)."""
        self.ceiling = ceiling
        self._fixed = Accounts.of(Account(ACCOUNT_TOKEN, "", token, rights)
                                  for token, rights in (tokens or {}).items())
        self.accounts = accounts
        self._open = ceiling.grant(ALL_RIGHTS)  # what anyone gets without credentials
        self.limits = limits
        self.hosts = hosts
        self._clock, self._wall = clock, wall
        self._strikes: StrikeBook = strikes if strikes is not None else LocalStrikes()
        self.seal = seal if seal is not None else Seal(secrets.token_bytes(32))
        self.shares = shares
        self.passwords = PasswordChecks()
        self.session_seconds = session_days * 86400
        #: how other machines name this server ("" on loopback): share links say it
        self.public_host = ""
        #: a password sent as HTTP Basic is taken over plain HTTP from other machines
        #: too (--allow-basic-over-http); else only over TLS or from this machine
        self.basic_over_http = False

    @property
    def token_required(self) -> bool:
        return bool(self._fixed.tokens) or self.accounts is not None

    @property
    def has_users(self) -> bool:
        return self.accounts is not None and bool(self.accounts.get().users)

    def check(self, address: str, offered: Credential | str | None, *,
              can_wait: bool = True) -> Refusal | Grant | PasswordCheck:
        """What a request from ``address`` presenting ``offered`` (a token, or any
        Credential) may do, or why not; or, for a password not checked yet, the check
        to run first (off the loop: session.py), after which the same call answers.
        ``can_wait`` False: the caller cannot wait (a request in the middle of another's
        upload): a password is then hashed at once, here (rare: the answers are kept)."""
        if isinstance(offered, Credential) and offered.kind == LINK and self.shares:
            opened = self._link_grant(offered.value)  # (a link works on an open server too)
            return opened if isinstance(opened, Grant) else Refusal(
                "unauthorized", opened, lapsed=True)
        if not self.token_required:
            return self._open
        now = self._clock()
        blocked_until = self._strikes.blocked_until(address)
        if blocked_until > now:
            wait = max(1, round(blocked_until - now))
            return Refusal("too_many_attempts", f"too many wrong tokens or passwords from "
                                                f"{address}; try again in {wait} s", wait)
        if offered is None:
            return Refusal("unauthorized", "this server needs a token, or a name and "
                                           "password", missing=True)
        if isinstance(offered, str):
            offered = Credential(TOKEN, offered)
        verdict = self._identify(offered)
        if isinstance(verdict, PasswordCheck) and not can_wait:
            self.passwords.check_now(verdict)
            verdict = self._identify(offered)
        if isinstance(verdict, (Grant, PasswordCheck)):
            return verdict
        if offered.guess:
            self._strikes.strike(address, now, self.limits.auth_backoff,
                                 self.limits.address_auth_failures)
        return Refusal("unauthorized", verdict, lapsed=not offered.guess)

    def _identify(self, offered: Credential) -> Grant | PasswordCheck | str:
        """The grant of ``offered``, or why it has none (a sentence), or the password
        check to run before it can be told."""
        if offered.kind == TOKEN:
            account = self._token(token_digest(offered.value))
            return self._grant(account) if account else "wrong token"
        if offered.kind == PASSWORD:
            user = self.accounts.get().users.get(offered.user) if self.accounts else None
            # (a name that is no user's is checked against a decoy: the same time)
            stored = user.secret if user is not None else _DECOY_HASH
            mark = self.passwords.mark_of(offered.user, stored, offered.value)
            known = self.passwords.known(mark)
            if known is None:
                return PasswordCheck(mark, stored, offered.value)
            if not known or user is None:
                return "wrong name or password"
            return self._grant(user)
        if offered.kind == SESSION:
            return self._session_grant(offered.value)
        return self._link_grant(offered.value)

    def _token(self, digest: bytes) -> Account | None:
        account = self._fixed.tokens.get(digest)
        if account is None and self.accounts is not None:
            account = self.accounts.get().tokens.get(digest)
        return account

    def _grant(self, account: Account) -> Grant:
        if account.kind == ACCOUNT_TOKEN:
            writer = token_digest(account.secret)
            principal: tuple[str, ...] = (TOKEN, writer.hex())
        else:
            writer = hashlib.sha256(b"user\0" + account.name.encode("utf-8")).digest()
            principal = (PASSWORD, account.name, _fingerprint(account.secret))
        who = account.label if self.accounts is not None and (
            account.name or account.kind != ACCOUNT_TOKEN) else ""
        return dataclasses.replace(self.ceiling.grant(account.rights), writer=writer,
                                   scope=account.folder, who=who, principal=principal,
                                   admin=account.rights == ALL_RIGHTS and not account.folder)

    def _link_grant(self, capability: str) -> Grant | str:
        if self.shares is None:
            return "this server has no share links"
        link = self.shares.check(capability)
        if isinstance(link, str):
            return link
        right = WRITE if link.write else READ
        maker = self._maker(link.by)
        if maker is not None and (right not in maker.rights or not _within(
                link.path, maker.folder)):
            maker = None
        if maker is None:  # (removed, or no longer allowed what the link opens)
            return ("this link no longer works: the person who shared it no longer has "
                    "that access")
        grant = self.ceiling.grant(frozenset({right}))
        scope, only = link.path, ""
        if link.file:
            scope, _, only = link.path.rpartition("/")
        return dataclasses.replace(
            grant, writer=hashlib.sha256(b"link\0" + link.id.encode("ascii")).digest(),
            scope=scope, only=only, who=f"link {link.id}", principal=(LINK, capability))

    def _maker(self, by: str) -> Account | None:
        """The account that made a link, as it is now (rules.link_maker says how a
        link names it); None if it is gone."""
        kind, _, ident = by.partition(":")
        if kind == PASSWORD:
            return self.accounts.get().users.get(ident) if self.accounts else None
        if kind == TOKEN and ident:
            every = list(self._fixed.tokens.items())
            if self.accounts is not None:
                every += list(self.accounts.get().tokens.items())
            return next((account for digest, account in every
                         if digest.hex().startswith(ident)), None)
        return None

    # -- a browser's session

    def session_for(self, grant: Grant) -> tuple[str, int]:
        """(the signed cookie value of a session for ``grant``, its lifetime in s)."""
        lifetime = int(self.session_seconds)
        expires = round(self._wall() + lifetime)
        return self.seal.sign(SESSION, [*grant.principal, expires]), lifetime

    def _session_grant(self, value: str) -> Grant | str:
        fields = self.seal.open(SESSION, value)
        ended = "your session has ended: sign in again"
        if not fields or not isinstance(fields[-1], (int, float)):
            return ended
        if fields[-1] <= self._wall():
            return ended
        kind, ident = fields[0], fields[1:-1]
        if kind == TOKEN and len(ident) == 1 and isinstance(ident[0], str):
            try:
                account = self._token(bytes.fromhex(ident[0]))
            except ValueError:
                account = None
            return self._grant(account) if account else ended
        if kind == PASSWORD and len(ident) == 2 and self.accounts is not None:
            user = self.accounts.get().users.get(str(ident[0]))
            if user is None or _fingerprint(user.secret) != ident[1]:
                return ended  # (removed, or the password changed)
            return self._grant(user)
        if kind == LINK and len(ident) == 1 and isinstance(ident[0], str):
            return self._link_grant(ident[0])
        return ended

    def why_not(self, right: str, grant: Grant | None = None) -> str:
        """Why a request lacks ``right``, in words: the server's flags, or its account."""
        ceiling = self.ceiling
        if ceiling.read_only and right != READ:
            return "this server is read-only"
        if ceiling.upload_only and right != WRITE:
            return "this server only takes uploads (a drop box)"
        if right == DELETE and not ceiling.allow_delete:
            return "this server does not delete or move files (--allow-delete)"
        kind = grant.principal[0] if grant is not None and grant.principal else TOKEN
        if kind == LINK:
            return ("this link is a drop box: it takes uploads and shows nothing"
                    if grant is not None and WRITE in grant.rights else
                    "this link opens read-only")
        if kind == PASSWORD and grant is not None:
            return f"the user {grant.principal[1]} does not have the {right!r} right"
        return f"this token does not have the {right!r} right"

    def why_not_blind(self) -> str:
        """Why a writer that may not read may not remove or move: the answer would
        tell it which names exist."""
        return ("removing and moving need the read right too (a writer that may not read "
                "is never told which names exist)")

    def why_not_replace(self, grant: Grant | None = None) -> str:
        ceiling = self.ceiling
        if ceiling.read_only or ceiling.upload_only or not ceiling.allow_overwrite:
            return "this server does not overwrite files (--allow-overwrite)"
        kind = grant.principal[0] if grant is not None and grant.principal else TOKEN
        who = ("this link" if kind == LINK else f"the user {grant.principal[1]}"
               if kind == PASSWORD and grant is not None else "this token")
        return f"{who} may not replace files (that takes the read, write and delete rights)"

    def host_allowed(self, host: str | None) -> bool:
        return self.hosts.allows(host)


def from_another_site(headers: Mapping[str, str]) -> bool:
    """Whether a browser says this request comes from another site's page. Its
    ``Sec-Fetch-Site`` says it when present (every current browser sends it; a proxy
    that rewrites Host cannot confuse it, as Go's CrossOriginProtection reasons);
    else an ``Origin`` that is not this server's own (the scheme aside: a TLS proxy in
    front changes it). Requests that say neither (curl, scripts, WebDAV clients) are
    not from a page."""
    site = headers.get("sec-fetch-site", "").strip().lower()
    if site:
        return site not in ("same-origin", "none")
    origin = headers.get("origin")
    if origin is None:
        return False
    scheme, sep, authority = origin.strip().lower().partition("://")
    host = headers.get("host", "").strip().lower()
    default = {"http": ":80", "https": ":443"}.get(scheme, "")
    return not sep or authority.removesuffix(default) != host.removesuffix(default)


def navigated_by_a_person(headers: Mapping[str, str]) -> bool:
    """A top-level navigation a person made (a link clicked, an address typed): what
    a share link is. A page cannot make one at will: without the person's gesture
    (``Sec-Fetch-User: ?1``) a script's navigations say so, and they do not count."""
    return (headers.get("sec-fetch-mode", "").lower() == "navigate"
            and headers.get("sec-fetch-dest", "").lower() == "document"
            and headers.get("sec-fetch-user", "") == "?1")


def changes_state(method: str) -> bool:
    """Methods that may change something (RFC 9110's "safe" methods do not)."""
    return method not in ("GET", "HEAD", "OPTIONS", "PROPFIND")


def _within(path: str, folder: str) -> bool:
    """Whether ``path`` is ``folder`` or below it ("" is the whole root)."""
    return not folder or path == folder or path.startswith(folder + "/")


def _fingerprint(password_hash: str) -> str:
    """A short digest of a user's password hash: a session names it, so a new password
    ends the sessions signed in with the old one."""
    return hashlib.sha256(password_hash.encode("ascii", "replace")).hexdigest()[:16]


#: A hash no password matches, checked for a name that is no user's: a wrong name
#: takes as long as a wrong password, so the time does not tell which names exist.
_DECOY_HASH = ("$argon2id$v=19$m=19456,t=2,p=1$bXV4c2VydmVyLWRlY295$"
               "zOdOtqTThsgQGqMDMbGwq3RJZ3C3wQ46d6DWMHDY3+U")


class HostNames:
    """The ``Host`` header values this server answers to (see the module docstring)."""

    def __init__(self, bound_host: str, allowed: Iterable[str] = (),
                 machine_names: Iterable[str] | None = None) -> None:
        allowed = [name.strip().lower().rstrip(".") for name in allowed]
        self.any = "*" in allowed
        self.suffixes = tuple(name for name in allowed if name.startswith("."))
        self.names = {name for name in allowed if name and not name.startswith(".")}
        self.names.add("localhost")
        bound = bound_host.strip("[]").lower().rstrip(".")
        if bound and not _is_ip(bound):
            self.names.add(bound)
        if not _is_loopback(bound):
            self.names.update(machine_names if machine_names is not None
                              else _machine_names())

    def allows(self, host: str | None) -> bool:
        if self.any or host is None:  # no Host at all: HTTP/1.0, never a browser
            return True
        name = _host_name(host)
        if name is None:
            return False
        if _is_ip(name) or name in self.names or name.endswith(".localhost"):
            return True  # (RFC 6761: *.localhost resolves to loopback, never via DNS)
        return any(name.endswith(suffix) for suffix in self.suffixes)

    def describe(self) -> str:
        """The allowed names, for a refusal message and the docs."""
        if self.any:
            return "any"
        extra = sorted(self.names) + ["*" + s for s in self.suffixes]
        return ", ".join(extra) + ", and IP addresses"


def _host_name(host: str) -> str | None:
    """The name part of a Host header value (no port, lower case), or None if malformed."""
    host = host.strip()
    if host.startswith("["):  # an IPv6 literal: [::1] or [::1]:8080
        end = host.find("]")
        rest = host[end + 1:] if end > 0 else ""
        if end < 0 or (rest and not (rest[0] == ":" and parse_count(rest[1:]) is not None)):
            return None
        return host[1:end].lower()
    name, colon, port = host.rpartition(":")
    if not colon:
        name = host
    elif parse_count(port) is None:
        return None
    name = name.lower().rstrip(".")
    return name or None


def _is_ip(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _machine_names() -> set[str]:
    """This machine's names, as a client on the network may type them (no DNS lookup:
    the name comes from the kernel, so starting the server never waits on a resolver)."""
    name = socket.gethostname().lower().rstrip(".")
    if not name:
        return set()
    short = name.split(".")[0]
    return {name, short, f"{short}.local"}
