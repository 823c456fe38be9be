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
excerpt issues no ids. Appending skips rows whose
id (assoc: arid and orid) OUTDB already has, so a repeated merge adds
nothing. ``-v`` prints ``<table>: <n> records`` per table. ``-e`` is accepted
as the operators use it (its meaning is not public). Exit 1 on fatal errors.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable
from pathlib import Path

from antelope_ha.css30 import TABLES, append_rows, read_table, write_table
from antelope_ha.descriptor import parse_descriptor
from simsite.programs.cli import Parser, fail

PROG = "trexcerpt"
Row = dict[str, int | float | str]
ROW_KEY: dict[str, Callable[[Row], object]] = {
    "event": lambda r: r["evid"],
    "origin": lambda r: r["orid"],
    "arrival": lambda r: r["arid"],
    "assoc": lambda r: (r["arid"], r["orid"]),
    "wfdisc": lambda r: r["wfid"],
    "netmag": lambda r: r["magid"],
}
TABLES_COPIED = tuple(ROW_KEY)


def read_db(db: Path) -> dict[str, list[Row]]:
    tables = {}
    for name in TABLES_COPIED:
        path = Path(f"{db}.{name}")
        tables[name] = list(read_table(path, TABLES[name])) if path.exists() else []
    return tables


def window_rows(db: dict[str, list[Row]], start: float, end: float) -> dict[str, list[Row]]:
    def inside(r: Row) -> bool:
        return start <= float(r["time"]) < end

    origins = [r for r in db["origin"] if inside(r)]
    arrivals = [r for r in db["arrival"] if inside(r)]
    orids, arids = {r["orid"] for r in origins}, {r["arid"] for r in arrivals}
    return {
        "event": [r for r in db["event"] if r["prefor"] in orids],
        "origin": origins,
        "arrival": arrivals,
        "assoc": [r for r in db["assoc"] if r["arid"] in arids],
        "wfdisc": [r for r in db["wfdisc"] if inside(r)],
        "netmag": [r for r in db["netmag"] if r["orid"] in orids],
    }


def excerpt_descriptor(text: str, source: str) -> str:
    """INDB's descriptor without the lines that tie it to production (dbidserver, dbpath)."""
    d = parse_descriptor(text, source)
    return ("".join(d.other_lines) + f"schema {d.schema or 'css3.0'}\n"
            + (f"dblocks {d.dblocks}\n" if d.dblocks else ""))


def counts(tables: dict[str, list[Row]]) -> Iterable[str]:
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
            present = {ROW_KEY[name](r) for r in existing[name]}
            fresh = [r for r in window[name] if ROW_KEY[name](r) not in present]
            skipped[name] = len(window[name]) - len(fresh)
            if fresh:
                append_rows(f"{outdb}.{name}", TABLES[name], fresh)
            window[name] = fresh
    else:
        if any(existing.values()):
            return fail(PROG, f"output database {outdb} already has rows ({', '.join(counts(existing))}); "
                              "remove it, or use -a to append")
        outdb.parent.mkdir(parents=True, exist_ok=True)
        outdb.write_text(descriptor)
        skipped = {}
        for name, rows in window.items():
            write_table(f"{outdb}.{name}", TABLES[name], rows)
    if args.v:
        for name in TABLES_COPIED:
            note = f" ({skipped[name]} already present)" if skipped.get(name) else ""
            print(f"{name}: {len(window[name])} records{note}")
    return 0
