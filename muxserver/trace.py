"""The narrated trace: one plain sentence per socket event, in English or Spanish.

The loop, the listener, the channels and the sessions report what happens to their
observer (observe.py); the :class:`Narrator` is one, and turns each event into a
sentence a learner can follow while it happens::

    [#1] recv returned 3 bytes
    [#1] the length prefix is 3 of 8 bytes, waiting for the rest
    [#1] send was offered 65536 bytes and took 21845; 43691 wait in the queue

Every event kind has a sentence in every language (``SENTENCES``); a test checks it.
``--trace-bytes`` adds a short hex dump of what each recv and send carried.
"""

from __future__ import annotations

import json
import locale
import os
import sys
import time
from typing import Any, Callable, TextIO

from .names import printable
from .observe import NOBODY, Observer, Recorder

LANGUAGES = ("en", "es")

SENTENCES: dict[str, dict[str, str]] = {
    "en": {
        "listening": "listening on {address}; the loop sleeps in select() until a socket "
                     "is ready",
        "wakeup": "select() woke up: {sockets} (wake-up #{count})",
        "timer_wakeup": "select() woke up for a timer, no socket ready (wake-up #{count})",
        "accept": "accept() gave a new client, {peer}; {clients}",
        "refuse": "{peer} refused: already {clients} (too_many_clients)",
        "emfile": "accept() failed: {error}; not accepting for {backoff:g} s instead of "
                  "spinning on a listener that stays readable",
        "emfile_resume": "watching the listener again after the back-off",
        "handshake": "TLS handshake done",
        "sniff": "the first bytes say {speaks}: this connection speaks it from now on",
        "http_request": "HTTP request: {method} {target}",
        "http_response": "HTTP response {status} queued (a body of {size})",
        "recv": "recv returned {n}",
        "splice": "splice moved {n} of the body from the socket to the file, never through "
                  "Python",
        "io_error": "{call} failed: {error}; this connection ends, the others go on",
        "eof": "recv returned 0: the peer finished sending (half close or full close: recv "
               "cannot tell); replies still owed will be sent",
        "prefix_wait": "the length prefix is {have} of 8 bytes, waiting for the rest",
        "header_wait": "the header is {have} of {need} bytes, waiting for the rest",
        "header": "header complete: {op} {name} (id {id}), body 0 of {length}",
        "body": "body: +{n}, {done} of {length}",
        "request_done": "request complete: {op} {name}",
        "leftover": "{n} left over belong to the next request and are kept",
        "reply": "reply queued for id {id}: {outcome} ({size})",
        "send": "send was offered {offered} and took {taken}: a short write; {queued} wait "
                "in the queue",
        "send_all": "send was offered {offered} and took them all",
        "send_blocked": "send would block (the socket buffer is full); {queued} wait",
        "sendfile": "sendfile was offered {offered} of the file and took {taken}; "
                    "{queued} still to send",
        "interest": "interest {old} -> {new}: {why}",
        "pause": "backpressure: {queued} of replies wait (over the high-water mark, {high}); "
                 "reading paused",
        "resume": "the replies drained; reading resumed",
        "timeout": "timed out: {why}",
        "linger": "half-closed our side after the last reply; reading until the peer closes",
        "close": "unregistered, then closed: {reason}",
    },
    "es": {
        "listening": "escuchando en {address}; el bucle duerme en select() hasta que un "
                     "socket esté listo",
        "wakeup": "select() despertó: {sockets} (despertar n.º {count})",
        "timer_wakeup": "select() despertó por un temporizador, ningún socket listo "
                        "(despertar n.º {count})",
        "accept": "accept() entregó un cliente nuevo, {peer}; {clients}",
        "refuse": "{peer} rechazado: ya hay {clients} (too_many_clients)",
        "emfile": "accept() falló: {error}; no aceptamos conexiones durante {backoff:g} s "
                  "en lugar de girar sobre un socket de escucha que sigue legible",
        "emfile_resume": "volvemos a vigilar el socket de escucha tras la pausa",
        "handshake": "negociación TLS terminada",
        "sniff": "los primeros bytes dicen {speaks}: esta conexión lo habla desde ahora",
        "http_request": "petición HTTP: {method} {target}",
        "http_response": "respuesta HTTP {status} encolada (un cuerpo de {size})",
        "recv": "recv devolvió {n}",
        "splice": "splice movió {n} del cuerpo del socket al archivo, sin pasar por "
                  "Python",
        "io_error": "{call} falló: {error}; esta conexión termina, las demás siguen",
        "eof": "recv devolvió 0: el otro extremo terminó de enviar (cierre parcial "
               "(half-close) o cierre completo: recv no puede distinguirlos); enviaremos "
               "igualmente las respuestas pendientes",
        "prefix_wait": "el prefijo de longitud lleva {have} de 8 bytes; esperamos el resto",
        "header_wait": "la cabecera lleva {have} de {need} bytes; esperamos el resto",
        "header": "cabecera completa: {op} {name} (id {id}), cuerpo 0 de {length}",
        "body": "cuerpo: +{n}, {done} de {length}",
        "request_done": "petición completa: {op} {name}",
        "leftover": "sobran {n}: pertenecen a la petición siguiente y los guardamos",
        "reply": "respuesta encolada para el id {id}: {outcome} ({size})",
        "send": "a send le ofrecimos {offered} y tomó {taken}: una escritura parcial; "
                "{queued} esperan en la cola",
        "send_all": "a send le ofrecimos {offered} y los tomó todos",
        "send_blocked": "send se bloquearía (el búfer del socket está lleno); esperan "
                        "{queued}",
        "sendfile": "a sendfile le ofrecimos {offered} del archivo y tomó {taken}; "
                    "faltan {queued}",
        "interest": "interés {old} -> {new}: {why}",
        "pause": "contrapresión: esperan {queued} de respuestas (por encima del umbral alto, "
                 "{high}); dejamos de leer",
        "resume": "las respuestas salieron; volvemos a leer",
        "timeout": "tiempo agotado: {why}",
        "linger": "cerramos nuestra mitad tras la última respuesta; leemos hasta que el otro "
                  "extremo cierre",
        "close": "lo quitamos del selector y luego lo cerramos: {reason}",
    },
}

