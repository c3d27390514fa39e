"""The command line: ``python -m muxserver [serve|put|get|ls|stat] ...``.

Argument parsing and what to print; the work is done by ``server.py`` and
``client/``. Human messages go to stderr; ``ls`` and ``stat`` print their data to
stdout. Exit status: 0 on success, 1 when anything failed (with a one-line reason
per failure), 2 for usage errors, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import logging
import os
import socket
import sys
import time
from typing import Any, NoReturn, Sequence

from . import __version__
from .client import DEFAULT_PORT, Client, ClientError, GetFile, PutFile, Stat
from .digests import ALGORITHMS, Digest, from_fields
from .limits import Limits
from .logformat import LineFormatter
from .units import format_bytes, parse_size

COMMANDS = ("serve", "put", "get", "ls", "stat", "rm", "mv", "mkdir", "token")
LANGUAGE_CHOICES = ("en", "es")


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


def size_flag(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


# ------------------------------------------------------------------------ parsers


class Parser(argparse.ArgumentParser):
    """argparse, with a usage error said in one line (the usage itself is --help)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"muxserver: {message} (see: python -m {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="muxserver",
        description="A single-threaded, non-blocking file server and its client.",
        epilog="Without a command, 'serve' is assumed: python -m muxserver --root DIR")
    parser.add_argument("--version", action="version", version=f"muxserver {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    add_serve_parser(sub)
    add_client_parsers(sub)
    p = sub.add_parser("token", help="make a new random token (for --token-file)",
                       description="Print a new random token. With --append, also add it "
                                   "to a token file (made readable by you only), with its "
                                   "rights, for serve --token-file.")
    p.add_argument("--rights", default="", metavar="RIGHTS",
                   help="what it may do: read, write, delete, comma-separated "
                        "(default: all that the server's flags allow)")
    p.add_argument("--append", metavar="FILE", help="add the token to this token file")
    return parser


def add_serve_parser(sub: Any) -> None:
    p = sub.add_parser("serve", help="serve a directory (the default command)",
                       description="Serve a directory over TCP until Ctrl-C.")
    p.add_argument("--host", default="127.0.0.1",
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
                        "tokens, one per line, each with its rights if not all: "
                        "'TOKEN read' or 'TOKEN read,write,delete' ('#' starts a comment)")
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
    for field in dataclasses.fields(Limits):
        unit = field.metadata.get("unit", "")
        kind = size_flag if unit == "bytes" else float if unit == "s" else int
        limits.add_argument("--" + field.name.replace("_", "-"), dest=f"limit_{field.name}",
                            type=kind, default=None, metavar="BYTES" if unit == "bytes" else
                            "SECONDS" if unit == "s" else "N",
                            help=f"{field.metadata['why']} [default: {default_text(field)}]"
                            .replace("%", "%%"))  # argparse formats help with %


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
    common.add_argument("--host", default=os.environ.get("MUXSERVER_HOST", "127.0.0.1"),
                        help="server address (default 127.0.0.1, or $MUXSERVER_HOST)")
    common.add_argument("--port", type=port_flag,
                        default=os.environ.get("MUXSERVER_PORT", str(DEFAULT_PORT)),
                        help=f"server port (default {DEFAULT_PORT}, or $MUXSERVER_PORT)")
    common.add_argument("--timeout", type=seconds_flag, default=60.0,
                        help="give up after this many seconds without progress (default 60)")
    common.add_argument("-q", "--quiet", action="store_true", help="print only errors")
    add_token_arguments(common, "token the server asks for (or --token-file, "
                                "or $MUXSERVER_TOKEN)",
                        "read the token from the first line of FILE")
    common.add_argument("--tls", action="store_true", help="connect with TLS")
    common.add_argument("--cafile", metavar="PEM",
                        help="CA certificates to trust for --tls (default: the system's)")

    p = sub.add_parser("put", parents=[common], help="upload files",
                       description="Upload files; several files share one pipelined connection.")
    p.add_argument("files", nargs="+", metavar="FILE")
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
    p.add_argument("names", nargs="+", metavar="NAME")
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

    p = sub.add_parser("ls", parents=[common], help="list a directory on the server")
    p.add_argument("path", nargs="?", default="", metavar="PATH")
    p.add_argument("-r", "--recursive", action="store_true", help="list subdirectories too")
    p.add_argument("--json", action="store_true", help="one JSON object per line")

    p = sub.add_parser("stat", parents=[common], help="show a file's size, time and hash")
    p.add_argument("name", metavar="NAME")

    p = sub.add_parser("rm", parents=[common], help="remove files on the server",
                       description="Remove files (with -r, directories and all they hold). "
                                   "The server must allow it (serve --allow-delete).")
    p.add_argument("names", nargs="+", metavar="NAME")
    p.add_argument("-r", "--recursive", action="store_true",
                   help="remove directories and everything in them")

    p = sub.add_parser("mv", parents=[common], help="rename a file or directory on the server",
                       description="Rename within the server's root, in one atomic step "
                                   "(no copy). The server must allow it (--allow-delete).")
    p.add_argument("source", metavar="SRC")
    p.add_argument("dest", metavar="DST")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing file DST (the server must allow it)")

    p = sub.add_parser("mkdir", parents=[common], help="make directories on the server")
    p.add_argument("names", nargs="+", metavar="DIR")
    p.add_argument("-p", "--parents", action="store_true",
                   help="make missing parents too; an existing directory is fine")


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


def is_loopback(host: str) -> bool:
    """True if every address ``host`` stands for is on this machine only."""
    import ipaddress

    try:
        infos = socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def exposure_warning(host: str, has_token: bool, port: int, root: str) -> str | None:
    """The loud warning for a server other machines can reach without a token."""
    if has_token or is_loopback(host):
        return None
    return (f"muxserver: WARNING: listening on {host or 'all interfaces'} without a token: "
            f"anyone who can reach port {port} can read and write every file in {root}. "
            "Use --token-file (or $MUXSERVER_TOKEN), or --host 127.0.0.1.")


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
        return _fail(str(exc), status=2)
    args = build_parser().parse_args(words)
    try:
        if args.command == "serve":
            return run_serve(args)
        if args.command == "token":
            return make_token(args)
        return run_client_command(args)
    except KeyboardInterrupt:
        print("muxserver: interrupted", file=sys.stderr)
        return 130


# -------------------------------------------------------------------------- serve


def run_serve(args: argparse.Namespace) -> int:
    from .server import Server, ServerConfig, freeze_startup_objects  # (not for clients)
    from .storage import StorageError

    limits = Limits()
    for field in dataclasses.fields(Limits):
        value = getattr(args, f"limit_{field.name}")
        if value is not None:
            setattr(limits, field.name, value)
    try:
        tokens = read_tokens(args)
    except UsageError as exc:
        return _fail(str(exc), status=2)
    config = ServerConfig(host=args.host, port=args.port, root=args.root,
                          allow_overwrite=args.allow_overwrite, allow_delete=args.allow_delete,
                          read_only=args.read_only, upload_only=args.upload_only,
                          tokens=tokens, tls_cert=args.tls_cert, tls_key=args.tls_key,
                          allow_hosts=args.allow_host, limits=limits)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    for handler in logging.getLogger().handlers:
        handler.setFormatter(LineFormatter())
    logging.getLogger("muxserver").setLevel(args.log_level.upper())
    if args.lang == "es":  # the log lines too, not only the narration
        from .log_es import install
        install(logging.getLogger("muxserver"))
    # The server logs a line per transfer and the format uses neither the caller's
    # source line nor process or thread names: skip collecting them (the logging
    # HOWTO's "Optimization" section); each would cost a system call or a stack walk.
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    if args.step:
        args.trace, args.no_console = True, True  # the prompt needs the plain terminal
    use_console = not args.no_console and sys.stdout.isatty()
    try:
        from .workers import worker_count
        workers = worker_count(args.workers)
    except ValueError as exc:
        return _fail(str(exc), status=2)
    if workers > 1 and (args.trace or args.trace_bytes or args.trace_json):
        return _fail("the trace narrates one loop: use it with --workers 1", status=2)
    if not os.path.lexists(args.root):
        try:  # (a newcomer's first `--root ~/shared`: make it, and say so)
            os.makedirs(args.root)
        except OSError as exc:
            return _fail(f"cannot make the directory {args.root}: {exc.strerror}")
        print(f"muxserver: made the directory {os.path.abspath(args.root)}",
              file=sys.stderr)
    if workers > 1:
        return run_workers(args, config, workers, use_console)
    try:
        server = Server(config)
        narrator = make_narrator(args, server) if (args.trace or args.trace_bytes) else None
        from .trace import fan_out
        server.set_trace(fan_out(narrator, open_json_trace(args.trace_json)))
        if args.step:
            from .step import Stepper
            server.loop.after_select = Stepper(server, narrator.lang if narrator else "en")
        host, port = server.start()
        server.handle_signals()
    except ValueError as exc:
        return _fail(f"bad setting: {exc}")
    except StorageError as exc:
        return _fail(exc.message)
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    warning = exposure_warning(args.host, bool(tokens), port, server.root.path)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print_banner(server.root.path, server.services.access.token_required, args, host, port)
    console = None
    if use_console:
        from .console import LiveConsole  # rich is imported only when it is used
        console = LiveConsole(server, log_lines=14 if narrator else 6)
        if narrator is not None:  # trace lines go to the console's event pane
            narrator.write = console.trace_line
        console.start()
    freeze_startup_objects()
    try:
        server.serve_forever()
    finally:
        if console is not None:
            console.stop()
    stats, loop = server.stats, server.loop
    print(stop_summary(args.lang, done=stats.transfers_done, failed=stats.transfers_failed,
                       longest=loop.longest_step, what=loop.longest_step_what,
                       slow=loop.slow_steps), file=sys.stderr)
    return 0


STOPPED = {"en": "muxserver: stopped after {done} transfer(s), {failed} failed{shares}; longest "
                 "loop step {ms:.1f} ms ({what}), {slow} over 20 ms",
           "es": "muxserver: detenido tras {done} transferencia(s), {failed} fallida(s){shares}; "
                 "el paso más largo del bucle {ms:.1f} ms ({what}), {slow} de más de 20 ms"}


def stop_summary(lang: str, *, done: int, failed: int, longest: float, what: str, slow: int,
                 shares: dict[int, int] | None = None) -> str:
    """The line printed when the server has stopped; ``shares``: worker index -> its
    transfers, with --workers."""
    lang = "es" if lang == "es" else "en"  # (None: no --lang given)
    parts = (" (" + ", ".join(f"worker {i + 1}: {n}" for i, n in sorted(shares.items())) + ")"
             if shares is not None else "")
    return STOPPED[lang].format(done=done, failed=failed, shares=parts, ms=longest * 1000,
                                what=what or ("ninguno" if lang == "es" else "none"), slow=slow)


def run_workers(args: argparse.Namespace, config: Any, count: int, use_console: bool) -> int:
    """--workers N: a supervisor and N worker processes (workers.py)."""
    from .workers import Supervisor

    supervisor = Supervisor(config, count, console=use_console)
    try:
        host, port = supervisor.start()
    except ValueError as exc:
        return _fail(f"bad setting: {exc}")
    except OSError as exc:
        return _fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    warning = exposure_warning(args.host, bool(config.tokens), port, supervisor.root_path)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"workers: {count} processes (pids {', '.join(map(str, supervisor.pids.values()))})"
          ", one port shared with SO_REUSEPORT")
    print_banner(supervisor.root_path, bool(config.tokens), args, host, port)
    console = None
    if use_console:
        from .console import LiveConsole

        console = LiveConsole(supervisor)  # (it reads supervisor.snapshot(), like a server's)
        supervisor.on_log = console.view.add_log
        console.start()
    try:
        supervisor.run()
    finally:
        if console is not None:
            console.stop()
    print(stop_summary(args.lang, **supervisor.totals_summary()), file=sys.stderr)
    return 0


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
        return _fail(f"unknown right {unknown[0]!r}: a token's rights are read, write and "
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
            return _fail(f"cannot write {args.append}: {exc.strerror}")
        print(f"muxserver: added to {args.append} (rights: {rights or 'all'}); give "
              "the token to whoever should connect", file=sys.stderr)
    print(token)
    return 0


def open_json_trace(path: str | None) -> Any:
    """The --trace-json sink, or None. The file stays open while the process runs."""
    if not path:
        return None
    from .trace import JsonTrace
    try:
        # Line-buffered: each event is in the file as it happens (readers follow it).
        return JsonTrace(open(path, "w", encoding="utf-8", buffering=1))  # noqa: SIM115
    except OSError as exc:
        raise ValueError(f"cannot write the trace to {path}: {exc.strerror}") from None


def make_narrator(args: argparse.Namespace, server: Any) -> Any:
    from .trace import Narrator, default_language

    return Narrator(args.lang or default_language(), show_bytes=args.trace_bytes)


def print_banner(root: str, token_required: bool, args: argparse.Namespace, host: str,
                 port: int) -> None:
    """What to type elsewhere: the client commands with the flags this server needs, and
    when other machines can reach it, its address for a browser (and a QR code of it,
    on a terminal, for a phone). Tokens themselves are never printed."""
    from .server import format_address

    reach = host
    wide = not is_loopback(host)
    if host in ("0.0.0.0", "::", ""):
        reach = reachable_address() or socket.gethostname()
    flags = []
    if reach not in ("127.0.0.1", "localhost"):
        flags.append(f"--host {reach}")
    if port != DEFAULT_PORT:
        flags.append(f"--port {port}")
    if args.token_file:
        flags.append(f"--token-file {args.token_file}")
    elif token_required:
        flags.append("--token TOKEN")
    if args.tls_cert:
        flags.append(f"--tls --cafile {args.tls_cert}")
    client_args = "".join(" " + flag for flag in flags)
    print(f"muxserver {__version__} serving {root}")
    print(f"from another shell:  python -m muxserver put FILE{client_args}")
    print(f"                     python -m muxserver ls{client_args}")
    scheme = "https" if args.tls_cert else "http"
    url = f"{scheme}://{format_address(reach, port)}/"
    login = " (then /?token=TOKEN once)" if token_required else ""
    print(f"in a browser:        {url}{login}")
    if wide and sys.stdout.isatty():
        for line in qr_lines(url):
            print(line)
    # Last, so that a script waiting for this line knows the server accepts connections.
    print(f"listening on {format_address(host, port)} (Ctrl-C to stop)", flush=True)


def reachable_address() -> str | None:
    """This machine's address on its default route, for a server listening on every
    address. A UDP socket's connect() only chooses a route: no packet is sent (and
    192.0.2.1 is TEST-NET-1, reserved for documentation, routed nowhere)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
    except OSError:
        return None


def qr_lines(text: str) -> list[str]:
    """``text`` as a QR code in terminal characters (two modules per character)."""
    import io

    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue().splitlines()


# ------------------------------------------------------------------------ clients


def run_client_command(args: argparse.Namespace) -> int:
    try:
        token = read_token(args)
    except UsageError as exc:
        return _fail(str(exc), status=2)
    client = Client(args.host, args.port, timeout=args.timeout, token=token,
                    tls=args.tls or bool(args.cafile), cafile=args.cafile)
    try:
        with client:
            if args.command in ("put", "get"):
                return transfer(args, client)
            if args.command == "ls":
                return print_listing(args, client)
            if args.command == "stat":
                return print_stat(args, client)
            return change(args, client)
    except ClientError as exc:
        return _fail(exc.message)
    except UsageError as exc:
        return _fail(str(exc), status=2)
    except OSError as exc:  # a local file or directory we could not use
        where = f" {exc.filename}" if exc.filename else ""
        return _fail(f"local error:{where}: {exc.strerror or exc}")


class UsageError(Exception):
    """A command line that makes no sense (exit status 2)."""


def transfer(args: argparse.Namespace, client: Client) -> int:
    """put or get: plan the operations, run them pipelined, report each as it ends."""
    from .progress import TransferReport  # rich is imported only for a terminal

    if args.command == "put":
        ops: list[Any] = plan_puts(args, client)
        if args.sync:
            ops = leave_out_unchanged(ops, client, args.quiet)
        find_resume_offsets([op for op in ops if op.resumable or args.resume], client,
                            args.quiet)
        total = sum(_size_or_zero(op.local) - op.body_offset for op in ops)
    else:
        ops = plan_gets(args, client)
        if args.sync:
            ops = leave_out_unchanged(ops, client, args.quiet)
        total = sum(op.expected_size for op in ops)
    report = TransferReport(quiet=args.quiet, files=len(ops), total_bytes=total or None)
    client.progress, client.on_finish = report.progress, report.finished
    try:
        client.run(ops)
    except KeyboardInterrupt:
        report.close()
        for op in ops:
            if isinstance(op, GetFile) and not op.result.ok and os.path.exists(op.part):
                print(f"muxserver: kept {op.part} ({format_bytes(os.path.getsize(op.part))}); "
                      "get --resume continues it", file=sys.stderr)
        raise
    finally:
        status = report.close()
    if args.command == "put":
        tell_what_the_server_kept(ops, client)
    return status


#: Failures that cut an upload off (rather than refuse it): the server may keep its start.
CUT_OFF = ("connection", "timeout")


def tell_what_the_server_kept(ops: list[PutFile], client: Client) -> None:
    """After resumable uploads were cut off, ask the server (on a new connection) how
    much of each it kept, and say how to continue."""
    cut = [op for op in ops if op.resumable and op.result.code in CUT_OFF]
    if not cut:
        return
    client.progress = client.on_finish = None
    try:
        answers = client.run([op.kept_query() for op in cut])
    except ClientError:
        answers = []  # the server is gone (or unreachable): it may still keep them
    for op, answer in itertools.zip_longest(cut, answers[:len(cut)]):
        if answer is None or not answer.ok:
            print(f"muxserver: {op.name}: interrupted; the server keeps what it received "
                  "(if it could): put --resume continues it", file=sys.stderr)
        elif answer.info["offset"]:
            print(f"muxserver: {op.name}: interrupted; "
                  f"{format_bytes(answer.info['offset'])} kept on the server: "
                  "put --resume continues it", file=sys.stderr)


def leave_out_unchanged(ops: list[Any], client: Client, quiet: bool) -> list[Any]:
    """--sync: the puts or gets whose two sides differ. One pipelined round of stat
    requests tells each remote file's size and, where the server remembers them, its
    digests; a local file of the same size is hashed in one of them (or its digest
    remembered) and compared. What differs is sent and replaces the other side; what
    is the same is said, and left alone. A remote file whose digest the server does not
    know yet means "send"."""
    replies = client.run([Stat(op.name) for op in ops])
    changed, same = [], 0
    for op, reply in zip(ops, replies):
        remote = reply.info if reply.ok and reply.info.get("type") == "file" else None
        local = op.local if isinstance(op, PutFile) else op.dest
        known = remote_digest(remote)
        digest = local_digest(local, remote.get("size") if remote else None, known)
        if known is not None and digest == known:
            same += 1
            if not quiet:
                print(f"same: {op.name} (not sent)" if isinstance(op, PutFile)
                      else f"same: {op.name} -> {op.dest} (not fetched)", file=sys.stderr)
            continue
        if isinstance(op, PutFile):
            op.digest = digest  # (hashed already: the put need not hash again)
            op.overwrite = op.overwrite or remote is not None
        else:
            op.overwrite = op.overwrite or os.path.lexists(op.dest)
        changed.append(op)
    if not quiet:
        print(f"muxserver: {same} file(s) the same on both sides, {len(changed)} to "
              f"{'send' if ops and isinstance(ops[0], PutFile) else 'fetch'}",
              file=sys.stderr)
    return changed


def remote_digest(info: dict[str, Any] | None) -> Digest | None:
    """The digest a stat reply carries (None: none known, or none that makes sense)."""
    try:
        return from_fields(info) if info is not None else None
    except ValueError:
        return None


def local_digest(path: str, size: int | None, like: Digest | None) -> Digest | None:
    """The digest of a local file in the algorithm of ``like`` if it has ``size`` bytes
    (remembered, or computed); None if it is missing, unreadable, of another size, or
    there is nothing to compare it with."""
    from .client import file_digest

    if like is None:
        return None
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        st = os.fstat(fd)
        if size is None or st.st_size != size or not os.path.isfile(path):
            return None
        return file_digest(fd, st, like.algorithm)
    finally:
        os.close(fd)


def find_resume_offsets(ops: list[PutFile], client: Client, quiet: bool = False) -> None:
    """Ask the server, in one pipelined round, how much of each upload it kept from an
    earlier attempt, and continue from there (saying so). An upload is named on the
    server by its digest if this machine remembers one (the put will declare it), else
    by its mtime (the put will hash it while sending it): no file is read for this."""
    from .client import Partial, remembered_digest

    queries = []
    for op in ops:
        try:
            fd = os.open(op.local, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
        except OSError:
            continue  # the put reports why the file cannot be read
        try:
            st = os.fstat(fd)
            op.digest = op.digest or remembered_digest(fd, st)
        finally:
            os.close(fd)
        queries.append((op, Partial(op.name, op.digest, st.st_size,
                                    mtime=None if op.digest else st.st_mtime)))
    if not queries:
        return
    results = client.run([query for _op, query in queries])
    for (op, _query), result in zip(queries, results):
        if result.ok and result.info["offset"]:
            op.body_offset = result.info["offset"]
            op.resumable = True
            if not quiet:
                print(f"muxserver: {op.name}: resuming: "
                      f"{format_bytes(op.body_offset)} of it are on the server already",
                      file=sys.stderr)


#: Uploads at least this big ask the server to keep what it got if they are cut off.
RESUMABLE_FROM = 1024 * 1024


def _size_or_zero(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0  # the put itself reports why the file cannot be read


def plan_puts(args: argparse.Namespace, client: Client) -> list[PutFile]:
    if args.as_name is not None and len(args.files) != 1:
        raise UsageError("--as names one file; give a single FILE")
    ops: list[PutFile] = []
    for path in args.files:
        if os.path.isdir(path):
            if not args.recursive:
                raise UsageError(f"{path} is a directory (use -r to send it)")
            base = (remote_name(args.as_name) if args.as_name is not None
                    else os.path.basename(os.path.normpath(path)))
            ops += [PutFile(local, f"{base}/{rel}" if base not in ("", ".") else rel,
                            overwrite=args.overwrite,
                            resumable=_size_or_zero(local) >= RESUMABLE_FROM)
                    for local, rel in walk_files(path)]
        else:
            name = os.path.basename(path)
            if args.as_name is not None:
                name = file_target(args.as_name, name, client)
            ops.append(PutFile(path, name, overwrite=args.overwrite,
                               resumable=_size_or_zero(path) >= RESUMABLE_FROM))
    return ops


def file_target(as_name: str, leaf: str, client: Client) -> str:
    """Where ``put FILE --as AS`` stores FILE: inside AS if AS is a directory (written
    ``AS/``, the root, or one that exists on the server), else under the name AS."""
    name = remote_name(as_name)
    inside = as_name.rstrip().endswith("/") or not name
    if not inside:
        info = client.run([Stat(name)])[0]
        inside = info.ok and info.info.get("type") == "dir"
    return (f"{name}/{leaf}" if name else leaf) if inside else name


def walk_files(top: str) -> list[tuple[str, str]]:
    """Regular files below ``top`` as (local path, relative POSIX name), sorted."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        for filename in sorted(filenames):
            local = os.path.join(dirpath, filename)
            if os.path.isfile(local) and not os.path.islink(local):
                found.append((local, os.path.relpath(local, top).replace(os.sep, "/")))
            else:
                print(f"muxserver: skipping {local}: not a regular file", file=sys.stderr)
    return found


def plan_gets(args: argparse.Namespace, client: Client) -> list[GetFile]:
    """One GetFile per file; -r expands directories. Sizes are learnt up front (one
    pipelined round of stat requests) so the overall progress bar has a total."""
    from .names import BadName, split_name

    names = [remote_name(name) for name in args.names]
    infos = {r.name: r.info for r in client.run([Stat(n) for n in names if n])}
    infos[""] = {"type": "dir"}  # the served root
    ops: list[GetFile] = []
    seen: set[str] = set()
    for name in names:
        info = infos.get(name, {})
        if info.get("type") == "dir" and not args.recursive:
            raise UsageError(f"{name or '/'} is a directory: use -r to get it and all "
                             "it holds")
        targets = [(name, os.path.basename(name), info.get("size", 0))]
        if args.recursive and info.get("type") == "dir":
            base = os.path.basename(name)  # ("" for the root: its files go straight in)
            targets = [(e["name"], base + e["name"][len(name):] if name else e["name"],
                        e.get("size", 0))
                       for e in client.list(name, recursive=True) if e.get("type") == "file"]
        for remote, rel, size in targets:
            try:
                split_name(rel)  # a hostile server must not make us write outside -o
            except BadName as exc:
                raise ClientError("bad_name", f"refusing a name from the server: {exc}") from None
            dest = os.path.join(args.output, *rel.split("/"))
            if dest in seen:
                raise UsageError(f"two files would be written to {dest}")
            seen.add(dest)
            os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
            op = GetFile(remote, dest, overwrite=args.overwrite, resume=args.resume)
            op.expected_size = size
            ops.append(op)
    return ops


def change(args: argparse.Namespace, client: Client) -> int:
    """rm, mv and mkdir: one pipelined round; a line per failure, and per success
    unless --quiet."""
    from .client import MakeDir, Move, Remove

    if args.command == "mv":
        ops: list[Any] = [Move(remote_name(args.source), remote_name(args.dest),
                               overwrite=args.overwrite)]
    elif args.command == "rm":
        ops = [Remove(remote_name(name), recursive=args.recursive) for name in args.names]
    else:
        ops = [MakeDir(remote_name(name), parents=args.parents) for name in args.names]
    failed = 0
    for op, result in zip(ops, client.run(ops)):
        if not result.ok:
            failed += 1
            print(f"muxserver: {args.command} {op.name} failed: {result.message}",
                  file=sys.stderr)
        elif not args.quiet:
            print(describe_change(op, result.info), file=sys.stderr)
    return 1 if failed else 0


def describe_change(op: Any, info: dict[str, Any]) -> str:
    if op.op == "mv":
        return f"moved {op.name} -> {op.to}" + (" (replaced)" if info.get("replaced") else "")
    if op.op == "rm":
        removed = info.get("removed", 0)
        return f"removed {op.name}" + ("" if removed == 1 else f" ({removed} entries)")
    return f"made {op.name}/" if info.get("created") else f"{op.name}/ already exists"


def print_listing(args: argparse.Namespace, client: Client) -> int:
    listing = client.listing(remote_name(args.path), recursive=args.recursive)
    entries = sorted(listing.entries, key=lambda e: e.get("name", ""))
    import json

    for entry in entries:
        if args.json:
            print(json.dumps(entry, ensure_ascii=False))
            continue
        name = entry.get("name", "?") + ("/" if entry.get("type") == "dir" else "")
        size = format_bytes(entry.get("size", 0)) if entry.get("type") == "file" else "-"
        print(f"{size:>10}  {format_time(entry.get('mtime'))}  {name}")
    left_out = listing.info.get("left_out", 0)
    if not args.json and not args.quiet and not entries and not left_out:
        print("(empty)", file=sys.stderr)
    if left_out and not args.quiet:
        print(f"muxserver: the server left out {left_out} "
              f"{'entry' if left_out == 1 else 'entries'} whose names it does not serve "
              "(put there by another program; its log names them)", file=sys.stderr)
    return 0


def print_stat(args: argparse.Namespace, client: Client) -> int:
    name = remote_name(args.name)
    if not name:
        raise UsageError("stat needs a name below the root (ls / lists the root)")
    info = client.stat(name)
    print(f"name:     {info.get('name', args.name)}")
    print(f"type:     {info.get('type', '?')}")
    if info.get("type") == "file":
        print(f"size:     {info.get('size', 0)} bytes ({format_bytes(info.get('size', 0))})")
    print(f"modified: {format_time(info.get('mtime'))}")
    for algorithm in ALGORITHMS:
        if info.get(algorithm):
            print(f"{algorithm + ':':<10}{info[algorithm]}")
    return 0


def format_time(mtime: Any) -> str:
    if not isinstance(mtime, (int, float)):
        return "?"
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(mtime))


def _fail(message: str, status: int = 1) -> int:
    print(f"muxserver: {message}", file=sys.stderr)
    return status
