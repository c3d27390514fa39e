"""--lang es: the server's own log lines are Spanish too, every one of them."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from muxserver import log_es, workers
from muxserver.log_es import TEMPLATES

from .conftest import run_cli, spawn_server, stop_process

PACKAGE = Path(__file__).parent.parent / "muxserver"
SLOT = re.compile(r"%[-#0 +]*\d*(?:\.\d+)?[sdrf]")
LEVELS = {"debug", "info", "warning", "error", "exception", "critical"}


def log_templates() -> set[str]:
    """The first argument of every log.<level>(...) call in the package, and of every
    line written through the turn log (``....turn_log.info(...)``)."""
    found = set()
    for path in PACKAGE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in LEVELS and node.args
                    and isinstance(node.args[0], ast.Constant)):
                continue
            receiver = node.func.value
            if ((isinstance(receiver, ast.Name) and receiver.id == "log")
                    or (isinstance(receiver, ast.Attribute) and receiver.attr == "turn_log")):
                found.add(node.args[0].value)
    return found


def test_every_log_template_has_a_spanish_twin_with_the_same_arguments():
    templates = log_templates()
    assert len(templates) > 30
    missing = templates - TEMPLATES.keys()
    assert not missing, missing
    for english, spanish in TEMPLATES.items():
        assert SLOT.findall(spanish) == SLOT.findall(english), english
    assert not TEMPLATES.keys() - templates, "a Spanish template for a line no longer logged"


def test_the_log_lines_follow_lang_es(root, tmp_path):
    (tmp_path / "hola.txt").write_text("hola\n")
    server = spawn_server(root, "--lang", "es")
    try:
        assert run_cli("put", str(tmp_path / "hola.txt"), "--port", str(server.port),
                       "-q").returncode == 0
    finally:
        stop_process(server.proc)
    _out, err = server.output()
    assert " conectado" in err and "put hola.txt: 5 bytes, blake3" in err and " bien" in err
    assert "cerrado (el otro extremo terminó de enviar)" in err
    assert "muxserver: detenido tras 1 transferencia(s)" in err
    assert " connected" not in err


def test_with_workers_the_lines_and_the_summary_follow_lang_es(root, tmp_path):
    (tmp_path / "hola.txt").write_text("hola\n")
    server = spawn_server(root, "--lang", "es", "--workers", "2")
    try:
        for i in range(4):
            assert run_cli("put", str(tmp_path / "hola.txt"), "--as", f"h{i}.txt", "--port",
                           str(server.port), "-q").returncode == 0
    finally:
        stop_process(server.proc)
    _out, err = server.output()
    assert " conectado" in err and " bien" in err and " connected" not in err
    assert re.search(r"muxserver: detenido tras 4 transferencia\(s\), 0 fallida\(s\) "
                     r"\(proceso 1: \d+, proceso 2: \d+\); el paso más largo del bucle", err), err


@pytest.mark.parametrize("status, spanish", [
    (9, "terminado por SIGKILL"),  # (a waitpid status: the signal in the low bits)
    (40, "terminado por la señal 40"),  # (a real-time signal: no name)
    (1 << 8, "estado de salida 1"),
])
def test_how_a_worker_ended_is_said_in_spanish(status, spanish):
    how = workers._how_it_ended(1234, status)
    template = ("worker %d (pid %d) exited unexpectedly (%s); the others go on, and it "
                "starts again after %.0f s")
    text, args = log_es.translate(template, (2, 1234, how, 1.0))
    assert text % args == (f"el proceso trabajador 2 (pid 1234) terminó de forma inesperada ({spanish}); "
                           "los demás siguen, y vuelve a arrancar dentro de 1 s")
