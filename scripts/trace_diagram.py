#!/usr/bin/env python3
"""Turn a --trace-json file into a sequence diagram: a lane per client, one for the loop.

    python -m muxserver serve --trace-json trace.jsonl      # then put and get something
    python scripts/trace_diagram.py trace.jsonl -o trace.html --mermaid trace.mmd

Every recv and send is an arrow between a client's lane and the server's; the bytes
each recv carried are taken apart as the frame format says (docs/PROTOCOL.md, section
2): the prefix (magic ``89 4d 55 58``, version, flags, header length), the JSON
header, the body, and the bytes left over that already belong to the next frame. The
HTML page holds the diagram as an SVG (no script, nothing fetched); the Mermaid text
is the same diagram for a Markdown file or mermaid.live.
(es) Convierte un archivo de --trace-json en un diagrama de secuencia: un carril por
cliente y uno para el bucle; cada recv se descompone en prefijo, cabecera, cuerpo y
sobrante.
"""

from __future__ import annotations

import argparse
import html
import json
import struct
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

PREFIX = struct.Struct("!4sBBH")


@dataclass
class Step:
    """One row of the diagram: an arrow between two lanes, or a note on one."""
    source: str
    target: str          # == source for a note
    text: str
    details: list[str] = field(default_factory=list)
    dashed: bool = False
    mark: str = ""       # "fin", "close" or "reset": an end of a connection, not data


@dataclass
class Stream:
    """A connection's incoming bytes, taken apart frame by frame across recvs."""
    part: str = "prefix"   # what the next byte belongs to: prefix, header or body
    need: int = PREFIX.size
    held: bytearray = field(default_factory=bytearray)
    frames: int = 0
    lost: bool = False     # bytes were not recorded: follow the counts only
    native: bool = True
    call: str = "recv"     # what moves these bytes: recv (a request), send (a reply)

    def take(self, head: bytes, count: int, tail: bytes = b"") -> list[str]:
        """What the ``count`` bytes of one recv were. The trace recorded ``head`` (the
        first bytes) and ``tail`` (the last ones) of them; a body's middle is not needed."""
        notes, pos, started_in = [], 0, self.frames
        while pos < count:
            n = min(self.need, count - pos)
            if pos + n <= len(head):
                chunk = head[pos:pos + n]
            elif pos >= count - len(tail):
                start = pos - (count - len(tail))
                chunk = tail[start:start + n]
            else:
                chunk = b""
            if self.part != "body" and len(chunk) < n:
                self.lost = True
            if self.lost and self.part != "body":
                notes.append(f"{count - pos} more bytes (not recorded)")
                break
            # a frame ended earlier in this same recv: these bytes are the next one's
            label = "leftover, next frame: " if self.frames > started_in and self.part == \
                "prefix" else ""
            self.held += chunk if self.part != "body" else b""
            self.need -= n
            pos += n
            if self.part == "prefix":
                if self.need:
                    notes.append(f"{label}prefix, {8 - self.need} of 8 bytes: {chunk.hex(' ')}")
                    continue
                magic, version, flags, length = PREFIX.unpack(bytes(self.held))
                if magic != b"\x89MUX":
                    self.native = False
                    line = (bytes(self.held) + head[pos:pos + 200]).split(b"\r\n")[0]
                    text = line.decode(errors="replace")
                    notes.append(f"HTTP, not a muxserver frame: {text}" if b" HTTP/1." in line
                                 else f"an HTTP response: {text}" if line.startswith(b"HTTP/1.")
                                 else f"not a muxserver frame: {bytes(self.held)!r}")
                    break
                size = f"{length >> 8:02x} {length & 255:02x} = {length}"
                notes.append(f"{label}prefix: magic {magic.hex(' ')} · version {version:02x} · "
                             f"flags {flags:02x} · header length {size}")
                self.part, self.need, self.held = "header", length, bytearray()
            elif self.part == "header":
                if self.need:
                    notes.append(f"header, part: {bytes(chunk).decode(errors='replace')}")
                    continue
                text = bytes(self.held).decode(errors="replace")
                notes.append(f"header: {shorten(text, 240)}")
                try:
                    body = int(json.loads(text).get("length", 0))
                except (ValueError, AttributeError):
                    body = 0
                self.held = bytearray()
                if body:
                    self.part, self.need = "body", body
                else:
                    self.part, self.need, self.frames = "prefix", PREFIX.size, self.frames + 1
            else:
                notes.append(f"body: {n:,} bytes" + (f", {self.need:,} to come"
                                                     if self.need else " (complete)"))
                if not self.need:
                    self.part, self.need, self.frames = "prefix", PREFIX.size, self.frames + 1
        if self.native and not self.lost and (self.part != "prefix"
                                              or self.need < PREFIX.size):
            notes.append(f"(the rest of this frame comes in a later {self.call})")
        return notes


