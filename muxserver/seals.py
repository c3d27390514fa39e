"""The server secret, and what it signs: a browser's session, and share links.

A signed value is ``PAYLOAD.MAC``: the payload (a short JSON list, base64url) and an
HMAC-SHA256 of it under the server secret, told apart by purpose (a session cookie can
never pass for a share link). Changing one byte of either part makes it worthless, and
nobody without the secret can make one; so the server keeps no table of sessions: the
cookie carries who it is for and until when, and each request checks it against the
user file *as it is now* (access.py), so removing a user or a token, or changing a
password, ends its sessions at their next request.

The secret is a file of its own (``--secret-file``, by default ``.muxserver-secret`` in
the served root, a name no request can reach), 32 random bytes made on the first start,
mode 0600. Servers that share the root (several machines behind a load balancer, or a
restart) share it, so a session or a link made by one is good on all of them. Where the
file cannot be made (a read-only root), the secret lives in memory: sessions and links
then end with the process, and the server says so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import os
import secrets
import tempfile
from typing import Any

log = logging.getLogger("muxserver")

SECRET_NAME = ".muxserver-secret"
SECRET_BYTES = 32
MAC_BYTES = 16  # 128 bits of the HMAC: enough against forgery, short in a URL
#: What a signature is for: one purpose's value never checks as another's.
SESSION, SHARE = "session", "share"


class Seal:
    """Signs and checks values with the server secret."""

    def __init__(self, key: bytes | None = None, *, path: str = "") -> None:
        """A secret ``key`` given, or the one in the file ``path``, made when it is
        first needed: a server where nobody signs in and nothing is shared leaves no
        file behind."""
        self._key = key
        self.path = path
        self.kept = key is None  # False: the secret lives in memory only

    @classmethod
    def from_file(cls, path: str) -> "Seal":
        """The secret in ``path`` (read or made when first needed)."""
        return cls(path=path)

    def load(self, *, make: bool) -> bytes | None:
        """The key; read from the file the first time, made there if ``make`` and there
        is none. Made whole or not at all: written to a file of its own, then linked to
        its name (``link`` fails if another process made one meanwhile: that one is
        read), so two workers starting together agree, and none reads half a secret.
        ValueError if the file holds no secret; a key in memory if it cannot be made."""
        if self._key is not None:
            return self._key
        try:
            self._key = _read_secret(self.path)
            return self._key
        except FileNotFoundError:
            if not make:
                return None
        except OSError as exc:
            raise ValueError(f"cannot read the server secret {self.path}: {exc.strerror}") from None
        key = secrets.token_bytes(SECRET_BYTES)
        try:
            fd, temp = tempfile.mkstemp(prefix=".muxserver-tmp-secret-",
                                        dir=os.path.dirname(self.path) or ".")
            try:
                os.write(fd, key.hex().encode("ascii") + b"\n")
                os.fsync(fd)
                os.close(fd)
                os.link(temp, self.path)
            finally:
                os.unlink(temp)
        except FileExistsError:
            return self.load(make=False)
        except OSError as exc:
            log.warning("cannot make the server secret %s (%s): sessions and share links "
                        "end when the server stops", self.path, exc.strerror)
            self.kept = False
        self._key = key
        return key

    def sign(self, purpose: str, fields: list[Any], bound: list[Any] | None = None) -> str:
        """``fields``, readable by whoever holds the value, signed together with
        ``bound``: what the server knows and the value need not show (a link's folder),
        and must be given again to open it."""
        key = self.load(make=True)
        assert key is not None
        payload = _b64(json.dumps(fields, separators=(",", ":")).encode("utf-8"))
        return payload + "." + _b64(_mac(key, purpose, payload, bound))

    def open(self, purpose: str, value: str, bound: list[Any] | None = None
             ) -> list[Any] | None:
        """The fields of a value this server signed for ``purpose`` (with ``bound``);
        None for anything else (changed, cut, made up, or signed for another purpose)."""
        fields = peek(value)
        if fields is None:
            return None
        key = self.load(make=False)
        if key is None:
            return None  # (no secret yet: nothing was ever signed)
        payload, _, mac = value.partition(".")
        try:
            given = base64.urlsafe_b64decode(mac + "=" * (-len(mac) % 4))
        except (binascii.Error, ValueError):
            return None
        if not hmac.compare_digest(given, _mac(key, purpose, payload, bound)):
            return None
        return fields


def peek(value: str) -> list[Any] | None:
    """The fields of a signed value, *not checked*: only to look up what it names
    before its signature is checked (Seal.open)."""
    payload, dot, _ = value.partition(".")
    if not dot or len(value) > 8192:
        return None
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (binascii.Error, ValueError, UnicodeError):
        return None
    return fields if isinstance(fields, list) else None


def _mac(key: bytes, purpose: str, payload: str, bound: list[Any] | None) -> bytes:
    message = (purpose + "\0" + payload).encode("ascii", "replace")
    if bound is not None:
        message += b"\0" + json.dumps(bound, separators=(",", ":")).encode("utf-8")
    return hmac.new(key, message, hashlib.sha256).digest()[:MAC_BYTES]


def _read_secret(path: str) -> bytes:
    with open(path, encoding="ascii") as f:
        text = f.read().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise OSError(0, f"{path} does not hold a secret (remove it: a new one is made)")
    return key


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")
