"""Who may connect, on the command line: tokens made (``python -m muxserver token``) and
users added, listed and removed (``python -m muxserver user ...``) in the user file
(accounts.py); for a client, the credentials it presents (a token, or a name and
password)."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
from typing import TYPE_CHECKING

from .cli_common import UsageError, fail

if TYPE_CHECKING:
    from .accounts import Account


def add_token_arguments(parser: argparse.ArgumentParser, help_text: str,
                        file_help: str, user_help: str | None = None) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--token", help=help_text)
    group.add_argument("--token-file", metavar="FILE", help=file_help)
    if user_help:
        group.add_argument("--user", metavar="NAME", help=user_help)


def check_user_file(path: str) -> None:
    """The server's user file, read once at start: UsageError if it cannot be used."""
    from .accounts import read_accounts

    try:
        accounts = read_accounts(path)
    except OSError as exc:
        raise UsageError(f"cannot read the user file {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    if not len(accounts):
        raise UsageError(f"the user file {path} holds no user and no token (add one: "
                         f"python -m muxserver user add NAME --file {path})")


def read_tokens(args: argparse.Namespace) -> dict[str, frozenset[str]]:
    """The server's fixed token: --token or $MUXSERVER_TOKEN (--token-file is read
    live by the server itself, see accounts.LiveAccounts)."""
    from .accounts import ALL_RIGHTS

    if args.token_file:
        check_user_file(args.token_file)
        return {}
    token = args.token or os.environ.get("MUXSERVER_TOKEN")
    return {token: ALL_RIGHTS} if token else {}


def read_token(args: argparse.Namespace) -> str | dict[str, str] | None:
    """The client's credentials: ``--user NAME`` (the password from $MUXSERVER_PASSWORD,
    else asked for), or a token: the first of --token-file (its first token: a
    server's user file works too), --token or $MUXSERVER_TOKEN."""
    from .accounts import TOKEN, read_lines

    if getattr(args, "user", None):
        return {"user": args.user, "password": read_password(args.user)}
    if args.token_file:
        try:
            lines = read_lines(args.token_file)
        except OSError as exc:
            raise UsageError(f"cannot read the token file {args.token_file}: "
                             f"{exc.strerror}") from None
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        for _, account in lines:
            if account is not None and account.kind == TOKEN:
                return account.secret
        raise UsageError(f"the token file {args.token_file} holds no token")
    return args.token or os.environ.get("MUXSERVER_TOKEN") or None


def read_password(user: str, *, twice: bool = False) -> str:
    """$MUXSERVER_PASSWORD, else asked for on the terminal, else one line of stdin."""
    password = os.environ.get("MUXSERVER_PASSWORD")
    if password is not None:
        return password
    if not sys.stdin.isatty():
        line = sys.stdin.readline()
        if not line:
            raise UsageError("no password: type it, or give it as one line on stdin or "
                             "in $MUXSERVER_PASSWORD")
        return line.rstrip("\r\n")
    try:
        password = getpass.getpass(f"password for {user}: ")
        if twice and getpass.getpass("the same again: ") != password:
            raise UsageError("the two passwords differ")
    except EOFError:
        raise UsageError("no password given") from None
    return password


def new_token() -> str:
    """32 random bytes, URL-safe (it can go in ?token= as it is), never beginning with
    "-": one token in 64 would, and ``--token -K4q...`` is then read as a flag."""
    import secrets

    while True:
        token = secrets.token_urlsafe(32)
        if not token.startswith("-"):
            return token


def make_token(args: argparse.Namespace) -> int:
    """A new token (``new_token``), printed, and added to a user file if asked, with a
    name and a folder if given."""
    from .accounts import (
        ALL_RIGHTS,
        TOKEN,
        Account,
        check_folder,
        check_name,
        format_rights,
        parse_rights,
    )

    try:
        rights = parse_rights(args.rights)
        folder = check_folder(args.path or "")
        name = check_name(args.name) if args.name else ""
    except ValueError as exc:
        return fail(str(exc), status=2)
    if (name or folder) and not args.append:
        return fail("--name and --path go with --append FILE (they are kept in the file)",
                    status=2)
    token = new_token()
    if args.append:
        account = Account(TOKEN, name, token, rights, folder)
        try:
            _change_file(args.append, add=account, replace=False)
        except UsageError as exc:
            return fail(str(exc))
        shown = "all" if rights == ALL_RIGHTS else format_rights(rights)
        print(f"muxserver: added to {args.append} (rights: {shown}"
              f"{', folder /' + folder if folder else ''}); give the token to whoever "
              "should connect", file=sys.stderr)
    print(token)
    return 0


# -- users


def run_user_command(args: argparse.Namespace) -> int:
    from .accounts import USER, Account, check_folder, check_name, format_rights, hash_password
    from .accounts import parse_rights as rights_of

    try:
        if args.action == "list":
            return _list_users(args.file)
        name = check_name(args.name)
        if args.action == "remove":
            _change_file(args.file, remove=name)
            print(f"muxserver: removed {name} from {args.file}; their sessions end at their "
                  "next request", file=sys.stderr)
            return 0
        before = _user_in(args.file, name) if args.replace else None
        rights = (rights_of(args.rights) if args.rights is not None
                  else before.rights if before is not None else rights_of(""))
        folder = (check_folder(args.path) if args.path is not None
                  else before.folder if before is not None else "")
        password = read_password(name, twice=True)
        if not password:
            raise UsageError("an empty password would let anyone in")
        account = Account(USER, name, hash_password(password), rights, folder)
        changed = _change_file(args.file, add=account, replace=args.replace)
    except ValueError as exc:
        return fail(str(exc), status=2)
    except UsageError as exc:
        return fail(str(exc), status=2 if "exists" in str(exc) else 1)
    print(f"muxserver: {'changed' if changed else 'added'} {name} in {args.file} (rights: "
          f"{format_rights(rights)}{', folder /' + folder if folder else ''}); a running "
          "server takes it within a second", file=sys.stderr)
    return 0


def _user_in(path: str, name: str) -> "Account | None":
    """The user ``name`` of the file, if it is there (and the file can be read)."""
    from .accounts import USER, read_lines

    try:
        lines = read_lines(path)
    except (OSError, ValueError):
        return None
    return next((a for _, a in lines if a is not None and a.kind == USER and a.name == name),
                None)


def _list_users(path: str) -> int:
    from .accounts import USER, format_rights, read_lines

    try:
        lines = read_lines(path)
    except OSError as exc:
        return fail(f"cannot read {path}: {exc.strerror}")
    except ValueError as exc:
        return fail(str(exc))
    for _, account in lines:
        if account is None:
            continue
        kind = "user " if account.kind == USER else "token"
        print(f"{kind} {account.name or '(no name)':<20} {format_rights(account.rights):<18} "
              f"/{account.folder}")
    return 0


def _change_file(path: str, *, add: "Account | None" = None, remove: str = "",
                 replace: bool = False) -> bool:
    """Add ``add`` to the user file (made, mode 0600, if there is none) or take the user
    ``remove`` out, keeping every other line as it was. True if an account of the same
    kind and name was replaced. UsageError if it cannot be done."""
    import fcntl

    try:
        folder = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise UsageError(f"cannot use the folder of {path}: {exc.strerror}") from None
    try:
        # (one writer at a time: two `user add` at once must not lose one of them)
        fcntl.flock(folder, fcntl.LOCK_EX)
        return _change_locked(path, add, remove, replace)
    finally:
        os.close(folder)


def _change_locked(path: str, add: "Account | None", remove: str, replace: bool) -> bool:
    from .accounts import USER, read_lines, write_lines

    try:
        lines = read_lines(path)
    except FileNotFoundError:
        lines = []
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None
    except ValueError as exc:
        raise UsageError(f"{exc} (mend that line first)") from None
    kept, found = [], False
    for text, account in lines:
        same = account is not None and account.name and (
            (add is not None and account.kind == add.kind and account.name == add.name)
            or (remove and account.kind == USER and account.name == remove))
        if same:
            found = True
            if add is not None and not replace:
                raise UsageError(f"{add.kind} {add.name!r} exists in {path} (--replace to "
                                 "give it a new password, rights or folder)")
            if add is not None:
                kept.append(add.line())
            continue
        kept.append(text)
    if remove and not found:
        raise UsageError(f"there is no user {remove!r} in {path}")
    if add is not None and not found:
        kept.append(add.line())
    try:
        write_lines(path, kept)
    except OSError as exc:
        raise UsageError(f"cannot write {path}: {exc.strerror}") from None
    return found

