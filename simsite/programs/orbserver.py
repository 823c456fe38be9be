"""Stand-in for orbserver(1): ``orbserver -p PORT PFNAME``.

Listens on the site's address and PORT (clients such as orbstat connect to
see it alive) and appends a packet to ``packets`` beside PFNAME every
``packet_interval`` seconds, cycling through ``srcnames``. It starts at the
current packet and never backfills: packets of a time it was not running
(stopped, powered off) are lost to this site, as in real acquisition. While
it runs it loses none: a wake-up late by several intervals (a loaded CPU)
writes every packet since the last, as an ORB receives what queued up.

PFNAME holds ``key value`` lines: packet_interval, samprate, srcnames
(space separated).
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

from simsite.layout import this_site
from simsite.orb import Packet, append_packet, read_packets
from simsite.programs.cli import Parser, fail, log

PROG = "orbserver"


def read_pf(path: Path) -> dict[str, str]:
    settings = {}
    for line in path.read_text().splitlines():
        key, _, value = line.split("#", 1)[0].strip().partition(" ")
        if key:
            settings[key] = value.strip()
    return settings


def accept_forever(listener: socket.socket) -> None:
    while True:
        conn, _ = listener.accept()
        conn.close()


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Simulated ORB server: one packet every packet_interval seconds.")
    parser.add_argument("-p", dest="port", type=int, required=True, help="TCP port")
    parser.add_argument("pfname", help="parameter file; the packets file is written beside it")
    args = parser.parse_args(argv)
    site = this_site()
    pf = Path(args.pfname).absolute()
    try:
        settings = read_pf(pf)
        interval = float(settings["packet_interval"])
        samprate = float(settings["samprate"])
        srcnames = settings["srcnames"].split()
    except (OSError, KeyError, ValueError) as exc:
        return fail(PROG, f"cannot read {pf}: {exc!r}; it needs packet_interval, samprate, srcnames")
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        listener.bind((site.address, args.port))
        listener.listen(64)
    except OSError as exc:
        return fail(PROG, f"cannot listen on {site.address}:{args.port}: {exc}")
    threading.Thread(target=accept_forever, args=(listener,), daemon=True).start()
    packets = pf.parent / "packets"
    log(PROG, f"on {site.address}:{args.port}: a packet every {interval:g} s into {packets}")
    written = read_packets(packets)
    last = max(int(time.time() / interval) - 1, written[-1].seq if written else -1)  # a packet once, even if restarted
    while True:
        now = int(time.time() / interval)
        for seq in range(last + 1, now + 1):  # a late wake-up (a loaded CPU) skips no packet
            append_packet(packets, Packet(seq, seq * interval, srcnames[seq % len(srcnames)], samprate,
                                          round(interval * samprate)))
        last = max(last, now)
        time.sleep(max(0.0, (last + 1) * interval - time.time()))
