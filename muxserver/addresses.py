"""Addresses of this machine: whether a host name is loopback only, and how other
machines reach this one (for the banner, the exposure warning and share links). No
packet is sent by anything here."""

from __future__ import annotations

import ipaddress
import socket


def reachable_address() -> str | None:
    """This machine's address on its default route, for a server listening on every
    address. A UDP socket's connect() only chooses a route: no packet is sent (and
    192.0.2.1 is TEST-NET-1, reserved for documentation, routed nowhere)."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
            probe.connect(("192.0.2.1", 9))
            return probe.getsockname()[0]
    except OSError:
        return None


def is_loopback_address(address: str) -> bool:
    """True if ``address`` (a peer's IP address, as accept() gives it) is this machine."""
    try:
        ip = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    mapped = getattr(ip, "ipv4_mapped", None)
    return (mapped or ip).is_loopback


def is_loopback(host: str) -> bool:
    """True if every address ``host`` stands for is on this machine only."""
    try:
        infos = socket.getaddrinfo(host or None, None, proto=socket.IPPROTO_TCP,
                                   flags=socket.AI_PASSIVE)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(info[4][0]).is_loopback for info in infos)


def public_host(host: str) -> str:
    """How other machines name this server, for the share links it makes: "" when it
    listens on loopback only (the client's own address for it is then the only one)."""
    if is_loopback(host):
        return ""
    if host in ("0.0.0.0", "::", ""):
        return reachable_address() or socket.gethostname()
    return host
