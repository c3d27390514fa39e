"""The user file: the people and machines that may use the server, each with its rights
and, if it is limited to one, its folder.

One text file (``serve --token-file FILE``, ``user add NAME --file FILE``), mode 0600,
a line per account, ``#`` for comments:

* ``user NAME HASH [rights=R] [folder=F]``: a person, who signs in with a name and a
  password; HASH is the password's Argon2id hash (below);
* ``token NAME TOKEN [rights=R] [folder=F]``: a machine or a script, with a name for
  the logs and the console;
* ``TOKEN [RIGHTS]``: a token without a name (the older form, still read).

R is ``read,write,delete`` or part of it (all of them when left out); F is a folder
below the served root, percent-encoded, that the account sees as its whole root
(access.Scope). Nothing here checks the rights against the server's flags: access.py
does, per request.

**Passwords** are kept as Argon2id hashes (RFC 9106; argon2-cffi), with OWASP's
parameters for it (19 MiB, two passes, one lane): about 30 ms of CPU per check here,
where ``hashlib.scrypt`` at the strength OWASP asks of it (N=2^14, r=8, p=5) took 237 ms.
Checks are hashed by a helper thread, never by the event loop (:class:`PasswordChecks`),
and a check that succeeded is remembered (a keyed digest of the password, in memory
only), so HTTP Basic auth, which sends the password with every request, costs one hash
per person, not one per request.

**The file is live** (:class:`LiveAccounts`): a change takes effect without a restart.
The server looks at the file's identity (inode, size, times) at most once a second and
re-reads it only when that changed, or at once after SIGHUP (for a server without a
terminal: in one, SIGHUP is a hangup, server.py); a file that no longer
parses keeps the last good one, and the console says why. Writers (``user add``)
replace the file in one rename, so a reader never sees half of it.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import hashlib
import hmac
import logging
import os
import queue
import re
import secrets
import tempfile
import time
import urllib.parse
from typing import Any, Callable, Iterable

from .names import BadName, split_name

log = logging.getLogger("muxserver")

READ, WRITE, DELETE = "read", "write", "delete"
ALL_RIGHTS = frozenset({READ, WRITE, DELETE})
USER, TOKEN = "user", "token"
#: A user's or a token's name: no spaces (the file's separator), no colon (HTTP Basic
#: auth ends the name at the first one), nothing that could pass for a flag.
NAME_PATTERN = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._@+-]{0,63}")
#: The shortest token a file may hold (``token`` makes 43 characters).
MIN_TOKEN = 8
#: A file whose last line has no end, changed less than this long ago, is being written.
WRITING_GRACE = 2.0
#: How often, at most, the server looks at the file for changes (seconds).
CHECK_INTERVAL = 1.0
#: Successful password checks remembered, at most (forgotten all at once past it).
VERIFIED_CACHE = 1024


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    """One line of the user file."""

    kind: str  # USER or TOKEN
    name: str  # "" for a token without one
    secret: str  # a user's password hash, or the token itself
    rights: frozenset[str] = ALL_RIGHTS
    folder: str = ""  # below the root; "" is all of it

    @property
    def label(self) -> str:
        """How logs and the console name it (never the token)."""
        if self.kind == USER:
            return self.name
        return f"token {self.name}" if self.name else "a token"

    def line(self) -> str:
        """The account as a line of the file."""
        if self.kind == TOKEN and not self.name and not self.folder:
            rights = "" if self.rights == ALL_RIGHTS else " " + format_rights(self.rights)
            return self.secret + rights  # (the older form, as it was written)
        words = [self.kind, self.name, self.secret]
        if self.rights != ALL_RIGHTS:
            words.append("rights=" + format_rights(self.rights))
        if self.folder:
            words.append("folder=" + urllib.parse.quote(self.folder, safe="/"))
        return " ".join(words)


def format_rights(rights: Iterable[str]) -> str:
    return ",".join(r for r in (READ, WRITE, DELETE) if r in set(rights))


def parse_rights(text: str) -> frozenset[str]:
    """``read,write`` and the like; ValueError naming an unknown right."""
    words = [w.strip() for w in text.split(",") if w.strip()]
    unknown = [w for w in words if w not in ALL_RIGHTS]
    if unknown:
        raise ValueError(f"unknown right {unknown[0]!r}: the rights are read, write and delete")
    return frozenset(words) if words else ALL_RIGHTS


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name):
        raise ValueError(f"{name!r} is not a usable name: letters, digits and . _ @ + -, "
                         "up to 64, not beginning with a dot or a dash")
    return name


def check_folder(folder: str) -> str:
    """A folder below the root, in the form names.py allows ("" for the root itself);
    leading and trailing slashes are forgiven."""
    folder = folder.strip("/")
    if not folder:
        return ""
    try:
        return "/".join(split_name(folder))
    except BadName as exc:
        raise ValueError(f"the folder {folder!r}: {exc.message}") from None


def parse_line(text: str) -> Account | None:
    """One line of the user file; None for a blank line or a comment; ValueError
    saying what is wrong with it."""
    text = text.strip()
    if not text or text.startswith("#"):
        return None
    words = text.split()
    if words[0] in (USER, TOKEN):
        if len(words) < 3:
            raise ValueError(f"a {words[0]} line is '{words[0]} NAME "
                             f"{'HASH' if words[0] == USER else 'TOKEN'} [rights=R] "
                             "[folder=F]'")
        kind, name, secret, options = words[0], words[1], words[2], words[3:]
        check_name(name)
        if kind == TOKEN and len(secret) < MIN_TOKEN:
            raise ValueError(f"the token of {name!r} is too short to be safe (at least "
                             f"{MIN_TOKEN} characters)")
        if kind == USER and not secret.startswith("$argon2id$"):
            raise ValueError(f"the user {name!r} has no password hash (make one with "
                             "'python -m muxserver user add')")
        rights, folder = ALL_RIGHTS, ""
        for option in options:
            key, eq, value = option.partition("=")
            if key in ("rights", "folder") and not value.strip(",/"):
                raise ValueError(f"{key}= says nothing (leave it out for "
                                 f"{'every right' if key == 'rights' else 'the whole root'})")
            if key == "rights" and eq:
                rights = parse_rights(value)
            elif key == "folder" and eq:
                folder = check_folder(urllib.parse.unquote(value))
            else:
                raise ValueError(f"unknown setting {option!r} (rights=... and folder=... "
                                 "are known)")
        return Account(kind, name, secret, rights, folder)
    # The older form: a token alone, or a token and its rights (the last word gives
    # rights only if it is a list of them, so a pass phrase with spaces is one token).
    # What is plainly a broken account line is never taken for a token: a user line
    # with a word mistyped must not let anyone in with that line as a password.
    if "$argon2" in text or any(w.startswith(("rights=", "folder=")) for w in words):
        raise ValueError("not a line of the user file (a user line is 'user NAME HASH "
                         "[rights=R] [folder=F]', a token's 'token NAME TOKEN ...')")
    token, _, last = text.rpartition(" ")
    rights_words = [w for w in last.split(",") if w]
    if token.strip() and rights_words and all(w in ALL_RIGHTS for w in rights_words):
        text, rights = token.strip(), frozenset(rights_words)
    else:
        if token.strip() and "," in last and all(w.isalpha() for w in rights_words):
            parse_rights(last)  # (raises, naming the unknown right: a typo)
        rights = ALL_RIGHTS
    if len(text) < MIN_TOKEN:
        raise ValueError(f"a token of {len(text)} characters is too easy to guess (at "
                         f"least {MIN_TOKEN}: python -m muxserver token makes one)")
    return Account(TOKEN, "", text, rights)


@dataclasses.dataclass(frozen=True)
class Accounts:
    """The accounts of one reading of the file."""

    users: dict[str, Account]  # by name
    tokens: dict[bytes, Account]  # by the token's SHA-256 (access.py compares digests)

    @classmethod
    def of(cls, accounts: Iterable[Account]) -> "Accounts":
        users: dict[str, Account] = {}
        tokens: dict[bytes, Account] = {}
        for account in accounts:
            if account.kind == USER:
                users[account.name] = account
            else:
                tokens[token_digest(account.secret)] = account
        return cls(users, tokens)

    def __len__(self) -> int:
        return len(self.users) + len(self.tokens)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).digest()


# -- the file


def read_lines(path: str) -> list[tuple[str, Account | None]]:
    """Every line of the file with its account (None: a comment or a blank line).
    OSError if it cannot be read; ValueError naming the line that is wrong."""
    with open(path, encoding="utf-8") as f:
        text = f.read()
    lines = []
    for number, line in enumerate(text.splitlines(), 1):
        try:
            lines.append((line, parse_line(line)))
        except ValueError as exc:
            raise ValueError(f"{path}, line {number}: {exc}") from None
    return lines


def read_accounts(path: str) -> Accounts:
    try:
        lines = read_lines(path)
    except UnicodeDecodeError as exc:
        raise ValueError(f"{path} is not UTF-8 text: {exc.reason}") from None
    return Accounts.of(account for _, account in lines if account is not None)


def write_lines(path: str, lines: Iterable[str]) -> None:
    """Replace the file with ``lines``, mode 0600, in one rename (a reader sees the old
    file or the new one, never a part), flushed to disk first."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, temp = tempfile.mkstemp(prefix=".muxserver-users-", dir=folder)  # (mode 0600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write("".join(line + "\n" for line in lines))
            f.flush()
            os.fsync(f.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    with contextlib.suppress(OSError):
        dir_fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


# -- passwords


def _hasher() -> Any:
    from argon2 import PasswordHasher  # (imported when a password is first used)

    return PasswordHasher(time_cost=2, memory_cost=19 * 1024, parallelism=1)


def hash_password(password: str) -> str:
    return str(_hasher().hash(password))


def password_matches(stored: str, password: str) -> bool:
    from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

    try:
        return bool(_hasher().verify(stored, password))
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


@dataclasses.dataclass(frozen=True, slots=True)
class PasswordCheck:
    """A password that must be hashed to be checked: the session waits for the helper
    thread (PasswordChecks.check_later), then asks again and gets the answer at once."""

    mark: bytes  # (PasswordChecks.mark_of: what the answer is remembered by)
    stored: str  # the hash to check against (a decoy's for a name that is no user)
    password: str


class PasswordChecks:
    """Password checks: hashed by a helper thread, never by the event loop (about 30 ms
    of CPU each), and remembered. A check that succeeded is remembered for good (until
    the password or the process changes); one that failed is remembered until it has
    been told once. The key of both is a digest of the stored hash, the name and the
    password under a random key of this process, so a memory dump shows no password and
    a changed password (a new hash) is checked again."""

    #: Checks waiting for the helper, at most; past that a sign-in is told to come back.
    MAX_WAITING = 64
    #: ... and from one address: a guesser's checks then come one after another, and
    #: its wrong ones reach the back-off (access.py) before it can queue many more.
    MAX_WAITING_PER_ADDRESS = 2

    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)
        self._verified: set[bytes] = set()
        self._refused: set[bytes] = set()
        self.slow_checks = 0  # (for tests and the curious: hashes actually computed)
        self.waiting = 0  # checks handed to the helper, not answered yet
        self.waiting_from: collections.Counter[str] = collections.Counter()  # by address
        self._jobs: queue.SimpleQueue[tuple[PasswordCheck, Callable[[bool], None]]] | None = None

    def mark_of(self, name: str, stored: str, password: str) -> bytes:
        return hmac.new(self._key, "\0".join((name, stored, password)).encode(
            "utf-8", "surrogatepass"), hashlib.sha256).digest()

    def known(self, mark: bytes) -> bool | None:
        """True or False if this check's answer is known (a refusal is told once), else
        None: it must be hashed."""
        if mark in self._verified:
            return True
        if mark in self._refused:
            self._refused.discard(mark)
            return False
        return None

    def busy_for(self, address: str) -> str:
        """Why a check from ``address`` must not wait now ("" when it may)."""
        if self.waiting >= self.MAX_WAITING:
            return "too many sign-ins at once; try again in a second"
        if self.waiting_from[address] >= self.MAX_WAITING_PER_ADDRESS:
            return (f"sign-ins from {address} are being checked already; try again in a "
                    "second")
        return ""

    def record(self, check: PasswordCheck, ok: bool, address: str = "") -> None:
        """The helper's answer, kept (in the loop's thread)."""
        self.waiting -= 1
        self.waiting_from[address] -= 1
        if self.waiting_from[address] <= 0:
            del self.waiting_from[address]
        self._keep(check, ok)

    def check_now(self, check: PasswordCheck) -> None:
        """Hash ``check`` in this thread, and keep the answer (for a caller that cannot
        wait for the helper)."""
        self.slow_checks += 1
        self._keep(check, password_matches(check.stored, check.password))

    def _keep(self, check: PasswordCheck, ok: bool) -> None:
        kept = self._verified if ok else self._refused
        if len(kept) >= VERIFIED_CACHE:
            kept.clear()
        kept.add(check.mark)

    def check_later(self, check: PasswordCheck, done: Callable[[bool], None],
                    address: str = "") -> None:
        """Hash ``check`` in the helper thread; ``done(ok)`` is then called *from that
        thread* (hand it to the loop with ``call_soon_threadsafe``), and ``record``
        must be called with the answer in the loop."""
        if self._jobs is None:
            from .hashing import start_helper

            self._jobs = queue.SimpleQueue()
            start_helper(_check_passwords, self._jobs, "muxserver-passwords")
        self.waiting += 1
        self.waiting_from[address] += 1
        self.slow_checks += 1
        self._jobs.put((check, done))


