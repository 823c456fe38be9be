"""Stand-in for ``ping -c 1 -W SECONDS HOST`` between simulated hosts.

A host answers if it is powered on and the link from this site to it is not
cut (see ``simsite.net``); the witness must also greet a TCP probe of its
responder, so a dead responder counts as a dead witness. Output and exit
status follow iputils ping: 0 answered, 1 no answer, 2 other errors.
"""
from __future__ import annotations

import time

from simsite.layout import WITNESS, this_site
from simsite.net import Network
from simsite.programs.cli import Parser

PROG = "ping"


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Check that a simulated host answers.")
    parser.add_argument("-c", dest="count", type=int, choices=[1], required=True, help="packets (only 1)")
    parser.add_argument("-W", dest="wait", type=float, required=True, help="seconds to wait for the reply")
    parser.add_argument("host")
    args = parser.parse_args(argv)
    site = this_site()
    net = Network(site.root / "net")
    target = net.name_of(args.host)
    if target is None:
        print(f"{PROG}: {args.host}: not a host of this simulated network")
        return 2
    print(f"PING {args.host} ({args.host}) 56(84) bytes of data.")
    start = time.monotonic()
    try:
        net.check(site.name, target)
        if target == WITNESS:
            with net.connect(site.name, args.host, site.settings.witness_port, args.wait) as sock:
                if not sock.makefile("rb").readline().startswith(b"witness "):
                    raise ConnectionError("the witness responder did not answer")
        answered, why = True, ""
    except OSError as exc:
        answered, why = False, str(exc)
    ms = (time.monotonic() - start) * 1000
    if answered:
        print(f"64 bytes from {args.host}: icmp_seq=1 ttl=64 time={ms:.3f} ms")
    else:
        print(f"From {args.host} icmp_seq=1 Destination Host Unreachable ({why})")
    print(f"\n--- {args.host} ping statistics ---")
    print(f"1 packets transmitted, {int(answered)} received, "
          f"{0 if answered else 100}% packet loss, time {ms:.0f}ms")
    return 0 if answered else 1