#: Words the sentences are built from, per language.
WORDS: dict[str, dict[str, str]] = {
    "en": {"read": "read", "write": "write", "none": "nothing", "ok": "ok",
           "readable": "readable", "writable": "writable", "waker": "the waker",
           "listener": "the listener", "worker pipe": "a worker's pipe",
           "error": "error", "root": "(the root)",
           "why_write_on": "output is still queued, so we also wait for writability",
           "why_write_only": "output is queued and we are not reading, so we wait for "
                             "writability alone",
           "why_write_off": "the queue drained, so we stop waiting for writability",
           "why_read_off": "we stop reading for now",
           "why_read_on": "we read again",
           "why_registered": "registered with the selector",
           "why_other": "interest changed"},
    "es": {"read": "lectura", "write": "escritura", "none": "nada", "ok": "bien",
           "readable": "legible", "writable": "admite escritura", "waker": "el despertador",
           "listener": "el socket de escucha", "worker pipe": "la tubería de un worker",
           "error": "error", "root": "(la raíz)",
           "why_write_on": "aún queda salida en cola, así que también esperamos poder escribir",
           "why_write_only": "hay salida en cola y no estamos leyendo, así que solo "
                             "esperamos poder escribir",
           "why_write_off": "la cola se vació, así que dejamos de esperar poder escribir",
           "why_read_off": "dejamos de leer por ahora",
           "why_read_on": "volvemos a leer",
           "why_registered": "registrado en el selector",
           "why_other": "cambió el interés"},
}

#: Spanish for the reasons the server gives when it closes or times out; the English
#: narration uses them as they are. An unknown reason (an error message from the
#: operating system, say) is shown untranslated.
REASONS_ES = {
    "peer finished sending": "el otro extremo terminó de enviar",
    "reset by peer": "el otro extremo abortó la conexión (RST)",
    "broken pipe": "tubería rota: el otro extremo ya no lee",
    "closed": "cerrado",
    "closed after the linger time": "cerrado al acabar la espera final",
    "server stopping": "el servidor se detiene",
    "too many clients": "demasiados clientes",
    "unauthorized": "no autorizado",
    "internal error": "error interno",
    "output buffer over its cap": "el búfer de salida superó su límite",
    "peer closed mid-upload": "el otro extremo cerró a mitad de una subida",
    "peer closed mid-request": "el otro extremo cerró a mitad de una petición",
    "TLS handshake failed": "falló la negociación TLS",
    "TLS handshake timed out": "la negociación TLS tardó demasiado",
    "TLS handshake": "negociación TLS",
    "the native protocol": "el protocolo nativo",
    "neither muxserver nor HTTP": "ni muxserver ni HTTP",
    "the request header did not arrive in time": "la cabecera no llegó a tiempo",
    "the transfer stalled": "la transferencia se detuvo",
    "the connection was idle too long": "la conexión estuvo inactiva demasiado tiempo",
}

