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

import functools
import re
import unicodedata

from .errors import MuxError

#: Names starting with this are ours (temporary files); never listed, never accepted.
RESERVED_PREFIX = ".muxserver-"
MAX_NAME_BYTES = 4096  # PATH_MAX
MAX_COMPONENT_BYTES = 255  # NAME_MAX on every common file system
#: Directories in a name, at most. Deeper trees exist but are rare, and every level
#: costs the loop a mkdir, an open and an fsync: PATH_MAX alone would allow 2,048 levels.
MAX_DEPTH = 64
#: The first component HTTP gives to tus (``/.tus/``, tus.py): a folder of that name
#: could not be reached over HTTP, so no name may begin with it.
TUS_ENDPOINT = ".tus"

_WINDOWS_DEVICES = re.compile(r"(con|prn|aux|nul|com[0-9]|lpt[0-9])(\..*)?", re.IGNORECASE)
_DRIVE = re.compile(r"[A-Za-z]:")
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")  # exactly Unicode's category Cc


class BadName(MuxError, ValueError):
    """A name that breaks a rule; ``message`` says which (the protocol's ``bad_name``)."""

    def __init__(self, message: str) -> None:
        super().__init__("bad_name", message)


def split_name(name: str, *, allow_root: bool = False) -> list[str]:
    """Check a name and return its components; raise BadName if it breaks a rule."""
    if allow_root and name == "":
        return []
    return list(_checked(name) if len(name) <= REMEMBERED_NAME_LENGTH else _check(name))


def _check(name: str) -> tuple[str, ...]:
    if not name:
        raise _refused(name, "it is empty")
    try:
        size = len(name.encode("utf-8"))
    except UnicodeEncodeError:
        raise _refused(name, "it is not valid Unicode text") from None
    if size > MAX_NAME_BYTES:
        raise _refused(name, f"longer than {MAX_NAME_BYTES} bytes")
    if name.startswith("/"):
        raise _refused(name, "absolute paths are not allowed; names are relative to the "
                             "served root")
    parts = name.split("/")
    if len(parts) > MAX_DEPTH:
        raise _refused(name, f"more than {MAX_DEPTH} components (directories nested too "
                             "deep)")
    for depth, part in enumerate(parts):
        why = _remembered_problem(part, depth == 0)
        if why:
            raise _refused(name, why)
    return tuple(parts)


#: A request's name is checked at its start, at its commit, and again when it is
#: fetched: names that passed are remembered (the checks are pure), so a repeat costs a
#: dictionary lookup instead of a dozen string scans. A refused name is never cached,
#: and only short names are (at most about half a megabyte in all).
REMEMBERED_NAMES = 1024
REMEMBERED_NAME_LENGTH = 255
_checked = functools.lru_cache(maxsize=REMEMBERED_NAMES)(_check)


def component_problem(part: str, *, top: bool) -> str:
    """Why one component of a name breaks a rule ("" if it does not); ``top``: it is the
    first component, directly below the served root.

    The same rules as ``split_name``, one component at a time, so a listing can check
    each entry it meets on disk without re-checking the directories above it."""
    why = _form_problem(part, top)
    if why or part.isascii():
        return why  # (ASCII is its own NFKC form: nothing can hide in it)
    folded = unicodedata.normalize("NFKC", part)
    if folded != part and ("/" in folded or _form_problem(folded, top)):
        return "it changes its path structure under Unicode normalisation"
    return ""


#: New names mostly reuse the components of earlier ones (the folders above them, and
#: a file's own name in another folder), and a component's verdict depends on it
#: alone: verdicts are remembered too, so a new name in a known folder costs a lookup
#: per component. Only components of at most 255 characters are: 1 MiB of ASCII in
#: all, 4 MiB at worst (four bytes a character).
REMEMBERED_COMPONENTS = 4096


@functools.lru_cache(maxsize=REMEMBERED_COMPONENTS)
def _remembered(part: str, top: bool) -> str:
    return component_problem(part, top=top)


def _remembered_problem(part: str, top: bool) -> str:
    return (_remembered(part, top) if len(part) <= MAX_COMPONENT_BYTES
            else component_problem(part, top=top))


def _form_problem(part: str, top: bool) -> str:
    if part in ("", ".", ".."):
        return "empty, '.' and '..' components are not allowed"
    if _CONTROL.search(part):
        return "it contains a control character"
    if "\\" in part:
        return "backslashes are not separators here and are not allowed"
    if top and _DRIVE.match(part):
        return "drive letters are not allowed"
    if top and part == TUS_ENDPOINT:
        return f"/{TUS_ENDPOINT}/ is where resumable uploads begin over HTTP (tus)"
    try:
        size = len(part.encode("utf-8"))
    except UnicodeEncodeError:
        return "it is not valid Unicode text"
    if size > MAX_COMPONENT_BYTES:
        return f"a component is longer than {MAX_COMPONENT_BYTES} bytes"
    if part.startswith(RESERVED_PREFIX):
        return f"names starting with {RESERVED_PREFIX!r} are reserved"
    if _WINDOWS_DEVICES.fullmatch(part):
        return "Windows device names (CON, NUL, COM1, ...) are not allowed"
    return ""


def _refused(name: str, why: str) -> BadName:
    return BadName(f"name {name[:100]!r} refused: {why}")


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
