"""The client commands: ``put``, ``get``, ``ls``, ``stat``, ``mkdir``, ``rm``, ``mv``,
through the client library (``client/``): what to send, and what to print."""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
import urllib.parse
from typing import Any

from .cli_common import UsageError, fail, remote_name
from .cli_tokens import read_token
from .client import Client, ClientError, GetFile, MakeDir, PutFile, Stat
from .digests import ALGORITHMS, Digest, from_fields
from .units import format_bytes


def run_client_command(args: argparse.Namespace) -> int:
    try:
        link = follow_link(args)
        token = {"link": link} if link else read_token(args)
    except UsageError as exc:
        return fail(str(exc), status=2)
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
            if args.command == "share":
                return share(args, client)
            return change(args, client)
    except ClientError as exc:
        if exc.code == "unauthorized" and token is None:
            return fail("this server needs a token, or a name and password: give --user "
                        "NAME (a person), or --token-file FILE or --token TOKEN")
        return fail(exc.message)
    except UsageError as exc:
        return fail(str(exc), status=2)
    except OSError as exc:  # a local file or directory we could not use
        where = f" {exc.filename}" if exc.filename else ""
        return fail(f"local error:{where}: {exc.strerror or exc}")


def follow_link(args: argparse.Namespace) -> str:
    """``get URL`` and ``put FILE... URL`` with a share link: the link says the server,
    the name and the credentials (its capability, returned). "" when no link is given."""
    words = {"get": lambda: args.names, "put": lambda: args.files[-1:],
             "ls": lambda: [args.path], "stat": lambda: [args.name]}.get(
        args.command, lambda: [])()
    links = [w for w in words if w.startswith(("http://", "https://"))]
    if not links:
        return ""
    if args.command == "get" and len(args.names) > 1:
        raise UsageError("get takes one share link at a time, and no other names")
    parts = urllib.parse.urlsplit(links[0])
    capability = urllib.parse.parse_qs(parts.query).get("share", [""])[0]
    if not capability or not parts.hostname:
        raise UsageError(f"{links[0]} is no share link (it has no ?share=...)")
    args.host = parts.hostname
    try:
        args.port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError:
        raise UsageError(f"{links[0]} has no valid port") from None
    args.tls = args.tls or parts.scheme == "https"
    path = urllib.parse.unquote(parts.path).strip("/")
    if args.command == "ls":
        args.path = path
    elif args.command == "stat":
        args.name = path or "/"
    elif args.command == "get":
        if not path and not args.recursive:
            raise UsageError("the link opens a folder: get -r URL gets all it holds")
        if not path:  # (into a folder named as the shared one, as get -r NAME does)
            args.output = os.path.join(args.output, linked_folder(capability))
        args.names = [path or "/"]
    else:
        args.files = args.files[:-1]
        if not args.files:
            raise UsageError("put FILE... URL: name the files to send into the link")
        if path and args.as_name is None:
            args.as_name = path + "/"
    return capability


def linked_folder(capability: str) -> str:
    """The name of the folder a link opens, as the link says it (its payload is signed,
    not secret); "shared" if it does not say."""
    import base64
    import json

    payload = capability.partition(".")[0]
    try:
        fields = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        leaf = str(fields[2])  # (id, expiry, leaf: shares.ShareBook.capability)
        from .names import split_name

        split_name(leaf)
        return leaf
    except (ValueError, TypeError, IndexError, KeyError):
        return "shared"


def share(args: argparse.Namespace, client: Client) -> int:
    """share NAME, share --list, share --revoke ID."""
    from .shares import parse_expiry

    if args.list:
        reply = client.share("list")
        links = reply.get("links", [])
        if links:
            print(f"{'ID':<14}{'UNTIL':<18}{'OPENS':<10}{'BY':<16}NAME  URL")
        for link in links:
            kind = "drop box" if link.get("write") else "read"
            name = str(link.get("name", ""))
            url = link_url(args, name if link.get("file") else "", str(link.get("link", "")),
                           str(reply.get("host") or ""))
            print(f"{link.get('id', '?'):<14}{format_time(link.get('expires')):<18}{kind:<10}"
                  f"{str(link.get('by', '')):<16}/{name}  {url}")
        if not links and not args.quiet:
            print("muxserver: no links (share NAME makes one)", file=sys.stderr)
        return 0
    if args.revoke:
        client.share("revoke", link_id=args.revoke)
        if not args.quiet:
            print(f"muxserver: revoked {args.revoke}", file=sys.stderr)
        return 0
    if args.name is None:
        raise UsageError("share NAME makes a link (or --list, --revoke ID)")
    try:
        lifetime = parse_expiry(args.expires)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    name = remote_name(args.name)
    info = client.share("make", name, write=args.write, expires=lifetime)
    url = link_url(args, name if info.get("file") else "", str(info.get("link", "")),
                   str(info.get("host") or ""))
    if not args.quiet:
        what = "a drop box into" if args.write else "read-only:"
        print(f"muxserver: link {info.get('link_id')} to {what} /{name}, until "
              f"{format_time(info.get('expires'))}", file=sys.stderr)
    if sys.stdout.isatty():
        from .cli_serve import qr_lines

        for line in qr_lines(url):
            print(line)
    print(url)
    return 0


