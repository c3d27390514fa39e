"""The demo scripts run, and print the lesson each one promises in its docstring."""

from __future__ import annotations

from pathlib import Path


SCRIPTS = Path(__file__).parent.parent / "scripts"

# Every demo also runs, in both languages, in tests/test_tutorial.py, which checks the
# lines the tutorials quote from it.


def test_every_demo_script_says_what_to_watch():
    for path in SCRIPTS.glob("demo_*.py"):
        assert "What to watch" in path.read_text(), path.name


def test_every_demo_is_in_both_tutorials():
    docs = SCRIPTS.parent / "docs"
    for doc in ("TUTORIAL.md", "TUTORIAL.es.md"):
        text = (docs / doc).read_text()
        missing = [p.name for p in SCRIPTS.glob("demo_*.py") if f"scripts/{p.name}" not in text]
        assert not missing, f"{doc} never runs {missing}"
