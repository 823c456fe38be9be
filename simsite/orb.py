"""The simulated ORB: a packets file per site that the orbserver appends to.

A packet line is ``seq time srcname samprate nsamp``. ``seq`` is the packet's
time divided by the packet interval, so both sites number the same moment of
the (shared) seismic signal alike. Each line is written with a single
``write`` on a file opened for appending, so readers never see half a line.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from simsite.layout import SitePaths
from simsite.net import Network


@dataclass(frozen=True)
class Packet:
    seq: int
    time: float
    srcname: str  # NET_STA/MGENC/M40
    samprate: float
    nsamp: int

    @property
    def sta(self) -> str:
        return self.srcname.split("/", 1)[0].split("_", 1)[-1]

    def line(self) -> str:
        return f"{self.seq} {self.time:.3f} {self.srcname} {self.samprate:g} {self.nsamp}\n"

    @classmethod
    def parse(cls, line: str) -> Packet:
        seq, time, srcname, samprate, nsamp = line.split()
        return cls(int(seq), float(time), srcname, float(samprate), int(nsamp))


def append_packet(path: Path, packet: Packet) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, packet.line().encode())
    finally:
        os.close(fd)


def read_packets(path: Path) -> list[Packet]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        return []
    return [Packet.parse(line) for line in text.splitlines(keepends=True) if line.endswith("\n")]


class PacketFollower:
    """Reads the packets after ``after`` (all if None), then each new one as it comes."""

    def __init__(self, path: Path, after: int | None):
        self.path = path
        self.after = after
        self.offset = 0

    def new_packets(self) -> list[Packet]:
        try:
            with open(self.path, "rb") as f:
                f.seek(self.offset)
                data = f.read()
        except FileNotFoundError:
            return []
        complete = data[: data.rfind(b"\n") + 1]
        self.offset += len(complete)
        packets = [Packet.parse(line) for line in complete.decode().splitlines()]
        return [p for p in packets if self.after is None or p.seq > self.after]


def orb_site(net: Network, root: Path, orb: str) -> SitePaths:
    """The site whose orbserver listens on ``orb`` (host:port)."""
    host, _, port = orb.rpartition(":")
    name = net.name_of(host)
    if name is None or not port.isdigit():
        raise ValueError(f"{orb!r} is not host:port of a host of this simulated network")
    return SitePaths(root / name)