def shorten(text: str, width: int) -> str:
    return text if len(text) <= width else text[:width - 1] + "…"


def build(records: list[dict]) -> tuple[list[str], list[Step]]:
    """(lanes, steps) of the diagram. Bytes are taken apart the same way both ways: what
    a client sent (its recvs) and what the server answered (its sends)."""
    lanes, steps = ["server"], []
    incoming: dict[int, Stream] = {}
    outgoing: dict[int, Stream] = {}
    peers: dict[int, str] = {}

    def lane(conn: int) -> str:
        name = f"#{conn}"
        if name not in lanes:
            lanes.append(name)
        return name

    for r in records:
        kind, conn = r["kind"], r.get("conn")
        if kind == "accept":
            peers[conn] = r.get("peer", "")
            steps.append(Step(lane(conn), "server", "connect", [f"accept(): {peers[conn]}"]))
        elif kind == "wakeup" and r.get("sockets"):
            ready = ", ".join(f"{label} {'R' if m & 1 else ''}{'W' if m & 2 else ''}"
                              for label, m in r["sockets"])
            steps.append(Step("server", "server", f"turn {r.get('count', '?')}: select() → "
                                                  f"{ready}"))
        elif kind == "recv":
            stream = incoming.setdefault(conn, Stream())
            details = stream.take(bytes.fromhex(r.get("data", "")), r["n"],
                                  bytes.fromhex(r.get("data_tail", ""))) if stream.native else []
            steps.append(Step(lane(conn), "server", f"recv {r['n']:,} B", details))
        elif kind == "splice":
            stream = incoming.setdefault(conn, Stream())
            details = stream.take(b"", r["n"])
            steps.append(Step(lane(conn), "server", f"splice {r['n']:,} B → file", details))
        elif kind == "eof":
            steps.append(Step(lane(conn), "server", "recv returned 0",
                              ["the client finished sending (a half close, or a close)"],
                              mark="fin"))
        elif kind == "io_error" and "reset" in str(r.get("error", "")):
            steps.append(Step(lane(conn), "server", f"{r.get('call')} failed",
                              [str(r.get("error"))], mark="reset"))
        elif kind == "reply":
            outcome = "ok" if r.get("code") is None else r["code"]
            steps.append(Step("server", "server", f"reply to id {r.get('id')} queued: "
                              f"{outcome}, {r.get('size', 0):,} B"))
        elif kind in ("send", "sendfile") and r.get("taken"):
            stream = outgoing.setdefault(conn, Stream(call="send"))
            details = (stream.take(bytes.fromhex(r.get("data", "")), r["taken"],
                                   bytes.fromhex(r.get("data_tail", "")))
                       if stream.native else [])
            short = "" if r["taken"] == r["offered"] else f" of {r['offered']:,} offered"
            steps.append(Step("server", lane(conn), f"{kind} {r['taken']:,} B{short}",
                              details, dashed=True))
        elif kind == "http_request":
            steps.append(Step("server", "server", f"#{conn}: HTTP {r.get('method')} "
                                                  f"{r.get('target')}"))
        elif kind == "http_response":
            steps.append(Step("server", "server", f"#{conn}: HTTP {r.get('status')} queued, "
                                                  f"a body of {r.get('size', 0):,} B"))
        elif kind == "header":
            op = r.get("op")
            name = "" if op == "trailer" else f" {r.get('name') or '/'}"  # (a digest, no name)
            steps.append(Step("server", "server", f"#{conn}: {op}{name} (id {r.get('id')})"))
        elif kind == "close":
            steps.append(Step("server", lane(conn), "close", [r.get("reason", "")],
                              dashed=True, mark="close"))
    return lanes, steps