#: Counted words, (one, many), per language: "1 byte", "2 bytes", "2 conectados".
PLURALS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {"byte": ("byte", "bytes"), "connected": ("connected", "connected"),
           "client": ("client", "clients")},
    "es": {"byte": ("byte", "bytes"), "connected": ("conectado", "conectados"),
           "client": ("cliente", "clientes")},
}


def group_digits(count: int, lang: str = "en") -> str:
    """200,000 in English, 200.000 in Spanish (the demos and the checkers use it too)."""
    return f"{count:,}" if lang != "es" else f"{count:,}".replace(",", ".")


#: The fields that count bytes: shown as "1 byte", "2 bytes".
COUNTS = ("n", "offered", "taken", "queued", "size", "high")
#: Numbers shown bare ("body 0 of 200,000"), grouped by language all the same.
PLAIN_NUMBERS = ("length", "done", "have", "need")

HEX_BYTES = 48  # a dump shows at most this many bytes (three lines of 16)


def default_language() -> str:
    """Spanish when the locale says so (LC_ALL, LC_MESSAGES, LANG), else English."""
    for variable in ("LC_ALL", "LC_MESSAGES", "LANG"):
        value = os.environ.get(variable)
        if value:
            return "es" if value.lower().startswith("es") else "en"
    code = locale.getlocale()[0] or ""
    return "es" if code.lower().startswith("es") else "en"


def hexdump(data: bytes | memoryview, limit: int = HEX_BYTES,
            total: int | None = None) -> list[str]:
    """Beej-style lines: offset, 16 bytes in hex, and the printable characters;
    ``total``: how many bytes there were (``data`` may hold only the first ones)."""
    shown = bytes(data[:limit])
    lines = []
    for offset in range(0, len(shown), 16):
        chunk = shown[offset:offset + 16]
        hexes = " ".join(f"{b:02x}" for b in chunk)
        text = "".join(chr(b) if 32 <= b < 127 else "." for b in chunk)
        lines.append(f"{offset:04x}  {hexes:<47}  |{text}|")
    total = len(data) if total is None else total
    if total > limit:
        lines.append(f"      ... {total - limit} more bytes")
    return lines


