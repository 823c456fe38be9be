"""Stand-in for dbids(1), the ID server.

The real dbids command line is not public (docs/antelope-facts.md, section 2);
this simulation's choice is::

    dbids -p PORT [-a ADDRESS] DBIDS

serving on ADDRESS (default: the site's address) the ids of the database
DBIDS, whose ``lastid`` table is ``DBIDS.lastid``. One request per line:

- ``next KEYNAME``: the new id, lastid + 1; the lastid table is rewritten
  (atomically, lddate updated) before the answer is sent, so an id is never
  given twice, even across a crash;
- ``KEYNAME`` alone: the same. This is how antelope_contrib's pr_origin.xpl asks
  (``print $sock "$idname"``, then it reads one line), without a newline: a bare
  css3.0 key name is answered at once, any other text once the client pauses
  (IDLE_S) or closes its side;
- ``ping``: ``pong SITE LASTID-PATH``.

It keeps its own record of when it served, ``records/dbids.serving``, one line
per event, ``TIME start|alive|stop PID ADDRESS``: ``start`` once it listens,
``alive`` every HEARTBEAT_S while it runs, ``stop`` on SIGTERM. A process
killed outright served until its last line, within HEARTBEAT_S: the
independent checker (rehearsal/checker.py) computes from it the time with two
ID servers serving, and with none.

The lastid table is read at each request, so a table replaced while dbids
runs (replication) is honoured. Allocations are serialized by a lock. Each
new lastid replaces the table atomically but without fsync: a simulated host
loses power by its processes stopping, never its page cache, so fsync adds
nothing the simulation can see, and its two fsyncs were 60% of the time an id
took, under the lock (0.44 ms against 0.18 ms per id, measured on a quiet
machine here).
"""
from __future__ import annotations

import os
import re
import signal
import socket
import socketserver
import threading
import time
from pathlib import Path

from antelope_ha.css30 import ID_OWNER, atomic_write
from antelope_ha.lastid import format_lastid, read_lastid
from simsite.layout import ProgramSite, this_site
from simsite.net import Network
from simsite.programs.cli import HostServer, Parser, fail, log

PROG = "dbids"
MAX_ID = 99999999  # css3.0 ids are 8 characters (dbnextid(3))
_KEY = re.compile(r"^[a-z][a-z0-9_]{0,14}$")  # a lastid keyname
IDLE_S = 0.2  # a request without a newline is complete when the client pauses this long
HEARTBEAT_S = 0.2  # how often the serving record says "alive"


class IdServer(HostServer):
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
        if len(words) == 1 and _KEY.match(words[0]):
            return str(self.next_id(words[0]))
        return f"error unknown request {request!r}: use 'next KEYNAME', 'KEYNAME' or 'ping'"

    def next_id(self, key: str) -> int:
        with self.lock:
            values = read_lastid(self.lastid)
            new = values.get(key, 0) + 1
            if new > MAX_ID:
                raise OverflowError(f"{key} would exceed {MAX_ID}")
            values[key] = new
            atomic_write(self.lastid, format_lastid(values, time.time()).encode(), durable=False)
            return new


class Handler(socketserver.StreamRequestHandler):
    server: IdServer

    def handle(self) -> None:
        if not self.server.net.allows(self.client_address[0], self.server.site.name):
            return  # the link from the client's host is cut: drop it
        sock: socket.socket = self.request
        pending = b""
        while True:
            sock.settimeout(IDLE_S if pending else None)
            try:
                chunk = sock.recv(4096)
            except socket.timeout:  # the client waits for an answer to a request without a newline
                self.reply(pending)
                pending = b""
                continue
            if not chunk:
                if pending.strip():
                    self.reply(pending)
                return
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                self.reply(line)
            if pending.decode(errors="replace").strip() in ID_OWNER:
                self.reply(pending)
                pending = b""

    def reply(self, raw: bytes) -> None:
        request = raw.decode(errors="replace").strip()
        try:
            reply = self.server.answer(request)
        except (OSError, ValueError, OverflowError) as exc:
            log(PROG, f"cannot answer {request!r}: {exc}")
            reply = f"error {exc}"
        self.request.sendall(reply.encode() + b"\n")


class ServingRecord:
    """The append-only record of when this process served ids."""

    def __init__(self, path: Path, address: str):
        self.path, self.address, self.lock, self.stopped = path, address, threading.Lock(), False
        path.parent.mkdir(exist_ok=True)

    def write(self, event: str) -> None:
        with self.lock:
            if self.stopped:
                return
            self.stopped = event == "stop"
            with open(self.path, "a") as f:
                f.write(f"{time.time():.3f} {event} {os.getpid()} {self.address}\n")

    def beat(self) -> None:
        while not self.stopped:
            time.sleep(HEARTBEAT_S)
            self.write("alive")


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
    record = ServingRecord(site.paths.serving_log, f"{address}:{args.port}")

    def on_term(signum: int, frame: object) -> None:
        record.write("stop")
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, on_term)
    record.write("start")
    threading.Thread(target=record.beat, daemon=True).start()
    log(PROG, f"serving ids from {lastid} on {address}:{args.port} ("
        + ", ".join(f"{k} {v}" for k, v in sorted(values.items())) + ")")
    server.serve_forever()
    return 0