def mermaid(lanes: list[str], steps: list[Step]) -> str:
    def clean(text: str) -> str:  # Mermaid reads # and ; as syntax: entity codes
        return text.translate({ord("#"): "#35;", ord(";"): "#59;"})

    out = ["sequenceDiagram"]
    for name in lanes:
        alias = "S" if name == "server" else f"C{name[1:]}"
        title = "server loop" if name == "server" else f"client {name}"
        out.append(f"    participant {alias} as {clean(title)}")
    alias = {name: "S" if name == "server" else f"C{name[1:]}" for name in lanes}
    for step in steps:
        text = clean(step.text)
        if step.source == step.target:
            out.append(f"    Note over {alias[step.source]}: {text}")
            continue
        # A connection's end is its own mark: a cross for a close or a reset, an open
        # arrowhead for a FIN (the client finished sending; the connection may live on).
        arrow = {"close": "--x", "reset": "-x", "fin": "-)"}.get(
            step.mark, "-->>" if step.dashed else "->>")
        out.append(f"    {alias[step.source]}{arrow}{alias[step.target]}: {text}")
        if step.details:
            side = "right of" if step.source != "server" else "left of"
            where = step.source if step.source != "server" else step.target
            out.append(f"    Note {side} {alias[where]}: "
                       + "<br/>".join(clean(line) for d in step.details for line in wrap(d)))
    return "\n".join(out) + "\n"


WRAP = 78  # characters of a note per line: a long header or reason wraps, never runs off
CHAR_W = 7.3  # px per character of the 12 px monospace font (for the width of the page)
MARKS = {"fin": ("#2a6fb0", "FIN"), "close": ("#8b1a1a", "✕"), "reset": ("#c0392b", "RST ✕")}


def wrap(text: str) -> list[str]:
    return textwrap.wrap(text, WRAP, break_long_words=True, break_on_hyphens=False) or [""]


