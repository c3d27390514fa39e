"""The server's log lines in Spanish, for ``--lang es``.

Log calls stay as they are (English ``%``-templates with their arguments, which is
what operators grep for); a filter on the "muxserver" logger swaps each known template
for its Spanish twin, and the arguments that are reasons or words for their Spanish
(``trace.REASONS_ES``). A template with no twin is logged in English: a test checks
that every template in the code has one.
"""

from __future__ import annotations

import logging

from .trace import REASONS_ES
from .turnlog import Lines

TEMPLATES = {
    "%s stat %s: %s": "%s stat %s: %s",
    "%s %sshared %s until %s (link %s)": "%s %scompartió %s hasta %s (enlace %s)",
    "%s %sshared %s as a drop box until %s (link %s)":
        "%s %scompartió %s como buzón de subida hasta %s (enlace %s)",
    "%s %srevoked the link %s": "%s %srevocó el enlace %s",
    "cannot make the server secret %s (%s): sessions and share links end when the server "
    "stops": "no se puede crear el secreto del servidor %s (%s): las sesiones y los enlaces "
             "compartidos terminan cuando se detenga el servidor",
    "the user file %s is not usable (%s): keeping the accounts read before":
        "el fichero de usuarios %s no se puede usar (%s): se mantienen las cuentas leídas antes",
    "the user file %s was read again: %d user(s), %d token(s)":
        "el fichero de usuarios %s se leyó de nuevo: %d usuario(s), %d token(s)",
    "cannot read the share links %s: %s": "no se pueden leer los enlaces compartidos %s: %s",
    "%s: TLS handshake failed: %s": "%s: falló la negociación TLS: %s",
    "%s: output buffer over %d bytes, closing":
        "%s: el búfer de salida pasa de %d bytes; se cierra la conexión",
    "%s: TLS handshake timed out": "%s: la negociación TLS tardó demasiado",
    "%s: internal error, closing the connection": "%s: error interno; se cierra la conexión",
    "%s HTTP %s archive of %s cut short: %s":
        "%s HTTP: el archivo comprimido %s de %s quedó a medias: %s",
    "%s HTTP archive: left out %s: %s": "%s HTTP: el archivo comprimido deja fuera %s: %s",
    "%s HTTP %s archive of %s: left out %d entries whose names are not allowed here, "
    "first %s": "%s HTTP: el archivo comprimido %s de %s deja fuera %d entradas cuyos "
                "nombres no se admiten aquí, la primera %s",
    "%s %slisting of %s: left out %d entries whose names are not allowed here, first %s":
        "%s %slistado de %s: deja fuera %d entradas cuyos nombres no se admiten aquí, "
        "la primera %s",
    "%s HTTP listing of %s incomplete: %s": "%s HTTP: el listado de %s quedó incompleto: %s",
    "%s HTTP PROPFIND of %s incomplete: %s": "%s HTTP: el PROPFIND de %s quedó incompleto: %s",
    "%s disconnected mid-request": "%s se desconectó a mitad de una petición",
    "%s bad HTTP: %s": "%s HTTP incorrecto: %s",
    "error while closing %r: %s": "error al cerrar %r: %s",
    "the trace could not be written (%s); it stops here":
        "no se pudo escribir la traza (%s); se detiene aquí",
    "unexpected error in the event loop": "error inesperado en el bucle de eventos",
    "error while handling an earlier error": "error al tratar un error anterior",
    "unexpected error while reading the loop's waker":
        "error inesperado al leer el despertador del bucle",
    "%s disconnected %s": "%s se desconectó %s",
    "cleaned up after an interrupted server: removed %d temporary file(s), kept %d "
    "resumable upload(s)": "limpieza tras un servidor interrumpido: %d archivo(s) temporal(es) "
                           "borrado(s), %d subida(s) reanudable(s) conservada(s)",
    "removed %d interrupted upload(s) untouched for %s":
        "borradas %d subida(s) interrumpida(s) sin tocar desde hace %s",
    "second stop signal: stopping now": "segunda señal de parada: nos detenemos ya",
    "stopping: no new connections; waiting up to %.0f s for %d transfer(s) "
    "(Ctrl-C again to stop now)": "deteniéndonos: no aceptamos conexiones nuevas; esperamos "
                                  "hasta %.0f s a %d transferencia(s) (Ctrl-C otra vez para "
                                  "parar ya)",
    "%s connected": "%s conectado",
    "%s refused: too many clients (%d)": "%s rechazado: demasiados clientes (%d)",
    "%s closed (%s)": "%s cerrado (%s)",
    "accept failed: %s": "accept falló: %s",
    "accepting connections again": "volvemos a aceptar conexiones",
    "accept failed: %s; pausing new connections for %.1f s":
        "accept falló: %s; dejamos de aceptar conexiones durante %.1f s",
    "unexpected error while accepting connections": "error inesperado al aceptar conexiones",
    "%s %s%s (%d of %d)": "%s %s%s (%d de %d)",
    "%s %smade the directory %s": "%s %screó el directorio %s",
    "%s %sremoved %s (%d %s)": "%s %sborró %s (%d %s)",
    "%s %smoved %s to %s": "%s %smovió %s a %s",
    "%s %scopied %s to %s": "%s %scopió %s a %s",
    "%s %slocked %s (%s, %s s)": "%s %sbloqueó %s (%s, %s s)",
    "%s %sunlocked %s": "%s %sdesbloqueó %s",
    "%s %sthe locks of %s stay until they time out: %s":
        "%s %slos bloqueos de %s siguen hasta que venzan: %s",
    "%s %smade the empty file %s": "%s %screó el archivo vacío %s",
    "%s %s%s %s: %d bytes%s ok": "%s %s%s %s: %d bytes%s bien",
    "%s %s%s%s refused: %s (%s)": "%s %s%s%s rechazado: %s (%s)",
    "%s %sresumed %s at %s": "%s %sreanudó %s en %s",
    "%s kept %s of %s for resume": "%s: se guardan %s de %s para reanudar",
    "%s timed out: %s": "%s: tiempo agotado: %s",
    "%s speaks neither muxserver nor HTTP": "%s no habla ni muxserver ni HTTP",
    "%s timed out before its first request": "%s: tiempo agotado antes de su primera petición",
    "another muxserver serves %s; leaving its temporary files alone":
        "otro muxserver sirve %s; no tocamos sus archivos temporales",
    "removed %d bytes kept for a resume in %s: %s":
        "borrados %d bytes guardados para reanudar en %s: %s",
    "worker %d: unreadable report: %s": "proceso trabajador %d: informe ilegible: %s",
    "worker %d (pid %d) exited unexpectedly (%s); the others go on, and it starts again "
    "after %.0f s":
        "el proceso trabajador %d (pid %d) terminó de forma inesperada (%s); los demás siguen, y "
        "vuelve a arrancar dentro de %.0f s",
    "worker %d is serving again (pid %d)": "el proceso trabajador %d vuelve a servir (pid %d)",
    "worker %d could not be started again: %s":
        "no se pudo volver a arrancar el proceso trabajador %d: %s",
}