class Narrator(Recorder):
    """Turns trace events into sentences and hands them to ``write``."""

    def __init__(self, lang: str = "en", write: Callable[[str], None] | None = None,
                 show_bytes: bool = False) -> None:
        if lang not in LANGUAGES:
            raise ValueError(f"unknown language {lang!r}; choose from {', '.join(LANGUAGES)}")
        self.lang = lang
        self.sentences = SENTENCES[lang]
        self.words = WORDS[lang]
        self.write = write or _print_line
        self.show_bytes = show_bytes
        self.started = time.monotonic()
        super().__init__()

    def event(self, kind: str, conn: int | None, **fields: Any) -> None:
        if self.broken:
            return
        try:
            self.write(self.sentence(kind, conn, fields))
            if self.show_bytes and fields.get("data") is not None and len(fields["data"]):
                total = fields.get("taken", fields.get("n"))
                for line in hexdump(fields["data"], total=total):
                    self.write("      " + line)
        except OSError as exc:
            self.lost(exc)

    def sentence(self, kind: str, conn: int | None, fields: dict[str, Any]) -> str:
        kind, fields = self._refine(kind, fields)
        text = self.sentences[kind].format(**fields)
        where = f"[#{conn}] " if conn is not None else "[loop] "
        return where + text

    def _refine(self, kind: str, fields: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """Pick the precise sentence and fill in the words it needs."""
        fields = dict(fields)
        if kind == "send":
            if fields["taken"] == 0:
                kind = "send_blocked"
            elif fields["taken"] == fields["offered"]:
                kind = "send_all"
        elif kind == "wakeup" and fields["ready"] == 0:
            kind = "timer_wakeup"
        elif kind == "wakeup":
            fields["sockets"] = ", ".join(self._ready(label, mask)
                                          for label, mask in fields.get("sockets", ()))
        elif kind == "interest":
            fields["why"] = self._interest_reason(fields["old"], fields["new"])
            fields["old"], fields["new"] = self.mask(fields["old"]), self.mask(fields["new"])
        elif kind == "reply":
            fields["id"] = "null" if fields["id"] is None else fields["id"]
            fields["outcome"] = (self.words["ok"] if fields["code"] is None
                                 else f"{self.words['error']} {fields['code']}")
        if self.lang == "es":
            for key in ("reason", "why", "error", "speaks"):
                if key in fields and kind != "interest":
                    fields[key] = REASONS_ES.get(fields[key], fields[key])
        if kind in ("accept", "refuse"):  # "1 connected", "2 conectados", "1 cliente"
            fields["clients"] = self.count(fields["clients"],
                                           "connected" if kind == "accept" else "client")
        for key in COUNTS:
            if isinstance(fields.get(key), int):
                fields[key] = self.count(fields[key], "byte")
        for key in PLAIN_NUMBERS:  # ("body 0 of 200,000": grouped as the language writes it)
            if isinstance(fields.get(key), int):
                fields[key] = group_digits(fields[key], self.lang)
        if "name" in fields:
            fields["name"] = repr(printable(fields["name"])) if fields["name"] else (
                self.words["root"])
        return kind, fields

    def count(self, count: int, word: str) -> str:
        """"1 byte", "65,536 bytes" (es: "65.536 bytes"), "2 conectados"."""
        one, many = PLURALS[self.lang][word]
        return f"{group_digits(count, self.lang)} {one if count == 1 else many}"

    def _ready(self, label: str, mask: int) -> str:
        """"#3 readable", "the listener readable", "#2 readable+writable"."""
        states = [self.words[w] for bit, w in ((1, "readable"), (2, "writable")) if mask & bit]
        return f"{self.words.get(label, label)} {'+'.join(states)}"

    def mask(self, events: int) -> str:
        names = [self.words[word] for bit, word in ((1, "read"), (2, "write")) if events & bit]
        return "+".join(names) or self.words["none"]

    def _interest_reason(self, old: int, new: int) -> str:
        if old == 0:
            return self.words["why_registered"]
        if new & 2 and not old & 2:
            return self.words["why_write_on" if new & 1 else "why_write_only"]
        if old & 2 and not new & 2:
            return self.words["why_write_off"]
        if old & 1 and not new & 1:
            return self.words["why_read_off"]
        if new & 1 and not old & 1:
            return self.words["why_read_on"]
        return self.words["why_other"]


class JsonTrace(Recorder):
    """--trace-json FILE: every event as one JSON object per line.

    ``{"t": 0.0123, "kind": "recv", "conn": 1, "n": 57, "data": "894d5558..."}``: the
    same events the narration turns into sentences, for programs to read
    (``scripts/trace_diagram.py`` draws them as a sequence diagram). Bytes are written
    in hex (``"data_len"`` says how many there were); of more than ``2 * EDGE_BYTES``,
    the first and the last ``EDGE_BYTES`` (``"data_tail"``): a body's middle says
    nothing, but its end may hold the start of the next frame.
    """

    EDGE_BYTES = 1024

    def __init__(self, file: TextIO) -> None:
        self.file = file
        self.started = time.monotonic()
        super().__init__()

    def event(self, kind: str, conn: int | None, **fields: Any) -> None:
        if self.broken:
            return
        record: dict[str, Any] = {"t": round(time.monotonic() - self.started, 6),
                                  "kind": kind, "conn": conn}
        for key, value in fields.items():
            if isinstance(value, (bytes, bytearray, memoryview)):
                edge = self.EDGE_BYTES
                record[key + "_len"] = len(value)
                if len(value) <= 2 * edge:
                    record[key] = bytes(value).hex()
                else:
                    record[key] = bytes(value[:edge]).hex()
                    record[key + "_tail"] = bytes(value[-edge:]).hex()
            else:
                record[key] = value
        try:
            self.file.write(json.dumps(record, default=str) + "\n")  # (line-buffered file)
        except OSError as exc:
            self.lost(exc)


def _print_line(line: str) -> None:
    print(line, file=sys.stdout, flush=True)


# ------------------------------------------------------------- several watchers


class Fanout(Observer):
    """Every event to each of several observers, in order (the narration, then the
    JSON trace, then --step's prompt). Its methods are made below, one per event."""

    def __init__(self, *observers: Observer) -> None:
        self.observers = observers


def _forwarder(name: str) -> Any:
    def forward(self: Fanout, *args: Any, **kwargs: Any) -> None:
        for observer in self.observers:
            getattr(observer, name)(*args, **kwargs)
    forward.__name__ = name
    return forward


for _name, _value in list(vars(Observer).items()):
    if callable(_value) and not _name.startswith("_"):
        setattr(Fanout, _name, _forwarder(_name))


def watching(*observers: Observer | None) -> Observer:
    """One observer for the ones given (None: not there): NOBODY, one, or a Fanout."""
    present = [observer for observer in observers if observer is not None]
    if not present:
        return NOBODY
    return present[0] if len(present) == 1 else Fanout(*present)
