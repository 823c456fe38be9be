"""The site-side program of the consistency checks, run as
``python -m antelope_ha.idscan`` on the host that holds the database:

  ids DB --lastid FILE     max id, duplicates and deleted rows per key, checked
                           against lastid
  bounds DB BEFORE AFTER   the last moment DB recorded before BEFORE, the first after AFTER
  inventory DB START END [--ids KEY=FIRST-LAST ...]
                           the rows a recovery check needs (antelope_ha.completeness)
  narrow EXCERPT KEEP      keep in the excerpt only the lines KEEP lists (antelope_ha.excerpt)

Each prints one JSON object; errors go to stderr with exit status 1. Rows
deleted with dbmark (every field null) are skipped by bounds and inventory and
only counted, as information, by ids.
"""
from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from antelope_ha.completeness import coverage_bounds, take_inventory
from antelope_ha.css30 import Problem, TableFormatError, check_ids, deleted_rows, scan_ids
from antelope_ha.excerpt import narrow, read_keep
from antelope_ha.lastid import LastidError, read_lastid


@dataclass(frozen=True)
class KeyIds:
    """One id key of a database, as its owning table holds it."""

    max: int | None
    rows: int
    lastid: int | None
    duplicates: int  # id values used more than once
    examples: tuple[int, ...]  # some of them
    deleted: int  # rows deleted with dbmark
    nulls: int  # rows without an id that are not deleted rows


@dataclass(frozen=True)
class IdReport:
    """The ids of a database against its lastid table: what ``ids`` prints, and what
    the flows read back. Every problem is a ``Problem``, with what identifies it (so a
    problem seen before can be told from a new one); ``info`` is never a problem."""

    db: str
    keys: dict[str, KeyIds]
    found: tuple[Problem, ...]
    info: tuple[str, ...]

    @property
    def problems(self) -> list[str]:
        return [p.message for p in self.found]

    @property
    def ok(self) -> bool:
        return not self.found

    @property
    def duplicates(self) -> int:
        return sum(k.duplicates for k in self.keys.values())

    def max_ids(self) -> dict[str, int]:
        """The highest id of each key that has any."""
        return {key: k.max for key, k in self.keys.items() if k.max is not None}

    def to_json(self) -> dict:
        return {"db": self.db,
                "keys": {key: {**asdict(k), "examples": list(k.examples)} for key, k in self.keys.items()},
                "problems": self.problems, "ok": self.ok,
                "found": [{"key": p.key, "kind": p.kind, "message": p.message, "count": p.count, "ids": list(p.ids),
                           "span": list(p.span) if p.span else None} for p in self.found],
                "info": list(self.info), "duplicates": self.duplicates}

    @classmethod
    def from_json(cls, raw: dict) -> IdReport:
        keys = {key: KeyIds(**{**k, "examples": tuple(k["examples"])}) for key, k in raw["keys"].items()}
        found = tuple(Problem(p["key"], p["kind"], p["message"], p["count"], tuple(p["ids"]),
                              tuple(p["span"]) if p["span"] else None) for p in raw["found"])
        return cls(raw["db"], keys, found, tuple(raw["info"]))


def ids_report(db: str, lastid_path: str) -> IdReport:
    """The ids of ``db`` against the lastid table at ``lastid_path``."""
    scan = scan_ids(db)
    lastid = read_lastid(lastid_path) if Path(lastid_path).exists() else {}
    found = check_ids(scan, lastid)
    if not Path(lastid_path).exists():
        found.insert(0, Problem("-", "no_lastid", f"{lastid_path} does not exist: the ID server has no lastid table"))
    keys = {k: KeyIds(s.max_id, s.rows, lastid.get(k), s.duplicated_values, tuple(s.duplicate_examples), s.deleted,
                      s.nulls)
            for k, s in scan.keys.items()}
    return IdReport(db, keys, tuple(found), tuple(deleted_rows(scan)))


def id_ranges(specs: list[str]) -> dict[str, tuple[int, int]]:
    """``key=first-last`` arguments, e.g. ``orid=1001-1276``."""
    ranges = {}
    for spec in specs:
        key, _, span = spec.partition("=")
        first, _, last = span.partition("-")
        if not (key and first.isdigit() and last.isdigit()):
            raise ValueError(f"--ids {spec!r}: expected KEY=FIRST-LAST, e.g. orid=1001-1276")
        ranges[key] = (int(first), int(last))
    return ranges


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m antelope_ha.idscan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("ids")
    p.add_argument("db")
    p.add_argument("--lastid", required=True)
    p = sub.add_parser("bounds")
    p.add_argument("db")
    p.add_argument("before", type=float)
    p.add_argument("after", type=float)
    p = sub.add_parser("inventory")
    p.add_argument("db")
    p.add_argument("start", type=float)
    p.add_argument("end", type=float)
    p.add_argument("--ids", action="append", default=[], metavar="KEY=FIRST-LAST")
    p = sub.add_parser("narrow")
    p.add_argument("excerpt")
    p.add_argument("keep")
    args = parser.parse_args(argv)
    try:
        if args.what == "ids":
            out = ids_report(args.db, args.lastid).to_json()
        elif args.what == "bounds":
            out = coverage_bounds(args.db, args.before, args.after).to_json()
        elif args.what == "inventory":
            out = take_inventory(args.db, args.start, args.end, id_ranges(args.ids)).to_json()
        else:
            out = narrow(args.excerpt, read_keep(args.keep)).to_json()
    except (TableFormatError, LastidError, OSError, ValueError) as exc:
        print(f"idscan: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
