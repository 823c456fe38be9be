"""Stand-in for ``orbstat -s ORB``: the ORB's sources and their latency.

One line per source: srcname first, then the packet count and the latency
(now minus the time of its newest packet) with a unit word, as the scripts
that grep orbstat output expect. Exits 1 if the orbserver cannot be reached.
"""
from __future__ import annotations

import time

from simsite.layout import this_site
from simsite.net import Network
from simsite.orb import orb_site, read_packets
from simsite.programs.cli import Parser, fail, stamp

PROG = "orbstat"
TIMEOUT_S = 1.0


def fmt_latency(seconds: float) -> str:
    for unit, size in (("days", 86400.0), ("hours", 3600.0), ("minutes", 60.0)):
        if seconds >= size:
            return f"{seconds / size:.2f} {unit}"
    return f"{seconds:.2f} seconds"


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Show the sources of a simulated ORB.")
    parser.add_argument("-s", dest="orb", required=True, help="ORB address host:port")
    args = parser.parse_args(argv)
    site = this_site()
    net = Network(site.root / "net")
    host, _, port = args.orb.rpartition(":")
    try:
        orb = orb_site(net, site.root, args.orb)
        net.connect(site.name, host, int(port), TIMEOUT_S).close()
    except (OSError, ValueError) as exc:
        return fail(PROG, f"cannot connect to ORB {args.orb}: {exc}")
    now = time.time()
    newest: dict[str, float] = {}
    count: dict[str, int] = {}
    for p in read_packets(orb.packets):
        newest[p.srcname] = max(newest.get(p.srcname, p.time), p.time)
        count[p.srcname] = count.get(p.srcname, 0) + 1
    print(f"{args.orb} at {stamp()} UTC: {len(newest)} sources")
    print(f"{'srcname':<24} {'npkts':>8}  latency")
    for src in sorted(newest):
        print(f"{src:<24} {count[src]:>8}  {fmt_latency(max(0.0, now - newest[src]))}")
    return 0
