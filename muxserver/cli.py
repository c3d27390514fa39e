"""The command line: ``python -m muxserver [serve|put|get|ls|stat] ...``.

Argument parsing here; what each command does and prints in ``cli_serve.py``,
``cli_client.py`` and ``cli_tokens.py``; the work is done by ``server.py`` and
``client/``. Human messages go to stderr; ``ls`` and ``stat`` print their data to
stdout. Exit status: 0 on success, 1 when anything failed (with a one-line reason
per failure), 2 for usage errors, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from typing import Any, NoReturn, Sequence

from . import __version__
from .cli_client import run_client_command
from .cli_common import UsageError, fail, host_flag, port_flag, seconds_flag, size_flag
from .cli_serve import run_serve
from .cli_tokens import add_token_arguments, make_token, run_user_command
from .client import DEFAULT_PORT
from .limits import Limits
from .units import format_bytes

COMMANDS = ("serve", "put", "get", "ls", "stat", "rm", "mv", "mkdir", "share", "token",
            "user")
LANGUAGE_CHOICES = ("en", "es")


# ------------------------------------------------------------------------ parsers


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line (the usage itself is --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"muxserver: {message} (see: python -m {self.prog} --help)\n")


def build_parser(show_limits: bool = False) -> argparse.ArgumentParser:
    """The parser; ``show_limits``: ``serve --help-limits`` lists the tuning limits,
    which plain ``--help`` leaves out (29 of them would bury the options people use)."""
    parser = Parser(
        prog="muxserver",
        description="A single-threaded, non-blocking file server and its client.",
        epilog="Without a command, 'serve' is assumed: python -m muxserver --root DIR")
    parser.add_argument("--version", action="version", version=f"muxserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_serve_parser(sub, show_limits)
    add_client_parsers(sub)
    p = sub.add_parser("token", help="make a new random token (for --token-file)",
                       description="Print a new random token. With --append, also add it "
                                   "to a token file (made readable by you only), with its "
                                   "rights, for serve --token-file.")
    p.add_argument("--rights", default="", metavar="RIGHTS",
                   help="what it may do: read, write, delete, comma-separated "
                        "(default: all that the server's flags allow)")
    p.add_argument("--append", metavar="FILE", help="add the token to this user file")
    p.add_argument("--name", metavar="NAME", help="its name in the logs and the console "
                                                   "(with --append)")
    p.add_argument("--path", metavar="FOLDER", help="limit it to this folder of the served "
                                                     "root: it sees nothing above (with --append)")
    add_user_parser(sub)
    return parser


def add_user_parser(sub: Any) -> None:
    p = sub.add_parser("user", help="add, list and remove the people who sign in",
                       description="The people who may sign in, kept in the user file that "
                                   "serve --token-file reads (a running server takes a "
                                   "change within a second, no restart).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    add = actions.add_parser("add", help="add a user (asks for the password)",
                             description="Add a user. The password is asked for on a "
                                         "terminal, else read as one line from stdin or "
                                         "$MUXSERVER_PASSWORD; the file keeps only its "
                                         "Argon2id hash.")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--rights", default=None, metavar="RIGHTS",
                     help="read, write, delete, comma-separated (default: all that the "
                          "server's flags allow; with --replace: as they were)")
    add.add_argument("--path", metavar="FOLDER",
                     help="limit the user to this folder: it is their whole root ('/' for "
                          "all of it; with --replace, by default: as it was)")
    add.add_argument("--replace", action="store_true",
                     help="the user exists: give them a new password (and the rights and "
                          "folder given; the others stay as they were)")
    remove = actions.add_parser("remove", help="remove a user (their sessions end)")
    remove.add_argument("name", metavar="NAME")
    listing = actions.add_parser("list", help="list users and tokens (never passwords or tokens)")
    for q in (add, remove, listing):
        q.add_argument("--file", required=True, metavar="FILE",
                       help="the user file (serve --token-file FILE)")


def add_serve_parser(sub: Any, show_limits: bool = False) -> None:
    p = sub.add_parser("serve", help="serve a directory (the default command)",
                       description="Serve a directory over TCP until Ctrl-C.",
                       epilog=None if show_limits else
                       f"{len(dataclasses.fields(Limits))} limits tune it (sizes, timeouts, "
                       "buffers, budgets): serve --help-limits lists them with their "
                       "defaults, docs/OPERATIONS.md explains each one.")
    p.add_argument("--host", type=host_flag, default="127.0.0.1",
                   help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=port_flag, default=DEFAULT_PORT,
                   help=f"port to listen on (default {DEFAULT_PORT}; 0 picks a free one)")
    p.add_argument("--root", default=".", help="directory to serve (default: the current one)")
    p.add_argument("--allow-overwrite", action="store_true",
                   help="let clients replace existing files (they must ask: put --overwrite)")
    p.add_argument("--allow-delete", action="store_true",
                   help="let clients remove and move files and directories (rm, mv)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--read-only", action="store_true",
                      help="serve files but take no writes of any kind")
    mode.add_argument("--upload-only", action="store_true",
                      help="a drop box: clients may upload new files, but list, read, "
                           "replace and delete nothing")
    p.add_argument("--allow-host", action="append", default=[], metavar="NAME",
                   help="also answer HTTP requests for this Host name (repeatable; "
                        "'.example.org' allows names under it, '*' any); IP addresses "
                        "and localhost always are, and this machine's names when bound "
                        "beyond loopback")
    p.add_argument("--allow-basic-over-http", action="store_true",
                   help="take a name and password sent as HTTP Basic (WebDAV clients "
                        "do) over plain HTTP from other machines, where anyone on the "
                        "way can read them; without it, only over TLS or from this "
                        "machine")
    p.add_argument("--no-console", action="store_true",
                   help="plain log lines instead of the live console")
    p.add_argument("--log-level", choices=("info", "warning", "error"), default="info",
                   help="info (default): a line per connection and transfer; warning: "
                        "only refusals and trouble (info lines cost a busy server a few "
                        "per cent of its time)")
    p.add_argument("--workers", default="1", metavar="N",
                   help="processes serving the port, each with its own loop (default 1; "
                        "'auto': one per core)")
    add_token_arguments(p, "clients must present this token (prefer --token-file or "
                           "$MUXSERVER_TOKEN: arguments are visible to other users)",
                        "the user file: users (python -m muxserver user add) and tokens, "
                        "one per line ('TOKEN read,write' or 'token NAME TOKEN rights=read "
                        "folder=F'); read again when it changes, no restart")
    p.add_argument("--secret-file", metavar="FILE",
                   help="the secret that signs sessions and share links (made on first "
                        "start, mode 0600; default: .muxserver-secret in the root)")
    p.add_argument("--session-days", type=float, default=30.0, metavar="DAYS",
                   help="how long a browser stays signed in (default 30)")
    teach = p.add_argument_group("teaching")
    teach.add_argument("--trace", action="store_true",
                       help="narrate every socket event in plain sentences")
    teach.add_argument("--trace-bytes", action="store_true",
                       help="--trace, plus a short hex dump of each recv and send")
    teach.add_argument("--trace-json", metavar="FILE",
                       help="write every socket event to FILE as JSON lines "
                            "(scripts/trace_diagram.py draws them)")
    teach.add_argument("--step", action="store_true",
                       help="pause after every select(): show the ready sockets and every "
                            "connection's state, wait for Enter (implies --trace, "
                            "--no-console)")
    teach.add_argument("--lang", choices=LANGUAGE_CHOICES, default=None,
                       help="language of the narration (default: from the locale, else en)")
    p.add_argument("--tls-cert", metavar="PEM", help="certificate chain: serve TLS")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    limits = p.add_argument_group("limits (docs/OPERATIONS.md explains each one)")
    limits.add_argument("--help-limits", action="help", help=argparse.SUPPRESS)
    for field in dataclasses.fields(Limits):
        unit = field.metadata.get("unit", "")
        kind = size_flag if unit == "bytes" else float if unit == "s" else int
        limits.add_argument("--" + field.name.replace("_", "-"), dest=f"limit_{field.name}",
                            type=kind, default=None, metavar="BYTES" if unit == "bytes" else
                            "SECONDS" if unit == "s" else "N",
                            help=f"{field.metadata['why']} [default: {default_text(field)}]"
                            .replace("%", "%%")  # argparse formats help with %
                            if show_limits else argparse.SUPPRESS)


def default_text(field: dataclasses.Field[Any]) -> str:
    unit = field.metadata.get("unit", "")
    default: Any = field.default  # (every Limits field has one)
    if default is None:
        derived = {"max_connections": "derived from the descriptor limit",
                   "partial_budget": "a quarter of the free space at start"}
        return derived.get(field.name, "none")
    if unit == "bytes":
        return format_bytes(default)
    return f"{default:g} s" if unit == "s" else str(default)


def add_client_parsers(sub: Any) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--host", type=host_flag,
                        default=os.environ.get("MUXSERVER_HOST", "127.0.0.1"),
                        help="server address (default 127.0.0.1, or $MUXSERVER_HOST; a "
                             "share link given as a NAME or the last FILE says its own)")
    common.add_argument("--port", type=port_flag,
                        default=os.environ.get("MUXSERVER_PORT", str(DEFAULT_PORT)),
                        help=f"server port (default {DEFAULT_PORT}, or $MUXSERVER_PORT)")
    common.add_argument("--timeout", type=seconds_flag, default=60.0,
                        help="give up after this many seconds without progress (default 60)")
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    add_token_arguments(common, "token the server asks for (or --token-file, "
                                "or $MUXSERVER_TOKEN)",
                        "read the token from FILE (its first token)",
                        "sign in as NAME (the password from $MUXSERVER_PASSWORD, else asked for)")
    common.add_argument("--tls", action="store_true", help="connect with TLS")
    common.add_argument("--cafile", metavar="PEM",
                        help="CA certificates to trust for --tls (default: the system's)")

    p = sub.add_parser("put", parents=[common], help="upload files",
                       description="Upload files; several files share one pipelined connection.")
    p.add_argument("files", nargs="+", metavar="FILE",
                   help="files (with -r, directories) to send; the last may be a share link to put into")
    p.add_argument("--as", dest="as_name", metavar="NAME",
                   help="name on the server (one FILE only; with -r, the remote directory)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing file (the server must allow it)")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="send directories and their contents, keeping relative paths")
    p.add_argument("--sync", action="store_true",
                   help="send only files the server does not have the same (size and "
                        "SHA-256); changed ones replace the server's (it must allow it)")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted uploads from what the server kept (done "
                        "anyway for files of 1 MiB or more; this asks for smaller ones too)")

    p = sub.add_parser("get", parents=[common], help="download files",
                       description="Download files into a directory; several share one connection.")
    p.add_argument("names", nargs="+", metavar="NAME",
                   help="files (with -r, directories) below the served root, or one share link")
    p.add_argument("-o", "--output", default=".", metavar="DIR",
                   help="directory to write into (default: the current one)")
    p.add_argument("--overwrite", action="store_true", help="replace existing local files")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="download directories and their contents")
    p.add_argument("--sync", action="store_true",
                   help="fetch only files not the same here already (size and SHA-256); "
                        "changed ones replace the local ones")
    p.add_argument("--resume", action="store_true",
                   help="continue interrupted downloads from their NAME.part files")

    p = sub.add_parser("ls", parents=[common], help="list a directory on the server",
                       description="List a directory on the server (the root by default), "
                                   "or show one file; sizes like ls -h, folders end in /.")
    p.add_argument("path", nargs="?", default="", metavar="PATH",
                   help="a directory or a file below the served root (default: the root; "
                        "or a share link)")
    p.add_argument("-r", "--recursive", action="store_true", help="list subdirectories too")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("stat", parents=[common], help="show a file's size, time and hash",
                       description="Show a file's (or a directory's) type, size, time and "
                                   "the digests the server remembers for it.")
    p.add_argument("name", metavar="NAME", help="a file or directory below the served root")

    p = sub.add_parser("rm", parents=[common], help="remove files on the server",
                       description="Remove files (with -r, directories and all they hold). "
                                   "The server must allow it (serve --allow-delete).")
    p.add_argument("names", nargs="+", metavar="NAME", help="files or directories to remove")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="remove directories and everything in them")

    p = sub.add_parser("mv", parents=[common], help="rename a file or directory on the server",
                       description="Rename within the server's root, in one atomic step "
                                   "(no copy). The server must allow it (--allow-delete).")
    p.add_argument("source", metavar="SRC", help="what to move (below the served root)")
    p.add_argument("dest", metavar="DST", help="its new name (below the served root)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing file DST (the server must allow it)")

    p = sub.add_parser("share", parents=[common], help="make a link that opens a file or folder",
                       description="Make a share link: a URL that opens NAME (a file or a "
                                   "folder) read-only, or with --write a drop box into the "
                                   "folder NAME, for anyone who has it, until it expires. "
                                   "The URL is the last line on stdout. Links work in a "
                                   "browser, with curl, and with get URL and put FILE URL.")
    p.add_argument("name", nargs="?", metavar="NAME", help="the file or folder to share")
    p.add_argument("--expires", default="7d", metavar="TIME",
                   help="how long the link works: 30m, 12h, 7d, 2w (default 7d; a year at most)")
    p.add_argument("--write", action="store_true",
                   help="a drop box: the link uploads into the folder and shows nothing")
    p.add_argument("--list", action="store_true", help="list the links you made")
    p.add_argument("--revoke", metavar="ID", help="revoke the link ID (see --list)")

    p = sub.add_parser("mkdir", parents=[common], help="make directories on the server",
                       description="Make directories on the server (their parent must "
                                   "exist, unless -p).")
    p.add_argument("names", nargs="+", metavar="DIR", help="directories to make")
    p.add_argument("-p", "--parents", action="store_true",
                   help="make missing parents too; an existing directory is fine")


def normalise_argv(argv: Sequence[str]) -> list[str]:
    """``muxserver --port 1`` means ``muxserver serve --port 1``; a first word that is
    no command is a usage error (not an "unrecognized argument" of serve)."""
    argv = list(argv)
    if argv and not argv[0].startswith("-") and argv[0] not in COMMANDS:
        raise UsageError(f"unknown command {argv[0]!r}; the commands are "
                         f"{', '.join(COMMANDS)} (python -m muxserver --help)")
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv.insert(0, "serve")
    return argv


def main(argv: Sequence[str] | None = None) -> int:
    try:
        words = normalise_argv(sys.argv[1:] if argv is None else argv)
    except UsageError as exc:
        return fail(str(exc), status=2)
    args = build_parser(show_limits="--help-limits" in words).parse_args(words)
    try:
        if args.command == "serve":
            return run_serve(args)
        if args.command == "token":
            return make_token(args)
        if args.command == "user":
            return run_user_command(args)
        return run_client_command(args)
    except KeyboardInterrupt:
        print("muxserver: interrupted", file=sys.stderr)
        return 130
