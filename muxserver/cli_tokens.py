"""Tokens on the command line: made (``python -m muxserver token``), read from a flag, a
file or the environment, for the server (every token and its rights) and for a client
(the one it presents)."""

from __future__ import annotations

import argparse
import os
import sys

from .cli_common import UsageError, fail


def add_token_arguments(parser: argparse.ArgumentParser, help_text: str,
                        file_help: str) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--token", help=help_text)
    group.add_argument("--token-file", metavar="FILE", help=file_help)


def read_token_file(path: str) -> dict[str, frozenset[str]]:
    """The tokens of a token file and their rights (access.parse_token_line)."""
    from .access import parse_token_line

    tokens: dict[str, frozenset[str]] = {}
    try:
        with open(path, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                try:
                    parsed = parse_token_line(line)
                except ValueError as exc:
                    raise UsageError(f"{path}, line {number}: {exc}") from None
                if parsed is not None:
                    tokens[parsed[0]] = parsed[1]
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the token file {path}: {exc}") from None
    if not tokens:
        raise UsageError(f"the token file {path} holds no token")
    return tokens


def read_tokens(args: argparse.Namespace) -> dict[str, frozenset[str]]:
    """The server's tokens: from --token-file, else --token or $MUXSERVER_TOKEN."""
    from .access import ALL_RIGHTS

    if args.token_file:
        return read_token_file(args.token_file)
    token = args.token or os.environ.get("MUXSERVER_TOKEN")
    return {token: ALL_RIGHTS} if token else {}


def read_token(args: argparse.Namespace) -> str | None:
    """The client's token: the first of --token-file (its first token: a server's
    token file works too), --token or $MUXSERVER_TOKEN."""
    if args.token_file:
        return next(iter(read_token_file(args.token_file)))
    return args.token or os.environ.get("MUXSERVER_TOKEN") or None


def new_token() -> str:
    """32 random bytes, URL-safe (it can go in ?token= as it is), never beginning with
    "-": one token in 64 would, and ``--token -K4q...`` is then read as a flag."""
    import secrets

    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def make_token(args: argparse.Namespace) -> int:
    """A new token (``new_token``), printed, and added to a token file if asked."""
    from .access import ALL_RIGHTS

    unknown = [r for r in args.rights.split(",") if r.strip() and r.strip() not in ALL_RIGHTS]
    if unknown:
        return fail(f"unknown right {unknown[0]!r}: a token's rights are read, write and "
                     "delete", status=2)
    rights = ",".join(r.strip() for r in args.rights.split(",") if r.strip())
    token = new_token()
    line = f"{token} {rights}".strip()
    if args.append:
        try:
            fd = os.open(args.append, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC,
                         0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line + "\n")
        except OSError as exc:
            return fail(f"cannot write {args.append}: {exc.strerror}")
        print(f"muxserver: added to {args.append} (rights: {rights or 'all'}); give "
              "the token to whoever should connect", file=sys.stderr)
    print(token)
    return 0
