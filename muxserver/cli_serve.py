"""``python -m muxserver serve``: start the server (or its workers), say where it
listens and what to type elsewhere, and what it did when it stops."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import os
import socket
import sys
from typing import Any

from . import __version__
from .cli_common import UsageError, fail
from .cli_tokens import read_tokens
from .client import DEFAULT_PORT
from .limits import Limits
from .logformat import LineFormatter
from .trace import default_language, watching
from .addresses import is_loopback, reachable_address


def run_serve(args: argparse.Namespace) -> int:
    from .server import ServerConfig  # (not for clients)

    if bool(args.tls_cert) != bool(args.tls_key):  # (a usage error: said before anything)
        return fail("TLS needs both a certificate (--tls-cert) and a key (--tls-key)",
                    status=2)
    try:
        tokens = read_tokens(args)
    except UsageError as exc:
        return fail(str(exc), status=2)
    config = ServerConfig(host=args.host, port=args.port, root=args.root,
                          allow_overwrite=args.allow_overwrite, allow_delete=args.allow_delete,
                          read_only=args.read_only, upload_only=args.upload_only,
                          tokens=tokens, token_file=args.token_file,
                          secret_file=args.secret_file, session_days=args.session_days,
                          tls_cert=args.tls_cert, tls_key=args.tls_key,
                          allow_hosts=args.allow_host,
                          allow_basic_over_http=args.allow_basic_over_http,
                          limits=limits_from(args))
    set_up_logging(args)
    if args.step:
        args.trace, args.no_console = True, True  # the prompt needs the plain terminal
    use_console = not args.no_console and sys.stdout.isatty()
    try:
        from .workers import worker_count
        workers = worker_count(args.workers)
    except ValueError as exc:
        return fail(str(exc), status=2)
    if workers > 1 and (args.trace or args.trace_bytes or args.trace_json):
        return fail("the trace narrates one loop: use it with --workers 1", status=2)
    made = False
    if not os.path.lexists(args.root):
        parent = os.path.dirname(os.path.abspath(args.root))
        if not os.path.isdir(parent):  # (a typo must not make a whole tree)
            return fail(f"there is no directory {parent} to make {args.root} in", status=2)
        try:  # (a newcomer's first `--root ~/shared`: make it, and say so)
            os.mkdir(args.root)
        except OSError as exc:
            return fail(f"cannot make the directory {args.root}: {exc.strerror}")
        made = True
        made_it = ("creó el directorio" if (args.lang or default_language()) == "es"
                   else "made the directory")
        print(f"muxserver: {made_it} {os.path.abspath(args.root)}", file=sys.stderr)
    if workers > 1:
        status = run_workers(args, config, workers, use_console)
    else:
        status = run_one_server(args, config, use_console)
    if made and status:  # (the server never served it: leave no trace of the attempt)
        with contextlib.suppress(OSError):
            os.rmdir(args.root)
    return status


def limits_from(args: argparse.Namespace) -> Limits:
    """The defaults, with every limit flag given on the command line."""
    limits = Limits()
    for field in dataclasses.fields(Limits):
        value = getattr(args, f"limit_{field.name}")
        if value is not None:
            setattr(limits, field.name, value)
    return limits


def set_up_logging(args: argparse.Namespace) -> None:
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


def run_one_server(args: argparse.Namespace, config: Any, use_console: bool) -> int:
    """One process serves: start, say where, serve until stopped, say what it did."""
    from .server import Server, freeze_startup_objects
    from .storage import StorageError

    try:
        server = Server(config)
        narrator = make_narrator(args) if (args.trace or args.trace_bytes) else None
        stepper = None
        if args.step:
            from .step import Stepper
            stepper = Stepper(server, narrator.lang if narrator else "en")
        server.watch(watching(narrator, open_json_trace(args.trace_json), stepper))
        host, port = server.start()
        server.handle_signals()
    except ValueError as exc:
        return fail(f"bad setting: {exc}")
    except StorageError as exc:
        return fail(exc.message)
    except OSError as exc:
        return fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    warning = exposure_warning(args.host, bool(config.tokens or config.token_file), port, server.root.path)
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


#: The line printed when the server has stopped, per language.
STOPPED = {"en": "muxserver: stopped after {done} transfer(s), {failed} failed{shares}; longest "
                 "loop step {ms} ms ({what}), {slow} over 20 ms",
           "es": "muxserver: detenido tras {done} transferencia(s), {failed} fallida(s){shares}; "
                 "el paso más largo del bucle {ms} ms ({what}), {slow} de más de 20 ms"}


def stop_summary(lang: str, *, done: int, failed: int, longest: float, what: str, slow: int,
                 shares: dict[int, int] | None = None) -> str:
    """The line printed when the server has stopped; ``shares``: worker index -> its
    transfers, with --workers."""
    lang = "es" if lang == "es" else "en"  # (None: no --lang given)
    worker = "proceso" if lang == "es" else "worker"
    parts = (" (" + ", ".join(f"{worker} {i + 1}: {n}" for i, n in sorted(shares.items()))
             + ")" if shares is not None else "")
    ms = f"{longest * 1000:.1f}"
    return STOPPED[lang].format(done=done, failed=failed, shares=parts,
                                ms=ms.replace(".", ",") if lang == "es" else ms,
                                what=what or ("ninguno" if lang == "es" else "none"), slow=slow)


def run_workers(args: argparse.Namespace, config: Any, count: int, use_console: bool) -> int:
    """--workers N: a supervisor and N worker processes (workers.py)."""
    from .workers import Supervisor

    if config.tokens or config.token_file:  # (made once here, before the workers read it)
        from .seals import Seal
        from .server import secret_path

        seal = Seal.from_file(secret_path(config, os.path.realpath(args.root)))
        try:
            seal.load(make=True)
        except ValueError as exc:
            return fail(str(exc))
        if not seal.kept:  # (each worker would sign with a secret of its own)
            return fail("the workers need one server secret in a file: give --secret-file "
                        "a place that can be written (the root cannot)")
    supervisor = Supervisor(config, count, console=use_console)
    try:
        host, port = supervisor.start()
    except ValueError as exc:
        return fail(f"bad setting: {exc}")
    except OSError as exc:
        return fail(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")
    warning = exposure_warning(args.host, bool(config.tokens or config.token_file), port,
                               supervisor.root_path)
    if warning:
        print(warning, file=sys.stderr, flush=True)
    print(f"workers: {count} processes (pids {', '.join(map(str, supervisor.pids.values()))})"
          ", one port shared with SO_REUSEPORT")
    print_banner(supervisor.root_path, bool(config.tokens or config.token_file), args, host, port)
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


def make_narrator(args: argparse.Namespace) -> Any:
    from .trace import Narrator

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
        flags.append(credentials_flag(args.token_file))
    elif token_required:
        flags.append("--token TOKEN")
    if args.tls_cert:
        flags.append(f"--tls --cafile {args.tls_cert}")
    client_args = "".join(" " + flag for flag in flags)
    words = BANNER_ES if (args.lang or default_language()) == "es" else BANNER_EN
    print(words["serving"].format(version=__version__, root=root))
    print(f"{words['shell']:<21}python -m muxserver put {words['file']}{client_args}")
    print(f"{'':<21}python -m muxserver ls{client_args}")
    scheme = "https" if args.tls_cert else "http"
    url = f"{scheme}://{format_address(reach, port)}/"
    login = words["sign_in"] if token_required else ""
    print(f"{words['browser']:<21}{url}{login}")
    if wide and sys.stdout.isatty():
        for line in qr_lines(url):
            print(line)
    # Last, so that a script waiting for this line knows the server accepts connections.
    # Its first words stay "listening on" in every language: scripts look for them.
    print(f"listening on {format_address(host, port)} ({words['stop']})", flush=True)


BANNER_EN = {"serving": "muxserver {version} serving {root}", "shell": "from another shell:",
             "file": "FILE", "browser": "in a browser:", "sign_in": " (sign in there)",
             "stop": "Ctrl-C to stop"}
BANNER_ES = {"serving": "muxserver {version} sirve {root}", "shell": "desde otra terminal:",
             "file": "ARCHIVO", "browser": "en un navegador:",
             "sign_in": " (inicia sesión allí)", "stop": "Ctrl-C para parar"}


def credentials_flag(user_file: str) -> str:
    """What a client of this machine types to get in: ``--user NAME`` when the user
    file has users (a person), else ``--token-file FILE`` (its first token)."""
    from .accounts import read_accounts

    try:
        accounts = read_accounts(user_file)
    except (OSError, ValueError):
        return f"--token-file {user_file}"
    return "--user NAME" if accounts.users and not accounts.tokens else (
        f"--token-file {user_file}")


def qr_lines(text: str) -> list[str]:
    """``text`` as a QR code in terminal characters (two modules per character)."""
    import io

    import segno

    out = io.StringIO()
    segno.make(text, error="m").terminal(out=out, compact=True)
    return out.getvalue().splitlines()


def exposure_warning(host: str, has_token: bool, port: int, root: str) -> str | None:
    """The loud warning for a server other machines can reach without a token."""
    if has_token or is_loopback(host):
        return None
    return (f"muxserver: WARNING: listening on {host or 'all interfaces'} without a token: "
            f"anyone who can reach port {port} can read and write every file in {root}. "
            "Use --token-file (or $MUXSERVER_TOKEN), or --host 127.0.0.1.")
