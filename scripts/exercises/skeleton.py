"""Three exercises: the parts of a non-blocking server that tutorials get wrong.

Copy this file, fill in the three places marked EXERCISE, and check your answer:

    cp scripts/exercises/skeleton.py my_answer.py
    python scripts/exercises/check.py my_answer.py

The checker feeds your decoder every recv size from 1 to 4096 bytes, runs your flush
against a socket that takes a few KiB at a time, asks your interest function about
every state a connection can be in, and then runs a whole server made of your three
parts (scripts/exercises/server.py) against the stage checker's clients. When an answer
is wrong it names the pitfall it hit. docs/EXERCISES.md explains each exercise.
(es) Tres ejercicios: copia este archivo, rellena los tres huecos marcados EXERCISE y
comprueba tu respuesta con scripts/exercises/check.py. docs/EXERCISES.es.md los explica.
"""

from __future__ import annotations

import json  # noqa: F401  (you will need these)
import selectors  # noqa: F401
import socket
import struct

PREFIX = struct.Struct("!4sBBH")   # magic b"\x89MUX", version 1, flags 0, header length
MAGIC = b"\x89MUX"


class Decoder:
    """EXERCISE 1: bytes in, whole requests out. It never touches a socket."""

    def __init__(self) -> None:
        self.buffer = bytearray()

    def feed(self, data: bytes) -> list[tuple[dict, bytes]]:
        """Take the bytes of one recv (1 byte, or several requests and a piece of the
        next) and return every request completed by them, in order, as (header, body):
        ``header`` is the JSON object, ``body`` its ``length`` bytes (0 when absent).
        Keep everything else for the next call. Raise ValueError for bytes that are not
        a frame (a wrong magic number)."""
        raise NotImplementedError("exercise 1: Decoder.feed")


def flush(sock: socket.socket, outbox: bytearray) -> None:
    """EXERCISE 2: send what the non-blocking ``sock`` takes now from the front of
    ``outbox``, and remove exactly that from ``outbox``. Return when ``outbox`` is
    empty or the socket is full (the loop will wait for EVENT_WRITE)."""
    raise NotImplementedError("exercise 2: flush")


def interest(outbox_bytes: int, paused: bool, peer_done: bool) -> int:
    """EXERCISE 3: what to ask select() for, as selectors.EVENT_READ/EVENT_WRITE bits.
    ``outbox_bytes``: bytes waiting to be sent; ``paused``: too much is owed, take no
    new requests; ``peer_done``: recv returned b"" (the peer finished sending)."""
    raise NotImplementedError("exercise 3: interest")
