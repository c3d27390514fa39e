"""The client library: pipelined requests over one connection, used by the CLI and the tests.

    with Client("127.0.0.1", 9009) as client:
        results = client.run([PutFile("a.txt", "a.txt"), GetFile("b.txt", "out/b.txt")])

Split by job: ``operations.py`` (each request and what its reply means for local
files), ``connection.py`` (the pipelining connection and its small event loop),
``local.py`` (local files and their remembered hashes). It shares with the server only
what is truly common (framing, names, digests, atomic publish), never its storage.
"""

from .connection import DEFAULT_PORT, Client, wait_for_server
from .local import LOCAL_HASHES, file_digest, remember_digest, remembered_digest
from .operations import (
    Auth,
    ClientError,
    Finished,
    GetFile,
    ListDir,
    MakeDir,
    Move,
    Operation,
    Partial,
    Progress,
    PutFile,
    Remove,
    Result,
    Share,
    Stat,
)

__all__ = ["DEFAULT_PORT", "LOCAL_HASHES", "Auth", "Client", "ClientError", "Finished",
           "GetFile", "ListDir", "MakeDir", "Move", "Operation", "Partial", "Progress",
           "PutFile", "Remove", "Result", "Share", "Stat", "file_digest", "remember_digest",
           "remembered_digest", "wait_for_server"]
