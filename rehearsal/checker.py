"""The independent checker: what a rehearsal did to the data, read from the files.

It judges a simulated pair after a run from three kinds of evidence only:

- every CSS3.0 table file of both sites (``<site>/db/db.<table>``) and the
  authoritative site's ``dbids.lastid``;
- the writers' own records of what they wrote (``<site>/records/<prog>.written``,
  one JSON line per packet with each row's exact line: simsite/programs/writer.py);
- the ID servers' own records of when they served (``<site>/records/dbids.serving``,
  start / heartbeat / stop lines: simsite/programs/dbids.py).

It imports nothing of the code that moves rows (antelope_ha/excerpt.py,
completeness.py, outages.py, tasks/, flows/): only ``antelope_ha.css30`` for the
CSS3.0 layouts (TABLES, ID_KEYS, ID_OWNER) and its plain line reader
(``read_records``), so that a record is parsed as Antelope's schema says and not
as a second, private reading of it would.

The rules, each independent of how recovery decides what to merge:

- **rows lost**: for every packet a writer recorded (from the first to the last
  packet the authoritative site's own writer recorded, in each part of a run
  stopped and continued: before, that site's ORB had not begun; after, packets
  are still in flight at the end), the authoritative database holds every row
  of at least one recorded copy, byte for byte; otherwise the rows of the most
  complete copy that are absent are lost.
- **ids used twice**: one value of a key naming two different rows in its
  owning table, among everything the writers recorded and everything in either
  site's tables.
- **orphans**: a row of the authoritative database whose key (evid, orid, arid,
  wfid, ...) names no row of the key's owning table; except a torn row.
- **torn rows**, counted apart: such a row that no writer recorded, written
  (its lddate) after a writer's record by a process that never recorded again:
  the half of a packet the writer was writing when it was killed or its site
  lost power (it appends a packet's rows table by table, as Antelope's writers
  add rows one at a time, and records the packet after them). The writer
  wrote that packet again, whole, when it restarted, which the rows-lost rule
  checks; the half stays until someone removes it. A row a procedure copied
  from the other site is in that site's writer's record, so it can never be
  torn: an orphan the procedures made is always an orphan.
- **ids above lastid**: a key value in either site's owning table above the
  authoritative ``dbids.lastid`` (each value once).
- **two ID servers / none**: the union of each site's serving intervals (a
  process served from its ``start`` line to its last line); time both sites
  served, and time neither did from the first start of an ID server to the
  last sign of one (in each part of a run stopped and continued); each change
  of serving site is a handover with the seconds without an ID server between.
"""
from __future__ import annotations

import json
from collections import defaultdict
from math import inf
from dataclasses import asdict, dataclass, field
from pathlib import Path

from antelope_ha.css30 import ID_KEYS, ID_OWNER, REPEATS_IN_OWNER, TABLES, read_records, read_table

SITES = ("ms", "bus")
WRITERS = ("orb2dbt", "orb2wf")
LISTED = 20  # details kept per finding
Interval = tuple[float, float]


@dataclass
class Handover:
    from_site: str
    to_site: str
    at: float  # when the new site's ID server started
    seconds_without: float  # between the old site's last sign of serving and the new one's start


@dataclass
class CheckReport:
    authority: str
    tables_read: int = 0
    rows_in_tables: dict[str, int] = field(default_factory=dict)  # per site
    packets_written: int = 0
    rows_written: int = 0
    packets_checked: int = 0
    rows_lost: int = 0
    ids_used_twice: int = 0
    orphans: int = 0
    torn_rows: int = 0
    ids_above_lastid: int = 0
    seconds_two_id_servers: float = 0.0
    seconds_no_id_server: float = 0.0
    id_server_restarts: int = 0  # a site's ID server served again after a gap, no other site between
    handovers: list[Handover] = field(default_factory=list)
    details: dict[str, list[str]] = field(default_factory=dict)  # per finding, the first LISTED

    @property
    def passed(self) -> bool:
        return not (self.rows_lost or self.ids_used_twice or self.orphans or self.ids_above_lastid
                    or self.seconds_two_id_servers)

    def note(self, finding: str, text: str) -> None:
        listed = self.details.setdefault(finding, [])
        if len(listed) < LISTED:
            listed.append(text)

    def as_dict(self) -> dict:
        return {**asdict(self), "passed": self.passed}


