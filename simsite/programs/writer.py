"""What orb2dbt and orb2wf share: ``PROG -S STATEFILE ORB DB``.

Reads the packets of ORB after the one recorded in STATEFILE (all of them
if there is no state file), and for each packet asks the ID server for all
the ids the packet's rows need, then appends the rows to DB's tables and
records the packet in STATEFILE (atomically). After the rows, it appends
to its own record, ``records/PROG.written``, one JSON line per packet: the
time, its pid, the packet, the ID server and each row's exact line (an
independent checker reads it: rehearsal/checker.py). The ID server is the one named
on DB's ``dbidserver`` line, read once at start: a changed descriptor takes
effect when the writer is restarted. If the ID server cannot give the ids,
the writer says so, naming the dbidserver, and exits 1 (rtexec restarts it
later): no row is ever written without an id. Like Antelope's writers, which
add a packet's rows one at a time with dbadd(3), it appends a packet's rows
table by table: a kill or a power-off between two tables leaves the packet
half written and unrecorded, and the state file still names the packet
before it, so the writer writes the packet again, whole and with new ids,
when it restarts (the half is left: an event row whose origin is absent).
``state/hold/<PROG>`` naming a table makes it stop itself (SIGSTOP) right
after that table's rows of its next packet, for a test to catch the packet
half written. SIGTERM stops it between two packets.
"""
from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from antelope_ha.css30 import TABLES, append_rows, atomic_write
from antelope_ha.descriptor import parse_descriptor
from simsite.layout import ProgramSite, this_site
from simsite.net import Network
from simsite.orb import Packet, PacketFollower, orb_site
from simsite.programs.cli import Parser, fail, log

TIMEOUT_S = 1.0
Rows = list[tuple[str, dict[str, object]]]  # (table, record) in write order
RowMaker = Callable[[Packet, list[int], ProgramSite], Rows]


def read_state(path: Path) -> int | None:
    try:
        return int(path.read_text().split()[0])
    except FileNotFoundError:
        return None


def held_after(path: Path) -> str | None:
    """The table after whose rows the next packet is to be held, if one is set."""
    try:
        return path.read_text().strip() or None
    except FileNotFoundError:
        return None


def record_written(path: Path, seq: int, idserver: str, by_table: dict[str, list[dict[str, object]]]) -> None:
    """One line of the writer's own record: what it has just appended (after the
    rows, so a line names only rows that are on disk)."""
    rows = [[table, TABLES[table].format_row(row)] for table, rs in by_table.items() for row in rs]
    line = json.dumps({"t": time.time(), "pid": os.getpid(), "seq": seq, "idserver": idserver, "rows": rows})
    path.parent.mkdir(exist_ok=True)
    with open(path, "a") as f:
        f.write(line + "\n")


def run_writer(prog: str, argv: Sequence[str], keys: Sequence[str], make_rows: RowMaker) -> int:
    parser = Parser(prog, f"Simulated {prog}: write the packets of ORB into DB.")
    parser.add_argument("-S", dest="statefile", required=True, help="last packet written (state file)")
    parser.add_argument("orb", help="ORB address host:port")
    parser.add_argument("db", help="database descriptor")
    args = parser.parse_args(list(argv))
    site = this_site()
    net = Network(site.root / "net")
    db, state_file = Path(args.db).absolute(), Path(args.statefile).absolute()
    try:
        idserver = parse_descriptor(db.read_text(), str(db)).dbidserver
    except (OSError, ValueError) as exc:
        return fail(prog, f"cannot read the descriptor {db}: {exc}")
    if not idserver:
        return fail(prog, f"{db} has no dbidserver line: this simulation takes ids only from an ID server")
    try:
        orb = orb_site(net, site.root, args.orb)
        after = read_state(state_file)
    except (OSError, ValueError) as exc:
        return fail(prog, f"cannot start: {exc}")
    stopping = False

    def on_term(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_term)
    host, _, port = args.orb.rpartition(":")
    waiting = False
    while not stopping:  # like an ORB client, wait for the orbserver
        try:
            net.connect(site.name, host, int(port), TIMEOUT_S).close()
            break
        except OSError as exc:
            if not waiting:
                log(prog, f"waiting for ORB {args.orb}: {exc}")
                waiting = True
            time.sleep(0.2)
    follower = PacketFollower(orb.packets, after)
    log(prog, f"writing {db} from ORB {args.orb} after packet {after}; ids from dbidserver {idserver}")
    while not stopping:
        packets = follower.new_packets()
        if not packets:
            time.sleep(0.05)
        for packet in packets:
            if stopping:
                break
            try:
                replies = net.exchange(site.name, idserver, [f"next {k}" for k in keys], TIMEOUT_S)
                ids = [int(r) for r in replies]
            except (OSError, ValueError) as exc:
                return fail(prog, f"cannot get ids from dbidserver {idserver} (named in {db}): {exc}; "
                                  f"packet {packet.seq} not written, exiting")
            by_table: dict[str, list[dict[str, object]]] = {}
            for table, row in make_rows(packet, ids, site):
                by_table.setdefault(table, []).append(row)
            hold = held_after(site.paths.hold / prog)
            for table, rows in by_table.items():
                append_rows(f"{db}.{table}", TABLES[table], rows)
                if table == hold:
                    (site.paths.hold / prog).unlink(missing_ok=True)
                    log(prog, f"holding packet {packet.seq} half written, after its {table} rows")
                    os.kill(os.getpid(), signal.SIGSTOP)
            record_written(site.paths.written_log(prog), packet.seq, idserver, by_table)
            atomic_write(state_file, f"{packet.seq}\n".encode(), durable=False)  # as dbids: no host crash here
    log(prog, f"stopped after packet {read_state(state_file)}")
    return 0
