"""What every command of the command line shares: the flag types, the usage error,
and the one-line failure message."""

from __future__ import annotations

import argparse
import sys

from .units import parse_size


def port_flag(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{port} is not a port (0 to 65535)")
    return port


def seconds_flag(text: str) -> float:
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not seconds > 0:  # (also refuses NaN)
        raise argparse.ArgumentTypeError(f"{text} seconds: it must be more than 0")
    return seconds


def remote_name(text: str) -> str:
    """A name on the server as people type it: ``photos/`` is ``photos``, and ``/``
    and ``.`` are the served root (""). Any other leading ``/`` stays, and the server
    refuses it: names are relative to the served root, never absolute."""
    name = text.strip()
    if name.strip("/") in ("", "."):
        return ""
    return name.rstrip("/")


def host_flag(text: str) -> str:
    """A host as people type it: ``[::1]`` (as in a URL) is ``::1``."""
    text = text.strip()
    return text[1:-1] if text.startswith("[") and text.endswith("]") else text


def size_flag(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class UsageError(Exception):
    """A command line that makes no sense (exit status 2)."""


def fail(message: str, status: int = 1) -> int:
    print(f"muxserver: {message}", file=sys.stderr)
    return status