@dataclass(frozen=True)
class Written:
    """One packet's rows as a writer recorded them."""

    site: str
    prog: str
    seq: int
    t: float
    pid: int
    idserver: str
    rows: tuple[tuple[str, str], ...]  # (table, exact line)


def read_written(pair_root: Path) -> list[Written]:
    """Every writer's record of both sites. A last line cut by a kill is skipped:
    the writer writes its record after the rows, so the rows are on disk and
    only the record of them is missing."""
    out = []
    for site in SITES:
        for prog in WRITERS:
            path = pair_root / site / "records" / f"{prog}.written"
            if not path.exists():
                continue
            for line in path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue
                out.append(Written(site, prog, rec["seq"], rec["t"], rec["pid"], rec["idserver"],
                                   tuple((t, text) for t, text in rec["rows"])))
    return out


def read_tables(pair_root: Path, report: CheckReport) -> dict[str, dict[str, list[tuple[dict, str]]]]:
    """Every table file of each site: site -> table -> [(record, exact line)]."""
    sites: dict[str, dict[str, list[tuple[dict, str]]]] = {}
    for site in SITES:
        db_dir = pair_root / site / "db"
        tables: dict[str, list[tuple[dict, str]]] = {}
        for path in sorted(db_dir.glob("db.*")):
            name = path.name.removeprefix("db.")
            if name not in TABLES:
                continue
            tables[name] = [(row, raw.decode("latin-1")) for row, raw in read_records(path, TABLES[name])]
            report.tables_read += 1
        sites[site] = tables
        report.rows_in_tables[site] = sum(len(rows) for rows in tables.values())
    return sites


def own_id(table: str, line: str) -> tuple[str, int] | None:
    """The key a row of ``table`` issues (its owning key) and its value."""
    for key, owner in ID_OWNER.items():
        if owner == table and key not in REPEATS_IN_OWNER:
            value = TABLES[table].parse_row(line)[key]
            return (key, int(value)) if int(value) > 0 else None
    return None


def due_spans(written: list[Written], authority: str, windows: list[Interval] | None) -> dict[str, list[Interval]]:
    """Each writer's packets that must be in the authoritative database: from
    the first to the last its copy at the authoritative site recorded, in each
    part of the run."""
    spans: dict[str, list[Interval]] = {}
    for prog in WRITERS:
        parts: dict[Interval, list[int]] = defaultdict(list)
        for w in written:
            if w.site == authority and w.prog == prog:
                part = next(((a, b) for a, b in windows or [(-inf, inf)] if a <= w.t <= b), None)
                if part is not None:
                    parts[part].append(w.seq)
        spans[prog] = [(min(seqs), max(seqs)) for seqs in parts.values()]
    return spans


def check_lost(written: list[Written], auth_tables: dict[str, list[tuple[dict, str]]], authority: str,
               report: CheckReport, windows: list[Interval] | None = None) -> None:
    held = {table: {line for _, line in rows} for table, rows in auth_tables.items()}
    spans = due_spans(written, authority, windows)
    copies: dict[tuple[str, int], list[Written]] = defaultdict(list)
    for w in written:
        copies[(w.prog, w.seq)].append(w)
    for (prog, seq), ws in sorted(copies.items()):
        if not any(lo <= seq <= hi for lo, hi in spans[prog]):
            continue
        report.packets_checked += 1
        missing = min(([r for r in w.rows if r[1] not in held.get(r[0], ())] for w in ws), key=len)
        if missing:
            report.rows_lost += len(missing)
            table, line = missing[0]
            report.note("rows_lost", f"packet {seq} ({prog}): {len(missing)} rows absent from {authority}, "
                                     f"first {table} {line.strip()[:60]!r} (copies written at "
                                     + ", ".join(sorted({w.site for w in ws})) + ")")