def _check_passwords(jobs: queue.SimpleQueue[tuple[PasswordCheck, Callable[[bool], None]]]
                     ) -> None:
    while True:
        check, done = jobs.get()
        done(password_matches(check.stored, check.password))


# -- the live file


class LiveAccounts:
    """The accounts of the user file as it is now (see the module docstring)."""

    def __init__(self, path: str, clock: Callable[[], float] = time.monotonic) -> None:
        """Reads the file once; OSError or ValueError if it cannot be used at all."""
        self.path = path
        self._clock = clock
        self.current = read_accounts(path)
        self._identity = self._stat_identity()
        self._checked = clock()
        self._forced = False
        self.problem = ""  # why the last reading was not taken ("" when it was)

    def _stat_identity(self) -> tuple[int, ...]:
        st = os.stat(self.path)
        return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)

    def _being_written(self) -> bool:
        """The file's last line has no end yet and it changed a moment ago: somebody
        is writing it in place (an editor, ``>>``). A line cut short could be a whole
        line of its own (a user without the ``folder=`` that limits them): wait."""
        try:
            with open(self.path, "rb") as f:
                size = f.seek(0, os.SEEK_END)
                if not size:
                    return False
                f.seek(size - 1)
                ended = f.read(1) == b"\n"
                changed = os.fstat(f.fileno()).st_mtime
        except OSError:
            return False
        return not ended and time.time() - changed < WRITING_GRACE

    def reload_now(self) -> None:
        """Read the file now, changed or not (SIGHUP)."""
        self._forced = True
        self.get()

    def get(self) -> Accounts:
        now = self._clock()
        if self._forced or now - self._checked >= CHECK_INTERVAL:
            self._checked = now
            self._refresh()
        return self.current

    def _refresh(self) -> None:
        forced, self._forced = self._forced, False
        try:
            identity = self._stat_identity()
        except OSError as exc:
            self._keep(f"cannot read it: {exc.strerror}")
            return
        if identity == self._identity and not forced:
            return
        if self._being_written():
            return  # (looked at again in a second, when it is whole)
        self._identity = identity
        try:
            accounts = read_accounts(self.path)
        except (OSError, ValueError) as exc:
            self._keep(str(exc.strerror if isinstance(exc, OSError) else exc))
            return
        self.problem = ""
        self.current = accounts
        log.info("the user file %s was read again: %d user(s), %d token(s)", self.path,
                 len(accounts.users), len(accounts.tokens), extra={"event": "accounts"})

    def _keep(self, why: str) -> None:
        if why != self.problem:  # (said once, not once a second)
            log.warning("the user file %s is not usable (%s): keeping the accounts read "
                        "before", self.path, why, extra={"event": "accounts"})
        self.problem = why
