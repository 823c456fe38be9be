"""The simulated network: which hosts are powered on and which links are cut.

All hosts of a simulated pair share one machine and its loopback interface,
so real network faults (a dead host, a cut cable, a firewall) cannot be made
per host without privileges. Instead this module keeps the network's state in
files under ``<root>/net`` and every stand-in asks it before it connects:

- ``hosts``: ``address name`` per line (ms, bus, witness, orchestrator);
- ``off/<name>``: the host is powered off;
- ``cuts``: ``src dst`` per line, a one-way cut: ``src`` cannot open a
  connection to ``dst`` (``dst`` may still reach ``src``).

Clients bind their own site's address before connecting, so the servers
(ID server, witness) can also drop connections arriving over a cut link.
A refused check fails at once where a real network would time out.
"""
from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from antelope_ha.css30 import atomic_write
from simsite.layout import ORCHESTRATOR


class Unreachable(OSError):
    """The simulated network does not carry this connection."""


@dataclass(frozen=True)
class Network:
    dir: Path

    @classmethod
    def create(cls, dir: Path, addresses: Mapping[str, str]) -> Network:
        (dir / "off").mkdir(parents=True, exist_ok=True)
        atomic_write(dir / "hosts", "".join(f"{a} {n}\n" for n, a in addresses.items()).encode())
        atomic_write(dir / "cuts", b"")
        return cls(dir)

    def hosts(self) -> dict[str, str]:
        """Address -> host name."""
        pairs = (line.split() for line in (self.dir / "hosts").read_text().splitlines())
        return {p[0]: p[1] for p in pairs if len(p) == 2}

    def name_of(self, address: str) -> str | None:
        return self.hosts().get(address)

    def address_of(self, name: str) -> str:
        for address, host in self.hosts().items():
            if host == name:
                return address
        raise KeyError(f"no host {name!r} in {self.dir / 'hosts'}")

    # --- power ------------------------------------------------------------------
    def is_on(self, name: str) -> bool:
        return not (self.dir / "off" / name).exists()

    def set_power(self, name: str, on: bool) -> None:
        marker = self.dir / "off" / name
        if on:
            marker.unlink(missing_ok=True)
        else:
            marker.touch()

    # --- links ------------------------------------------------------------------
    def cuts(self) -> set[tuple[str, str]]:
        pairs = (line.split() for line in (self.dir / "cuts").read_text().splitlines())
        return {(p[0], p[1]) for p in pairs if len(p) == 2}

    def set_cut(self, src: str, dst: str, cut: bool) -> None:
        cuts = self.cuts() | {(src, dst)} if cut else self.cuts() - {(src, dst)}
        atomic_write(self.dir / "cuts", "".join(f"{a} {b}\n" for a, b in sorted(cuts)).encode())

    def check(self, src: str, dst: str) -> None:
        """Raise Unreachable unless host ``src`` can open a connection to ``dst``."""
        if not self.is_on(dst):
            raise Unreachable(f"no route to host {dst} (simulated: {dst} is powered off)")
        if (src, dst) in self.cuts():
            raise Unreachable(f"timed out (simulated: the link {src} -> {dst} is cut)")

    def allows(self, peer_address: str, dst: str) -> bool:
        """Server side: may a connection from ``peer_address`` reach host ``dst``?"""
        src = self.name_of(peer_address) or ORCHESTRATOR
        return (src, dst) not in self.cuts()

    def connect(self, src: str, host: str, port: int, timeout_s: float) -> socket.socket:
        """Open a TCP connection from host ``src`` to ``host:port``."""
        dst = self.name_of(host)
        if dst is not None:
            self.check(src, dst)
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            sock.settimeout(timeout_s)
            sock.bind((self.address_of(src), 0))
            sock.connect((host, port))
        except OSError:
            sock.close()
            raise
        return sock

    def exchange(self, src: str, address: str, requests: list[str], timeout_s: float) -> list[str]:
        """Send each request line to ``host:port`` and read one reply line for each."""
        host, _, port = address.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"address must be host:port, got {address!r}")
        with self.connect(src, host, int(port), timeout_s) as sock, sock.makefile("rwb") as f:
            replies = []
            for request in requests:
                f.write(request.encode() + b"\n")
                f.flush()
                line = f.readline()
                if not line.endswith(b"\n"):
                    raise ConnectionError("connection closed without a reply")
                replies.append(line.decode().strip())
            return replies
