"""Names: which names a client may use, and how a name may be shown to a person.

The rules of docs/PROTOCOL.md section 3, in one place, for the server (every name a
request carries) and for the client (every name a server sends it back, so a hostile
server cannot make a download land outside its directory). A name is a relative
POSIX path of UTF-8 components. ``split_name`` refuses anything that could mean
something else on some system: ``..``, absolute paths, backslashes, drive letters, NUL
and control characters, over-long or over-deep names, Windows device names, our own
reserved prefix, and names that only turn into one of those after Unicode NFKC
normalisation (``．．／x`` becomes ``../x``).

This module does no I/O.
"""

from __future__ import annotations

import re
import unicodedata

#: Names starting with this are ours (temporary files); never listed, never accepted.
RESERVED_PREFIX = ".muxserver-"
MAX_NAME_BYTES = 4096  # PATH_MAX
MAX_COMPONENT_BYTES = 255  # NAME_MAX on every common file system
#: Directories in a name, at most. Deeper trees exist but are rare, and every level
#: costs the loop a mkdir, an open and an fsync: PATH_MAX alone would allow 2,048 levels.
MAX_DEPTH = 64

_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # exactly Unicode's category Cc


class BadName(ValueError):
    """A name that breaks a rule; ``message`` says which (the protocol's ``bad_name``)."""

    code = "bad_name"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


def split_name(name: str, *, allow_root: bool = False) -> list[str]:
    """Check a name and return its components; raise BadName if it breaks a rule."""
    if allow_root and name == "":
        return []
    parts = _check_form(name)
    if name.isascii():
        return parts  # ASCII is its own NFKC form: nothing can hide in it
    folded = unicodedata.normalize("NFKC", name)
    if folded != name and len(_check_form(folded)) != len(parts):
        raise BadName(f"{name!r} changes its path structure under Unicode normalisation")
    return parts


def _check_form(name: str) -> list[str]:
    def refuse(why: str) -> BadName:
        return BadName(f"name {name[:100]!r} refused: {why}")

    if not name:
        raise refuse("it is empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise refuse("it is not valid Unicode text") from None
    if size > MAX_NAME_BYTES:
        raise refuse(f"longer than {MAX_NAME_BYTES} bytes")
    if _CONTROL.search(name):
        raise refuse("it contains a control character")
    if "\\" in name:
        raise refuse("backslashes are not separators here and are not allowed")
    if name.startswith("/"):
        raise refuse("absolute paths are not allowed; names are relative to the served root")
    if _DRIVE.match(name):
        raise refuse("drive letters are not allowed")
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        raise refuse(f"more than {MAX_DEPTH} components (directories nested too deep)")
    for part in parts:
        if part in ("", ".", ".."):
            raise refuse("empty, '.' and '..' components are not allowed")
        if len(part.encode("utf-8")) > MAX_COMPONENT_BYTES:
            raise refuse(f"a component is longer than {MAX_COMPONENT_BYTES} bytes")
        if part.startswith(RESERVED_PREFIX):
            raise refuse(f"names starting with {RESERVED_PREFIX!r} are reserved")
        if _WINDOWS_DEVICES.fullmatch(part):
            raise refuse("Windows device names (CON, NUL, COM1, ...) are not allowed")
    return parts


def printable(text: str) -> str:
    """A client-supplied name as it may be shown in logs and on the console.

    Control and format characters (ESC, CR, RIGHT-TO-LEFT OVERRIDE, ...) become
    ``\\x1b``-style escapes, so a hostile name can neither move the operator's cursor,
    recolour the terminal, nor reorder what is displayed.
    """
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else _escape_char(ch) for ch in text)


def _escape_char(ch: str) -> str:
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else (
        f"\\U{code:08x}")


def is_listable(name: str) -> bool:
    """Directory entries we show: not ours, and representable in UTF-8 JSON."""
    if name.startswith(RESERVED_PREFIX):
        return False
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:  # undecodable bytes on disk (surrogate escapes)
        return False
    return True