def svg(lanes: list[str], steps: list[Step]) -> str:
    """The diagram drawn directly: lanes as columns, steps as rows, details beneath."""
    col, left, line_h, top = 330, 40, 16, 60
    xs = {name: left + 150 + i * col for i, name in enumerate(lanes)}
    rows, y, right = [], top + 20, left + 150 + (len(lanes) - 1) * col + 200
    for step in steps:
        lines = [line for detail in step.details for line in wrap(detail)]
        rows.append((y, step, lines))
        y += 30 + line_h * len(lines)
        x = max(xs[step.source], xs[step.target]) + 12
        right = max(right, x + int(CHAR_W * max((len(line) for line in lines), default=0)),
                    min(xs[step.source], xs[step.target]) + 10 + int(CHAR_W * len(step.text)))
    width, height = right + 40, y + 20
    e = html.escape
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
             f'font-family="ui-monospace, monospace" font-size="12">',
             '<defs><marker id="a" markerWidth="10" markerHeight="8" refX="9" refY="4" '
             'orient="auto"><path d="M0,0 L10,4 L0,8 z" fill="#333"/></marker>'
             '<marker id="f" markerWidth="10" markerHeight="8" refX="9" refY="4" '
             'orient="auto"><path d="M0,0 L10,4 L0,8" fill="none" stroke="#2a6fb0"/>'
             '</marker></defs>']
    for name, x in xs.items():
        title = "server loop" if name == "server" else f"client {name}"
        parts.append(f'<rect x="{x - 70}" y="10" width="140" height="28" rx="6" '
                     f'fill="#e8eef8" stroke="#5577aa"/><text x="{x}" y="29" '
                     f'text-anchor="middle" font-weight="bold">{e(title)}</text>'
                     f'<line x1="{x}" y1="38" x2="{x}" y2="{height - 10}" stroke="#bbb" '
                     f'stroke-dasharray="4 4"/>')
    for y, step, lines in rows:
        x1, x2 = xs[step.source], xs[step.target]
        if x1 == x2:
            weight = ' font-weight="bold"' if step.text.startswith("turn ") else ""
            parts.append(f'<text x="{x1 + 8}" y="{y}" fill="#666"{weight}>{e(step.text)}</text>')
        elif step.mark:
            color, label = MARKS[step.mark]
            head = ' marker-end="url(#f)"' if step.mark == "fin" else ""
            parts.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="{color}" '
                         f'stroke-width="2" stroke-dasharray="2 3"{head}/>')
            if step.mark != "fin":  # a cross where the connection ends
                parts.append(f'<text x="{x2}" y="{y + 5}" text-anchor="middle" '
                             f'font-size="16" fill="{color}">✕</text>')
            parts.append(f'<text x="{min(x1, x2) + 10}" y="{y - 5}" fill="{color}" '
                         f'font-weight="bold">{e(label.replace(" ✕", ""))} · {e(step.text)}'
                         '</text>')
        else:
            dash = ' stroke-dasharray="6 3"' if step.dashed else ""
            parts.append(f'<line x1="{x1}" y1="{y}" x2="{x2}" y2="{y}" stroke="#333"{dash} '
                         f'marker-end="url(#a)"/><text x="{min(x1, x2) + 10}" y="{y - 5}">'
                         f'{e(step.text)}</text>')
        for i, line in enumerate(lines):
            parts.append(f'<text x="{max(x1, x2) + 12}" y="{y + 14 + i * line_h}" '
                         f'fill="#1d5c2e">{e(line)}</text>')
    parts.append("</svg>")
    return "".join(parts)


def page(lanes: list[str], steps: list[Step], source: str) -> str:
    return ("<!doctype html><html lang=en><meta charset=utf-8>"
            f"<title>muxserver trace: {html.escape(source)}</title>"
            "<style>body{font-family:system-ui,sans-serif;margin:1.5em}</style>"
            f"<h1>muxserver trace: {html.escape(source)}</h1>"
            "<p>Solid arrows: bytes the server received. Dashed: bytes it sent. Green: "
            "what those bytes were, as the frame format reads them (requests and replies "
            "alike). Grey: what the loop did in between, each turn numbered from its "
            "select(). Dotted blue: a FIN (the client finished sending). A cross: the "
            "connection ended, closed by the server (dark red) or reset (red).</p>" + svg(lanes, steps) + "</html>\n")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog=__doc__)
    p.add_argument("trace", help="a file written by --trace-json")
    p.add_argument("-o", "--output", help="the HTML page (default: TRACE with .html)")
    p.add_argument("--mermaid", metavar="FILE", help="also write the Mermaid text here "
                                                      "('-': standard output)")
    args = p.parse_args()
    try:
        lines = Path(args.trace).read_text(encoding="utf-8").splitlines()
        records = [json.loads(line) for line in lines if line.strip()]
    except (OSError, ValueError) as exc:
        print(f"trace_diagram: cannot read {args.trace}: {exc}", file=sys.stderr)
        return 1
    lanes, steps = build(records)
    output = Path(args.output or Path(args.trace).with_suffix(".html"))
    output.write_text(page(lanes, steps, Path(args.trace).name), encoding="utf-8")
    text = mermaid(lanes, steps)
    if args.mermaid == "-":
        sys.stdout.write(text)
    elif args.mermaid:
        Path(args.mermaid).write_text(text, encoding="utf-8")
    print(f"{len(steps)} steps, {len(lanes) - 1} client(s): {output}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
