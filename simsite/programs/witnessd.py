"""The witness host's responder: ``witnessd -p PORT``.

Accepts TCP connections on the witness address and greets each with
``witness NAME``; a probe counts only if it reads that line, because the
simulated network drops (without a greeting) connections over a cut link.
Daemonizes like rtexec (logs/witnessd, logs/witnessd.pid).
"""
from __future__ import annotations

import socketserver

from simsite import procs
from simsite.layout import this_site
from simsite.net import Network
from simsite.programs.cli import HostServer, Parser, fail, log

PROG = "witnessd"


class Responder(HostServer):
    def __init__(self, address: tuple[str, int], net: Network, name: str):
        super().__init__(address, Greeter)
        self.net = net
        self.name = name


class Greeter(socketserver.BaseRequestHandler):
    server: Responder

    def handle(self) -> None:
        if self.server.net.allows(self.client_address[0], self.server.name):
            self.request.sendall(f"witness {self.server.name}\n".encode())


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Answer TCP probes on the witness address.")
    parser.add_argument("-p", dest="port", type=int, required=True, help="TCP port")
    args = parser.parse_args(argv)
    site = this_site()
    site.paths.logs.mkdir(exist_ok=True)
    try:
        server = Responder((site.address, args.port), Network(site.root / "net"), site.name)
    except OSError as exc:
        return fail(PROG, f"cannot listen on {site.address}:{args.port}: {exc}")
    procs.daemonize(site.paths.logs / PROG, site.paths.witnessd_pid)
    log(PROG, f"answering on {site.address}:{args.port}")
    server.serve_forever()
    return 0
