"""Metadata lives in setup.cfg. This file adds one thing: the optional compiled build.

By default muxserver installs as plain Python, the code its readers read and change.
An operator who wants the server's CPU for files rather than for the interpreter can
compile the modules every request passes through with mypyc (the compiler mypy itself
is built with: the same code, its type annotations turned into C; see
docs/OPERATIONS.md "The compiled build" and docs/PERFORMANCE.md):

    pip install '.[compiled]' && MUXSERVER_COMPILED=1 pip install --no-build-isolation .

(the first command brings the dependencies and the build's tools, mypy among them; the
second builds without isolation, so that mypyc finds them).

A compiled module is an extension module beside its .py file, and Python imports it
first: an editable install (-e) would keep running the compiled code after an edit of
the .py file, so build it into a plain install or a copy (scripts/compiled_build.py).
"""

import os

from setuptools import setup

#: The modules a request passes through, below the CLI: the loop, the server's accepts
#: and closes, a channel and its buffers, the native codec and the request rules shared
#: with HTTP, names, rights, digests, the observers' hooks and the storage rules. (The
#: storage classes inherit from several others: mypyc compiles their methods but keeps
#: them regular Python classes, which their ``native_class=False`` says. HTTP's sessions
#: stay Python: they inherit from several classes too.)
COMPILED = ["access", "atomic", "buffers", "channel", "digests", "errors", "hashcache",
            "lifecycle", "limits", "locks", "logformat", "loop", "names", "native",
            "observe", "protocol", "rules", "session", "sniff", "storage/__init__",
            "storage/copies", "storage/directories", "storage/errors", "storage/partials",
            "storage/properties", "storage/root", "storage/uploads", "server", "transport",
            "turnlog"]


def compiled_modules() -> list:
    if os.environ.get("MUXSERVER_COMPILED") != "1":
        return []
    from mypyc.build import mypycify  # (only here: a plain install needs no mypy)

    return mypycify([f"muxserver/{name}.py" for name in COMPILED])


setup(ext_modules=compiled_modules())
