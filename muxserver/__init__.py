"""muxserver: a single-threaded, non-blocking file server.

Where to start reading:
- ``protocol.py``: the wire format and the sans-I/O state machine that decodes it;
- ``loop.py``: the selector event loop (interest changes, timers, deferred closes);
- ``channel.py``: one client socket, its buffers and its backpressure;
- ``session.py``: the request lifecycle both protocols share (auth, timeouts, transfers);
- ``native.py`` and ``http.py``: the two wire formats, translated into that lifecycle;
- ``storage/``: the served root and its rules (safe names, atomic commits).
"""

__version__ = "0.1.0"