def check_twice(written: list[Written], tables: dict[str, dict[str, list[tuple[dict, str]]]],
                report: CheckReport) -> None:
    rows_of: dict[tuple[str, int], set[str]] = defaultdict(set)
    where: dict[tuple[str, int], set[str]] = defaultdict(set)
    for w in written:
        for table, line in w.rows:
            kid = own_id(table, line)
            if kid:
                rows_of[kid].add(line)
                where[kid].add(f"{w.site} {w.prog} record")
    for site, site_tables in tables.items():
        for key, owner in ID_OWNER.items():
            if key in REPEATS_IN_OWNER:
                continue
            for row, line in site_tables.get(owner, []):
                value = int(row[key])
                if value > 0:
                    rows_of[(key, value)].add(line)
                    where[(key, value)].add(f"{site} {owner}")
    for (key, value), lines in sorted(rows_of.items()):
        if len(lines) > 1:
            report.ids_used_twice += 1
            report.note("ids_used_twice", f"{key} {value}: {len(lines)} different rows ({', '.join(sorted(where[(key, value)]))})")


def deaths(written: list[Written]) -> list[Interval]:
    """When a writer process may have stopped mid-packet: from each process's
    last record to the next record of that writer (by another pid), or on."""
    runs: dict[tuple[str, str], list[tuple[float, int]]] = defaultdict(list)
    for w in written:
        runs[(w.site, w.prog)].append((w.t, w.pid))
    spans = []
    for records in runs.values():
        records.sort()
        spans += [(t, nxt) for (t, pid), (nxt, other) in zip(records, records[1:]) if other != pid]
        spans.append((records[-1][0], inf))
    return spans


def check_orphans(auth_tables: dict[str, list[tuple[dict, str]]], authority: str, written: list[Written],
                  report: CheckReport) -> None:
    recorded = {(table, line) for w in written for table, line in w.rows}
    cut_short = deaths(written)
    for key, places in ID_KEYS.items():
        owner = ID_OWNER.get(key)
        if owner is None:
            continue
        issued = {int(row[key]) for row, _ in auth_tables.get(owner, [])}
        for table, fld in places:
            if (table, fld) == (owner, key):
                continue
            for row, line in auth_tables.get(table, []):
                value = int(row[fld])
                if value <= 0 or value in issued:
                    continue
                what = f"{authority} {table}.{fld} {value}: no {owner} row with {key} {value}"
                lddate = float(row["lddate"])
                if (table, line) not in recorded and any(a < lddate <= b for a, b in cut_short):
                    report.torn_rows += 1
                    report.note("torn_rows", f"{what} (unrecorded, written {lddate:.3f} "
                                             "as its writer stopped mid-packet)")
                else:
                    report.orphans += 1
                    report.note("orphans", what)


def check_lastid(pair_root: Path, tables: dict[str, dict[str, list[tuple[dict, str]]]], authority: str,
                 report: CheckReport) -> None:
    path = pair_root / authority / "dbids" / "dbids.lastid"
    lastid = {str(r["keyname"]): int(r["keyvalue"]) for r in read_table(path, TABLES["lastid"])}
    above: dict[tuple[str, int], list[str]] = defaultdict(list)
    for site, site_tables in tables.items():
        for key, owner in ID_OWNER.items():
            for row, _ in site_tables.get(owner, []):
                if int(row[key]) > lastid.get(key, 0):
                    above[(key, int(row[key]))].append(site)
    report.ids_above_lastid = len(above)
    for (key, value), sites in sorted(above.items()):
        report.note("ids_above_lastid", f"{key} {value} > {authority} lastid {lastid.get(key, 0)} "
                                        f"(in {', '.join(sites)})")


def serving_intervals(path: Path) -> list[Interval]:
    """From one site's serving record: each process's [start, last line]."""
    if not path.exists():
        return []
    spans: dict[int, list[float]] = {}
    done: list[Interval] = []
    for line in path.read_text().splitlines():
        parts = line.split()
        if len(parts) < 3:
            continue  # a line cut by a power-off
        t, event, pid = float(parts[0]), parts[1], int(parts[2])
        if event == "start":
            if pid in spans:
                done.append((spans[pid][0], spans[pid][1]))
            spans[pid] = [t, t]
        elif pid in spans:
            spans[pid][1] = t
            if event == "stop":
                done.append((spans[pid][0], t))
                del spans[pid]
    return sorted(done + [(a, b) for a, b in spans.values()])


