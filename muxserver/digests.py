"""The digests that verify a file: BLAKE3 and SHA-256.

Every upload and download is checked against a digest of the whole file. Two
algorithms serve, each written on the wire as a field named after it with 64 lowercase
hex digits (``"blake3": "af13..."``, ``"sha256": "9f86..."``):

* **BLAKE3** (the ``blake3`` package: Rust, SIMD) hashes about 5 GB/s on one core here,
  four to five times SHA-256's speed (``scripts/digest_bench.py``). The native
  client uses it: a transfer's verification then costs the CPU a fifth as much.
* **SHA-256** (``hashlib``) is what the rest of the world knows: HTTP's ``ETag``,
  ``Repr-Digest`` and ``X-Content-SHA256``, tus's checksums, and any client that only
  has the standard library. The native protocol keeps accepting it everywhere.

A remembered digest (``hashcache.py``) is kept per algorithm, so a file's SHA-256 is
not lost when its BLAKE3 is learned, and neither is computed twice.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any, Mapping, Protocol

import blake3

BLAKE3 = "blake3"
SHA256 = "sha256"
#: Every algorithm, the preferred (fastest) first.
ALGORITHMS = (BLAKE3, SHA256)
NAMES = {BLAKE3: "BLAKE3", SHA256: "SHA-256"}  # as people write them
_HEX64 = re.compile(r"[0-9a-f]{64}")


class Hasher(Protocol):
    """What hashlib's and blake3's hash objects have in common (and all we use)."""

    def update(self, data: Any, /) -> Any: ...
    def hexdigest(self) -> str: ...


def new_hasher(algorithm: str) -> Hasher:
    """A fresh hash object. Both release the GIL while they hash a large buffer, so the
    helper thread (``hashing.py``) can hash beside the loop."""
    if algorithm == BLAKE3:
        return blake3.blake3()
    if algorithm == SHA256:
        return hashlib.sha256()
    raise ValueError(f"unknown digest algorithm {algorithm!r}")


class Digest:
    """A whole file's digest: its algorithm and its 64 hex digits. A value: equal ones
    compare and hash alike, and nothing changes one once made.

    (A plain class rather than a frozen dataclass: a request makes one or two, and in
    the compiled build (setup.py) a dataclass's ``__init__`` and ``__eq__`` stay the
    ones the dataclasses module writes, run by the interpreter.)"""

    __slots__ = ("algorithm", "hex")

    def __init__(self, algorithm: str, hex: str) -> None:
        self.algorithm = algorithm
        self.hex = hex

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, Digest) and self.hex == other.hex
                and self.algorithm == other.algorithm)

    def __hash__(self) -> int:
        return hash((self.algorithm, self.hex))

    def __repr__(self) -> str:
        return f"Digest(algorithm={self.algorithm!r}, hex={self.hex!r})"

    def __str__(self) -> str:  # (for messages: "BLAKE3 af1349b9f5f9...")
        return f"{NAMES[self.algorithm]} {self.hex}"

    def short(self) -> str:
        return f"{self.algorithm} {self.hex[:16]}"

    @property
    def field(self) -> dict[str, str]:
        """The digest as a protocol field: ``{"blake3": "af13..."}``."""
        return {self.algorithm: self.hex}

    @property
    def key(self) -> str:
        """16 characters naming this digest in a partial file's key (storage/partials.py). A
        SHA-256 gives its first 16 hex digits, as it always has, so partial files kept
        before BLAKE3 existed still resume."""
        return self.hex[:16] if self.algorithm == SHA256 else "b3" + self.hex[:14]


def is_hex64(value: object) -> bool:
    return isinstance(value, str) and _HEX64.fullmatch(value) is not None


def from_fields(fields: Mapping[str, Any]) -> Digest | None:
    """The digest a header carries (the preferred algorithm's, if it carries both);
    None if it carries none. ValueError if one is there but malformed."""
    for algorithm in ALGORITHMS:
        if algorithm in fields:
            value = fields[algorithm]
            if not is_hex64(value):
                raise ValueError(f"{algorithm} must be 64 lowercase hex digits")
            return Digest(algorithm, value)
    return None
