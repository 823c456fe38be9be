"""Stand-in for trexcerpt(1), time mode: copy a time window between databases.

    trexcerpt -v -e INDB OUTDB START END      extract into a new OUTDB
    trexcerpt -v -a -e INDB OUTDB START END   append into an existing OUTDB

START and END are epoch seconds (this simulation takes no durations or
time strings); the window is START <= time < END. A time window and nothing
kinder: rows copied are origins, arrivals and wfdiscs whose own time is in the
window, and the rows that hang on one of those by their own key: events
whose preferred origin is, netmags whose origin is, assocs whose arrival is.
The rest of an event (an arrival after the window, the origin of an assoc
copied for its arrival) is not: whole events are the caller's work.
Extracting refuses an OUTDB that already has rows, and writes OUTDB's
descriptor from INDB's without its dbidserver (and dbpath) line, as an
excerpt issues no ids. Records are copied as they are, byte for byte (a
blank text field stays blank). Appending skips rows whose
id (assoc: arid and orid) OUTDB already has, so a repeated merge adds
nothing. ``-v`` prints ``<table>: <n> records`` per table. ``-e`` is accepted
as the operators use it (its meaning is not public). Exit 1 on fatal errors.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from antelope_ha.css30 import TABLES, append_lines, atomic_write, read_fields
from antelope_ha.descriptor import parse_descriptor
from simsite.programs.cli import Parser, fail

PROG = "trexcerpt"
Row = dict[str, int | float | str]
Record = tuple[Row, bytes]  # parsed, and the exact line it is copied as
ROW_KEY: dict[str, Callable[[Row], object]] = {
    "event": lambda r: r["evid"],
    "origin": lambda r: r["orid"],
    "arrival": lambda r: r["arid"],
    "assoc": lambda r: (r["arid"], r["orid"]),
    "wfdisc": lambda r: r["wfid"],
    "netmag": lambda r: r["magid"],
}
TABLES_COPIED = tuple(ROW_KEY)
#: The fields a time window and the keys look at; the rest of a record is copied, never read.
FIELDS_READ: dict[str, tuple[str, ...]] = {
    "event": ("evid", "prefor"),
    "origin": ("time", "orid"),
    "arrival": ("time", "arid"),
    "assoc": ("arid", "orid"),
    "wfdisc": ("time", "wfid"),
    "netmag": ("magid", "orid"),
}


def read_db(db: Path) -> dict[str, list[Record]]:
    tables = {}
    for name in TABLES_COPIED:
        path = Path(f"{db}.{name}")
        tables[name] = list(read_fields(path, TABLES[name], FIELDS_READ[name])) if path.exists() else []
    return tables


def window_rows(db: dict[str, list[Record]], start: float, end: float) -> dict[str, list[Record]]:
    def inside(rec: Record) -> bool:
        return start <= float(rec[0]["time"]) < end

    origins = [rec for rec in db["origin"] if inside(rec)]
    arrivals = [rec for rec in db["arrival"] if inside(rec)]
    orids, arids = {r["orid"] for r, _ in origins}, {r["arid"] for r, _ in arrivals}
    return {
        "event": [rec for rec in db["event"] if rec[0]["prefor"] in orids],
        "origin": origins,
        "arrival": arrivals,
        "assoc": [rec for rec in db["assoc"] if rec[0]["arid"] in arids],
        "wfdisc": [rec for rec in db["wfdisc"] if inside(rec)],
        "netmag": [rec for rec in db["netmag"] if rec[0]["orid"] in orids],
    }


def excerpt_descriptor(text: str, source: str) -> str:
    """INDB's descriptor without the lines that tie it to production (dbidserver, dbpath)."""
    d = parse_descriptor(text, source)
    return ("".join(d.other_lines) + f"schema {d.schema or 'css3.0'}\n"
            + (f"dblocks {d.dblocks}\n" if d.dblocks else ""))


def counts(tables: dict[str, list[Record]]) -> Iterable[str]:
    return (f"{name}: {len(rows)}" for name, rows in tables.items() if rows)


def main(argv: list[str]) -> int:
    parser = Parser(PROG, "Copy a time window of a database (simulated time mode).")
    parser.add_argument("-v", action="store_true", help="report the records copied per table")
    parser.add_argument("-a", action="store_true", help="append into an existing output database")
    parser.add_argument("-e", action="store_true", help="accepted as the operators use it")
    parser.add_argument("indb")
    parser.add_argument("outdb")
    parser.add_argument("start", type=float, help="window start, epoch seconds")
    parser.add_argument("end", type=float, help="window end (excluded), epoch seconds")
    args = parser.parse_args(argv)
    if args.end <= args.start:
        return fail(PROG, f"end time {args.end:.3f} is not after start time {args.start:.3f}: "
                          "the window is empty or reversed")
    indb, outdb = Path(args.indb).absolute(), Path(args.outdb).absolute()
    if not indb.exists():
        return fail(PROG, f"input database {indb}: no descriptor")
    try:
        window = window_rows(read_db(indb), args.start, args.end)
        existing = read_db(outdb)
        descriptor = excerpt_descriptor(indb.read_text(), str(indb))
    except (OSError, ValueError) as exc:
        return fail(PROG, str(exc))
    if args.a:
        if not outdb.exists():
            return fail(PROG, f"output database {outdb}: no descriptor; -a appends to an existing database")
        skipped = {}
        for name in TABLES_COPIED:
            present = {ROW_KEY[name](r) for r, _ in existing[name]}
            fresh = [rec for rec in window[name] if ROW_KEY[name](rec[0]) not in present]
            skipped[name] = len(window[name]) - len(fresh)
            if fresh:
                append_lines(f"{outdb}.{name}", TABLES[name], (line for _, line in fresh))
            window[name] = fresh
    else:
        if any(existing.values()):
            return fail(PROG, f"output database {outdb} already has rows ({', '.join(counts(existing))}); "
                              "remove it, or use -a to append")
        outdb.parent.mkdir(parents=True, exist_ok=True)
        outdb.write_text(descriptor)
        skipped = {}
        for name, records in window.items():
            atomic_write(f"{outdb}.{name}", b"".join(line for _, line in records))
    if args.v:
        for name in TABLES_COPIED:
            note = f" ({skipped[name]} already present)" if skipped.get(name) else ""
            print(f"{name}: {len(window[name])} records{note}")
    return 0