#: Words passed as arguments (not reasons) that have a Spanish form.
WORDS = {"entry": "entrada", "entries": "entradas", "mid-upload": "a mitad de una subida",
         "mid-request": "a mitad de una petición",
         "no exit status yet": "aún sin estado de salida"}

#: Arguments made of a phrase and a name or number (how a worker ended: workers.py).
PHRASES = (("killed by signal ", "terminado por la señal "), ("killed by ", "terminado por "),
           ("exit status ", "estado de salida "))


class SpanishLog(logging.Filter):
    """Rewrites each record's template and arguments; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, Lines):  # a loop turn's lines (turnlog.py): each one
            record.msg = record.msg.translated(translate)
        elif isinstance(record.msg, str) and isinstance(record.args, tuple):
            record.msg, record.args = translate(record.msg, record.args)
        return True


def translate(template: str, args: tuple) -> tuple[str, tuple]:
    """A line's template and arguments in Spanish (as they are, if it has no twin)."""
    spanish = TEMPLATES.get(template)
    if spanish is None:
        return template, args
    return spanish, tuple(_translate(arg) for arg in args)


def _translate(arg: object) -> object:
    if not isinstance(arg, str):
        return arg
    for english, spanish in PHRASES:
        if arg.startswith(english):
            return spanish + arg[len(english):]
    return REASONS_ES.get(arg, WORDS.get(arg, arg))


def install(logger: logging.Logger) -> None:
    logger.addFilter(SpanishLog())