def union(intervals: list[Interval]) -> list[Interval]:
    out: list[list[float]] = []
    for a, b in sorted(intervals):
        if out and a <= out[-1][1]:
            out[-1][1] = max(out[-1][1], b)
        else:
            out.append([a, b])
    return [(a, b) for a, b in out]


def length(intervals: list[Interval]) -> float:
    return sum(b - a for a, b in intervals)


def intersect(xs: list[Interval], ys: list[Interval]) -> list[Interval]:
    return [(max(a, c), min(b, d)) for a, b in xs for c, d in ys if max(a, c) < min(b, d)]


def check_serving(pair_root: Path, report: CheckReport, windows: list[Interval] | None) -> None:
    served = {site: union(serving_intervals(pair_root / site / "records" / "dbids.serving")) for site in SITES}
    both = intersect(served["ms"], served["bus"])
    report.seconds_two_id_servers = round(length(both), 3)
    for a, b in both:
        report.note("two_id_servers", f"ms and bus both served from {a:.3f} to {b:.3f} ({b - a:.3f} s)")
    anyone = union(served["ms"] + served["bus"])
    if not anyone:
        return
    running = []  # in each part, from the first start of an ID server to the last sign of one
    for a, b in windows or [(anyone[0][0], anyone[-1][1])]:
        if inside := intersect(anyone, [(a, b)]):
            running.append((inside[0][0], inside[-1][1]))
    report.seconds_no_id_server = round(max(0.0, length(running) - length(intersect(anyone, running))), 3)
    timeline = sorted((a, b, site) for site, spans in served.items() for a, b in spans)
    for (_, end, site), (start, _, nxt) in zip(timeline, timeline[1:]):
        if nxt != site:
            report.handovers.append(Handover(site, nxt, start, round(max(0.0, start - end), 3)))
        elif start > end:
            report.id_server_restarts += 1


def check(pair_root: Path, authority: str = "ms", windows: list[Interval] | None = None) -> CheckReport:
    """Judge the pair under ``pair_root`` (sites ``ms`` and ``bus``), ``authority``
    holding the authoritative database after the run; ``windows``, each part of
    a run stopped and continued, from the start of its pair to its stop (default:
    the run is one part)."""
    report = CheckReport(authority)
    tables = read_tables(pair_root, report)
    written = read_written(pair_root)
    report.packets_written = len({(w.prog, w.seq) for w in written})
    report.rows_written = sum(len(w.rows) for w in written)
    check_lost(written, tables[authority], authority, report, windows)
    check_twice(written, tables, report)
    check_orphans(tables[authority], authority, written, report)
    check_lastid(pair_root, tables, authority, report)
    check_serving(pair_root, report, windows)
    return report


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m rehearsal.checker", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("pair", type=Path, help="the simulated pair's directory (with ms/ and bus/)")
    parser.add_argument("--authority", default="ms", choices=SITES, help="the site holding the authoritative db")
    parser.add_argument("--parts", type=Path, metavar="FILE",
                        help="a run stopped and continued: its nemesis-run.json, whose windows (each part's "
                             "start to stop) the run is judged in")
    args = parser.parse_args(argv)
    missing = [str(args.pair / s / "db") for s in SITES if not (args.pair / s / "db").is_dir()]
    lastid = args.pair / args.authority / "dbids" / "dbids.lastid"
    if missing or not lastid.is_file():
        parser.error(f"{args.pair} is not a simulated pair's directory: no {', '.join(missing) or lastid}; "
                     "give the directory `python -m simsite create` made (it holds ms/ and bus/)")
    windows = None
    if args.parts:
        try:
            windows = [(float(a), float(b)) for a, b in json.loads(args.parts.read_text())["windows"]]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            parser.error(f"--parts {args.parts}: not a run's nemesis-run.json with its windows ({exc})")
    report = check(args.pair, args.authority, windows)
    print(json.dumps(report.as_dict(), indent=2))
    return 0 if report.passed else 1


if __name__ == "__main__":
    raise SystemExit(main())
