"""Listening ports for simulated servers, chosen outside the ephemeral range.

A port found by binding port 0 comes from the kernel's ephemeral range, and
the kernel may hand that same port to an outgoing connection before the
server meant for it starts listening. BUS's ID server starts only at
failover, minutes after the pair is made, and the stand-ins' clients bind
their own site's address, so the port can be taken on that very address and
``dbids`` then cannot listen. Ports outside the ephemeral range are never
handed out that way.
"""
from __future__ import annotations

import random
import socket
from collections.abc import Sequence
from pathlib import Path

EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LINUX_DEFAULT_RANGE = (32768, 60999)
ATTEMPTS = 200


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = (int(v) for v in EPHEMERAL_RANGE_FILE.read_text().split())
    except (OSError, ValueError):
        return LINUX_DEFAULT_RANGE
    return low, high


def candidate_ports() -> range:
    """The larger stretch of unprivileged ports below or above the ephemeral range."""
    low, high = ephemeral_range()
    below, above = range(1024, low), range(high + 1, 65536)
    return below if len(below) >= len(above) else above


def listen_ports(addresses: Sequence[str]) -> list[int]:
    """One free port on each address, outside the ephemeral range, all held until every one is chosen."""
    candidates = candidate_ports()
    held: list[socket.socket] = []
    try:
        for address in addresses:
            held.append(_bind_one(address, candidates, {s.getsockname() for s in held}))
        return [s.getsockname()[1] for s in held]
    finally:
        for s in held:
            s.close()


def listen_port(address: str = "127.0.0.1") -> int:
    return listen_ports([address])[0]


def _bind_one(address: str, candidates: range, taken: set[tuple[str, int]]) -> socket.socket:
    for _ in range(ATTEMPTS):
        port = random.choice(candidates)
        if (address, port) in taken:
            continue
        s = socket.socket()
        try:
            s.bind((address, port))
        except OSError:
            s.close()
            continue
        return s
    raise OSError(f"no free port on {address} in {candidates.start}-{candidates.stop - 1} "
                  f"after {ATTEMPTS} tries")
