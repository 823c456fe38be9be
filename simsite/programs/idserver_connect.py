"""Stand-in for the operators' ``idserver_connect host:port`` monitoring script.

Asks the ID server for a ``ping`` from this site; prints the reply and exits 0,
or prints why it could not and exits 1.
"""
from __future__ import annotations

from simsite.layout import this_site
from simsite.net import Network
from simsite.programs.cli import Parser

PROG = "idserver_connect"
TIMEOUT_S = 1.0


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Check that the ID server at host:port answers.")
    parser.add_argument("address", help="host:port of the ID server")
    args = parser.parse_args(argv)
    site = this_site()
    try:
        [reply] = Network(site.root / "net").exchange(site.name, args.address, ["ping"], TIMEOUT_S)
    except (OSError, ValueError) as exc:
        print(f"{PROG}: cannot reach ID server at {args.address}: {exc}")
        return 1
    if not reply.startswith("pong "):
        print(f"{PROG}: ID server at {args.address} answered {reply!r}")
        return 1
    print(reply)
    return 0
