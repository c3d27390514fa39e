#!/usr/bin/env python3
"""Build muxserver's compiled modules (setup.py's COMPILED, by mypyc) in a copy of this
checkout; with --test, run the whole test suite against them.

    python scripts/compiled_build.py DEST             # a compiled copy in DEST (a minute)
    python scripts/compiled_build.py DEST --test      # ... then the suite against it
    python scripts/compiled_build.py DEST --test -- -k native   # (pytest's arguments)

The copy is this working tree as it is (muxserver/, tests/, scripts/, docs/ and the
set-up files), uncommitted changes included, so that a change can be tried compiled
before it is committed; this checkout itself never gets a compiled module (Python would
import it before the .py file, and an edit of the .py would seem to do nothing).

Run the compiled server from the copy: ``cd DEST && python -m muxserver ...``. Measure
it with ``python scripts/instructions_per_request.py --code DEST`` or ``python
scripts/bench.py --only many --compiled``. Needs mypy (the test extra has it) and a C
compiler.
"""

from __future__ import annotations

import argparse
import ast
import importlib.machinery
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
COPIED = ("muxserver", "tests", "scripts", "docs", "setup.py", "setup.cfg", "README.md")


def compiled_names() -> list[str]:
    """setup.py's COMPILED list (read, not imported: importing setup.py runs setup())."""
    tree = ast.parse((REPO / "setup.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
                isinstance(target, ast.Name) and target.id == "COMPILED"
                for target in node.targets):
            return list(ast.literal_eval(node.value))
    raise SystemExit("setup.py has no COMPILED list")


def build(dest: Path) -> Path:
    """Copy this working tree to ``dest`` (which must not exist) and compile it there;
    return ``dest``. SystemExit with the compiler's last lines if it fails."""
    dest.mkdir(parents=True)
    skip = shutil.ignore_patterns("__pycache__", "*.so", "build", "*.egg-info")
    for name in COPIED:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(source, dest / name, ignore=skip)
        else:
            shutil.copy2(source, dest / name)
    done = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"],
                          cwd=dest, env={**os.environ, "MUXSERVER_COMPILED": "1"},
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if done.returncode != 0:
        raise SystemExit("the compiled build failed:\n" + "\n".join(
            done.stdout.splitlines()[-30:]))
    suffixes = tuple(importlib.machinery.EXTENSION_SUFFIXES)
    missing = [name for name in compiled_names()
               if not any((dest / "muxserver" / f"{name}{suffix}").exists()
                          for suffix in suffixes)]
    if missing:
        raise SystemExit(f"the build made no compiled module for: {', '.join(missing)}")
    return dest


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("dest", type=Path, help="where the compiled copy goes (new)")
    parser.add_argument("--test", action="store_true",
                        help="then run the test suite against the compiled modules")
    parser.add_argument("pytest_args", nargs="*", help="after --: arguments for pytest")
    args = parser.parse_args()
    if args.dest.exists():
        parser.error(f"{args.dest} exists: give a new directory")
    dest = build(args.dest.resolve())
    print(f"compiled {len(compiled_names())} modules in {dest}", flush=True)
    if not args.test:
        return 0
    # The copy first on the path: its tests import its muxserver, compiled modules first.
    env = {**os.environ, "PYTHONPATH": str(dest)}
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider",
                           *args.pytest_args], cwd=dest, env=env).returncode


if __name__ == "__main__":
    sys.exit(main())