def link_url(args: argparse.Namespace, file_name: str, capability: str,
             public_host: str = "") -> str:
    """The URL of a link: the server as this client reached it, unless that is this
    machine's loopback and the server names an address others reach it by; a link to a
    file ends in the file's name (what a browser or ``curl -O`` saves it as)."""
    from .addresses import is_loopback

    host = public_host if public_host and is_loopback(args.host) else args.host
    host = f"[{host}]" if ":" in host else host
    scheme = "https" if args.tls or args.cafile else "http"
    leaf = file_name.rsplit("/", 1)[-1]
    return (f"{scheme}://{host}:{args.port}/{urllib.parse.quote(leaf)}"
            f"?share={capability}")


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
    made_dirs = make_empty_dirs(args, client) if args.command == "put" else 0
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
    return status or made_dirs


def make_empty_dirs(args: argparse.Namespace, client: Client) -> int:
    """put -r: the folders that hold no file (the files' own folders are made with
    them), made on the server too; 1 if one could not be, else 0."""
    names = []
    for path in args.files:
        if os.path.isdir(path) and args.recursive:
            base = (remote_name(args.as_name) if args.as_name is not None
                    else os.path.basename(os.path.normpath(path)))
            names += [f"{base}/{rel}" if base not in ("", ".") else rel
                      for rel in empty_dirs(path)]
    if not names:
        return 0
    failed = 0
    for op in client.run([MakeDir(name, parents=True) for name in names]):
        if op.ok:
            if not args.quiet:
                print(f"mkdir {op.name}/ ok", file=sys.stderr)
        else:
            failed = 1
            print(f"muxserver: mkdir {op.name} failed: {op.message}", file=sys.stderr)
    return failed


def empty_dirs(top: str) -> list[str]:
    """The folders below ``top`` with nothing in them (relative POSIX names, sorted)."""
    found = []
    for dirpath, dirnames, filenames in os.walk(top):
        if not dirnames and not filenames and dirpath != top:
            found.append(os.path.relpath(dirpath, top).replace(os.sep, "/"))
    return sorted(found)


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

    if os.path.exists(args.output) and not os.path.isdir(args.output):
        raise UsageError(f"-o names the directory to write into, and {args.output} is a "
                         "file (get NAME, then mv it, to give a file another name)")
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
            listed = client.list(name, recursive=True)
            targets = [(e["name"], base + e["name"][len(name):] if name else e["name"],
                        e.get("size", 0)) for e in listed if e.get("type") == "file"]
            for entry in listed:  # (folders too, the empty ones with them)
                if entry.get("type") == "dir":
                    rel = base + entry["name"][len(name):] if name else entry["name"]
                    try:
                        split_name(rel)
                    except BadName as exc:
                        raise ClientError("bad_name", f"refusing a name from the server: "
                                                      f"{exc}") from None
                    os.makedirs(os.path.join(args.output, *rel.split("/")), exist_ok=True)
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
    import json

    try:
        listing = client.listing(remote_name(args.path), recursive=args.recursive)
        entries = sorted(listing.entries, key=lambda e: e.get("name", ""))
        left_out = listing.info.get("left_out", 0)
    except ClientError as exc:
        if exc.code != "not_a_directory":
            raise
        entries, left_out = [client.stat(remote_name(args.path))], 0  # (ls FILE: the file)

    for entry in entries:
        if args.json:
            print(json.dumps(entry, ensure_ascii=False))
            continue
        name = entry.get("name", "?") + ("/" if entry.get("type") == "dir" else "")
        size = format_bytes(entry.get("size", 0)) if entry.get("type") == "file" else "-"
        print(f"{size:>10}  {format_time(entry.get('mtime'))}  {name}")
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
