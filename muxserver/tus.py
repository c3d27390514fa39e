"""tus 1.0: resumable uploads over HTTP, at ``/.tus/`` (https://tus.io/protocols/resumable-upload).

One mechanism, two front doors. A tus upload is kept as the native protocol's
resumable upload is: between requests its bytes are a hidden partial file
(docs/PROTOCOL.md 5.5), with the same expiry, space budget, count and rights, and its
last piece is committed the same way (the whole file hashed, checked, flushed, renamed
in one step). tus only adds a wire:

* ``OPTIONS /.tus/``: what this server speaks (core, creation, termination, checksum,
  expiration);
* ``POST /.tus/`` with ``Upload-Length`` and ``Upload-Metadata`` (``filename``: the
  name below the root; optionally ``sha256``: the whole file's SHA-256 in hex, checked
  at the end, ``overwrite``, and ``mtime``: the file's time, seconds since 1970, given
  to the stored file): the upload begins, at ``Location: /.tus/ID``;
* ``HEAD /.tus/ID``: ``Upload-Offset``, how much the server holds (``423 Locked``, with
  ``Retry-After``, while a PATCH of it is under way: never a 404 that would make a
  client start again from zero);
* ``PATCH /.tus/ID`` with ``Upload-Offset`` (what the server holds, exactly: else 409)
  and optionally ``Upload-Checksum: sha256 BASE64`` (or sha1) of this piece (a mismatch
  is 460, and the piece is forgotten);
* ``DELETE /.tus/ID``: the upload is given up.

The ID describes the upload (its name, size, declared SHA-256, a random nonce, and
whether it may replace a file), base64url-encoded, and is sealed for the writer that
made it: an HMAC keyed by its token's digest. So an ID cannot be guessed (128 random
bits) nor edited, and another token's requests find "no such upload", as for a
guess. It grants nothing: every request is authorized on its own, with the writer's
own rights. The partial file's key is tus's own (storage.partial_key), named by every
field of the ID: no tus upload can reach another's bytes, or a native upload's, and
the declared SHA-256 always checks the whole file at the end.

This module holds the protocol's pieces that do no I/O; ``http.py`` answers requests.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import email.utils
import hashlib
import hmac
import json
import re
import secrets

from . import units
from .digests import SHA256, Digest
from .protocol import RequestError
from .names import TUS_ENDPOINT
from .storage import NO_SUCH_UPLOAD, partial_key, split_name

VERSION = "1.0.0"
PREFIX = TUS_ENDPOINT  # the creation URL is /.tus/ (a name no file may have)
EXTENSIONS = "creation,termination,checksum,expiration"
CHECKSUMS = {"sha256": hashlib.sha256, "sha1": hashlib.sha1}
#: tus's own status for a piece whose Upload-Checksum does not match.
CHECKSUM_MISMATCH = 460
#: Where tus answers a stable error code (protocol.ERROR_CODES) otherwise than plain
#: HTTP does (http_codec.STATUS): tus says 409 for an offset that is not the server's,
#: and 423 Locked (tusd's answer) while another request writes it. (A whole file that
#: is not the declared ``sha256`` is plain HTTP's 400, not 460: 460 asks for the piece
#: again, and the upload is gone.)
STATUS = {"offset_mismatch": 409, "server_busy": 423}
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NONCE = re.compile(r"[0-9a-f]{32}")


@dataclasses.dataclass(frozen=True)
class TusUpload:
    """What the ID of an upload says."""

    name: str
    size: int
    sha256: str  # the whole file's, declared by the client; "" if not
    nonce: str  # 32 random hex digits: no two uploads share an ID or a partial file
    overwrite: bool
    mtime: float | None = None  # the file's own time (metadata "mtime"), kept when stored

    @property
    def expected(self) -> Digest | None:
        """The whole file's digest, when the client declared one."""
        return Digest(SHA256, self.sha256) if self.sha256 else None

    @property
    def payload(self) -> str:
        fields: dict[str, object] = {"n": self.name, "s": self.size, "h": self.sha256,
                                     "r": self.nonce, "o": int(self.overwrite)}
        if self.mtime is not None:
            fields["t"] = self.mtime
        raw = json.dumps(fields, separators=(",", ":"), ensure_ascii=False).encode()
        return base64.urlsafe_b64encode(raw).decode().rstrip("=")

    def key(self, writer: bytes) -> str:
        """The partial file's key: tus's own namespace ("u"), named by every field of
        the ID, so that no other upload, tus or native, ever has it."""
        identity = "u" + hashlib.sha256(self.payload.encode()).hexdigest()[:16]
        return partial_key(split_name(self.name)[-1], writer, identity, self.size)

    def id(self, writer: bytes) -> str:
        """The upload's ID for its writer: what it says, and a seal that only the same
        writer's requests can check (an HMAC keyed by the writer's token digest)."""
        return f"{self.payload}.{_seal(self.payload, writer)}"

    @classmethod
    def from_id(cls, text: str, writer: bytes) -> "TusUpload":
        """The upload an ID describes, if ``writer`` made it; RequestError "not_found" for
        anything else (a guess, an edit, another writer's ID: they look the same). Its
        fields are the server's own (sealed), its size checked when it was made."""
        payload, _, seal = text.partition(".")
        if not hmac.compare_digest(seal.encode(), _seal(payload, writer).encode()):
            raise RequestError("not_found", NO_SUCH_UPLOAD)
        try:
            raw = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
            fields = json.loads(raw.decode("utf-8"))
            name, size, digest = fields["n"], fields["s"], fields["h"]
            nonce, overwrite, mtime = fields["r"], fields["o"], fields.get("t")
        except (ValueError, KeyError, TypeError, binascii.Error):
            raise RequestError("not_found", NO_SUCH_UPLOAD) from None
        if (not isinstance(name, str) or type(size) is not int or size < 0
                or not isinstance(digest, str) or overwrite not in (0, 1)
                or not (digest == "" or _HEX64.fullmatch(digest))
                or not isinstance(nonce, str) or not _NONCE.fullmatch(nonce)
                or not (mtime is None or type(mtime) in (int, float))):
            raise RequestError("not_found", NO_SUCH_UPLOAD)
        return cls(name, size, digest, nonce, bool(overwrite), mtime)

    @classmethod
    def new(cls, name: str, size: int, sha256: str, overwrite: bool,
            mtime: float | None = None) -> "TusUpload":
        return cls(name, size, sha256, secrets.token_hex(16), overwrite, mtime)


