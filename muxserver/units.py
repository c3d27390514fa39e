"""Byte counts and durations, written for people (console, progress bars, ls) and read
back from command-line flags (``64K``, ``2G``)."""

from __future__ import annotations

import re

_SIZE = re.compile(r"(\d+)\s*([kmgt]?)(i?b)?", re.IGNORECASE)


#: Digits of the largest count a request may carry: 2**63 has 19.
MAX_COUNT_DIGITS = 19


def parse_count(text: str) -> int | None:
    """A non-negative decimal count as a header carries it, or None: ASCII digits
    only (no sign, space or underscore, no other script's digits, which ``int`` and
    ``str.isdigit`` would take), at most 19 of them."""
    if 0 < len(text) <= MAX_COUNT_DIGITS and text.isascii() and text.isdigit():
        return int(text)
    return None


def parse_size(text: str) -> int:
    """'65536', '64K', '64KiB', '1M', '2G' -> bytes (powers of 1024). ValueError if not."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"not a size: {text!r} (try 64K, 10M, 2G)")
    number, unit = int(match.group(1)), match.group(2).lower()
    return number * 1024 ** " kmgt".index(unit or " ")


def format_bytes(count: float) -> str:
    """12 B, 1.5 KiB, 230.0 MiB."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(count) < 1024 or unit == "TiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return f"{count:.1f} TiB"


def short_bytes(count: float) -> str:
    """A byte count in at most 5 characters: 0, 999, 1.5K, 256K, 12M, 1.0G."""
    for unit in ("", "K", "M", "G", "T"):
        if count < 1000 or unit == "T":
            if not unit:
                return f"{count:.0f}"
            return f"{count:.1f}{unit}" if count < 10 else f"{count:.0f}{unit}"
        count /= 1024
    return f"{count:.0f}T"


def format_duration(seconds: float | None) -> str:
    """m:ss or h:mm:ss; '-' when unknown or absurd."""
    if seconds is None or seconds != seconds or seconds < 0 or seconds > 359999:
        return "-"
    seconds = int(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}:{rest // 60:02}:{rest % 60:02}" if hours else f"{rest // 60}:{rest % 60:02}"
