"""Stand-in for dbids(1), the ID server.

The real dbids command line is not public (docs/antelope-facts.md, section 2);
this simulation's choice is::

    dbids -p PORT [-a ADDRESS] DBIDS

serving on ADDRESS (default: the site's address) the ids of the database
DBIDS, whose ``lastid`` table is ``DBIDS.lastid``. One request per line:

- ``next KEYNAME``: the new id, lastid + 1; the lastid table is rewritten
  (atomically, lddate updated) before the answer is sent, so an id is never
  given twice, even across a crash;
- ``ping``: ``pong SITE LASTID-PATH``.

The lastid table is read at each request, so a table replaced while dbids
runs (replication) is honoured. Allocations are serialized by a lock.
"""
from __future__ import annotations

import re
import socketserver
import threading
import time
from pathlib import Path

from antelope_ha.css30 import atomic_write
from antelope_ha.lastid import format_lastid, read_lastid
from simsite.layout import ProgramSite, this_site
from simsite.net import Network
from simsite.programs.cli import Parser, fail, log

PROG = "dbids"
MAX_ID = 99999999  # css3.0 ids are 8 characters (dbnextid(3))
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,14}$")  # a lastid keyname


class IdServer(socketserver.ThreadingTCPServer):
    allow_reuse_address = True
    daemon_threads = True

    def __init__(self, address: tuple[str, int], site: ProgramSite, lastid: Path):
        super().__init__(address, Handler)
        self.site = site
        self.net = Network(site.root / "net")
        self.lastid = lastid
        self.lock = threading.Lock()

    def answer(self, request: str) -> str:
        words = request.split()
        if words == ["ping"]:
            return f"pong {self.site.name} {self.lastid}"
        if len(words) == 2 and words[0] == "next" and _KEY.match(words[1]):
            return str(self.next_id(words[1]))
        return f"error unknown request {request!r}: use 'next KEYNAME' or 'ping'"

    def next_id(self, key: str) -> int:
        with self.lock:
            values = read_lastid(self.lastid)
            new = values.get(key, 0) + 1
            if new > MAX_ID:
                raise OverflowError(f"{key} would exceed {MAX_ID}")
            values[key] = new
            atomic_write(self.lastid, format_lastid(values, time.time()).encode())
            return new


class Handler(socketserver.StreamRequestHandler):
    server: IdServer

    def handle(self) -> None:
        if not self.server.net.allows(self.client_address[0], self.server.site.name):
            return  # the link from the client's host is cut: drop it
        for raw in self.rfile:
            request = raw.decode(errors="replace").strip()
            try:
                reply = self.server.answer(request)
            except (OSError, ValueError, OverflowError) as exc:
                log(PROG, f"cannot answer {request!r}: {exc}")
                reply = f"error {exc}"
            self.wfile.write(reply.encode() + b"\n")
            self.wfile.flush()


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Simulated ID server: hands out ids from DBIDS.lastid.")
    parser.add_argument("-p", dest="port", type=int, required=True, help="TCP port")
    parser.add_argument("-a", dest="address", help="address to listen on (default: the site's)")
    parser.add_argument("dbids", help="the ids database; its lastid table is DBIDS.lastid")
    args = parser.parse_args(argv)
    site = this_site()
    lastid = Path(f"{args.dbids}.lastid").absolute()
    try:
        values = read_lastid(lastid)
    except FileNotFoundError:
        return fail(PROG, f"cannot serve ids: lastid table {lastid} does not exist")
    except ValueError as exc:
        return fail(PROG, f"cannot serve ids: lastid table {lastid} is not valid: {exc}")
    address = args.address or site.address
    try:
        server = IdServer((address, args.port), site, lastid)
    except OSError as exc:
        return fail(PROG, f"cannot listen on {address}:{args.port}: {exc}")
    log(PROG, f"serving ids from {lastid} on {address}:{args.port} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(values.items())) + ")")
    server.serve_forever()
    return 0