def _seal(payload: str, writer: bytes) -> str:
    """16 bytes of HMAC-SHA256 over an ID's payload, keyed by its writer."""
    mac = hmac.new(b"muxserver tus " + writer, payload.encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:16]).decode().rstrip("=")


def parse_metadata(value: str) -> dict[str, str]:
    """``Upload-Metadata``: ``key base64,key base64,...`` (a key alone means "")."""
    fields: dict[str, str] = {}
    for item in value.split(","):
        key, _, encoded = item.strip().partition(" ")
        if not key:
            continue
        try:
            fields[key] = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise RequestError("bad_request", f"Upload-Metadata: {key} is not base64 of "
                                       "UTF-8 text") from None
    return fields


def creation(headers: dict[str, str]) -> TusUpload:
    """The upload a creation request (POST) asks for (its size is checked against the
    server's limit where every upload's is: session.check_size)."""
    if "upload-defer-length" in headers:
        raise RequestError("bad_request", "this server needs Upload-Length at creation")
    length = parse_count(headers, "upload-length")
    meta = parse_metadata(headers.get("upload-metadata", ""))
    name = meta.get("filename", "").strip().lstrip("/")
    if not name:
        raise RequestError("bad_request", "Upload-Metadata needs filename: the name to store "
                                   "the file under, below the served root")
    digest = meta.get("sha256", "").strip().lower()
    if digest and not _HEX64.fullmatch(digest):
        raise RequestError("bad_request", "Upload-Metadata sha256 must be 64 hex digits")
    overwrite = meta.get("overwrite", "").lower() in ("1", "true", "yes")
    return TusUpload.new(name, length, digest, overwrite, parse_mtime(meta.get("mtime")))


def parse_mtime(text: str | None) -> float | None:
    """Metadata ``mtime``: the file's time in seconds since 1970 (a browser's
    ``lastModified`` / 1000); None when not given, RequestError when not a time."""
    if text is None or not text.strip():
        return None
    try:
        mtime = float(text)
    except ValueError:
        raise RequestError("bad_request", "Upload-Metadata mtime must be seconds since "
                                          "1970") from None
    if not 0 <= mtime < 2**33:  # (a time a file system may not keep: the file is kept)
        return None
    return round(mtime, 3)


def parse_count(headers: dict[str, str], name: str) -> int:
    count = units.parse_count(headers.get(name, ""))
    if count is None:
        raise RequestError("bad_request", f"{name.title()} must be a non-negative integer of at "
                                   f"most {units.MAX_COUNT_DIGITS} digits")
    return count


def parse_checksum(value: str) -> tuple[str, bytes] | None:
    """``Upload-Checksum: sha256 BASE64`` as (algorithm, digest); None when absent."""
    if not value:
        return None
    algorithm, _, encoded = value.strip().partition(" ")
    if algorithm.lower() not in CHECKSUMS:
        raise RequestError("bad_request", f"Upload-Checksum: {algorithm!r} is not one of "
                                   f"{', '.join(CHECKSUMS)}")
    try:
        return algorithm.lower(), base64.b64decode(encoded.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise RequestError("bad_request", "Upload-Checksum: the digest is not base64") from None


def capabilities(max_size: int) -> list[tuple[str, str]]:
    return [("Tus-Resumable", VERSION), ("Tus-Version", VERSION),
            ("Tus-Extension", EXTENSIONS), ("Tus-Max-Size", str(max_size)),
            ("Tus-Checksum-Algorithm", ",".join(CHECKSUMS))]


def expires(when: float) -> tuple[str, str]:
    """The Upload-Expires header: when the server removes the upload if it rests."""
    return "Upload-Expires", email.utils.formatdate(when, usegmt=True)
