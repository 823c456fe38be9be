"""The site-side program of the consistency checks, run as
``python -m antelope_ha.idscan`` on the host that holds the database:

  ids DB --lastid FILE     max id, duplicates and deleted rows per key, checked
                           against lastid
  gap DB BEFORE AFTER      MS's outage gap: after its last row before BEFORE,
                           up to its first row after that (AFTER is the fallback
                           time, for the message when no row follows yet)
  overlap DB EXCERPT       rows of the excerpt, and how many of them DB holds

Each prints one JSON object; errors go to stderr with exit status 1. Rows
deleted with dbmark (every field null) are skipped by gap and overlap and only
counted, as information, by ids.
"""
from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

from antelope_ha.css30 import TABLES, Problem, TableFormatError, check_ids, deleted_rows, read_table, scan_ids
from antelope_ha.lastid import LastidError, read_lastid

# Times are printed with 5 decimals (%17.5f); the gap starts just after MS's last row.
TIME_STEP = 0.001


def ids_report(db: str, lastid_path: str) -> dict:
    """The ids of ``db`` against the lastid table at ``lastid_path``: per key, and every
    problem twice, in words (``problems``) and with what identifies it (``found``, so a
    problem seen before can be told from a new one). ``info`` is never a problem."""
    scan = scan_ids(db)
    lastid = read_lastid(lastid_path) if Path(lastid_path).exists() else {}
    found = check_ids(scan, lastid)
    if not Path(lastid_path).exists():
        found.insert(0, Problem("-", "no_lastid", f"{lastid_path} does not exist: the ID server has no lastid table"))
    keys = {
        k: {"max": s.max_id, "rows": s.rows, "lastid": lastid.get(k), "duplicates": s.duplicated_values,
            "examples": list(s.duplicate_examples), "deleted": s.deleted, "nulls": s.nulls}
        for k, s in scan.keys.items()
    }
    return {"db": db, "keys": keys, "problems": [str(p) for p in found], "ok": not found,
            "found": [{"key": p.key, "kind": p.kind, "message": p.message, "count": p.count, "ids": list(p.ids),
                       "span": list(p.span) if p.span else None} for p in found],
            "info": deleted_rows(scan), "duplicates": sum(s.duplicated_values for s in scan.keys.values())}


def _times(db: str, table: str) -> Iterator[float]:
    path = Path(f"{db}.{table}")
    if path.exists():
        for row in read_table(path, TABLES[table]):
            yield float(row["time"])


def gap(db: str, before: float) -> dict:
    """The window of rows the database lacks around an outage that began before ``before``."""
    last = max((t for t in _times(db, "origin") if t < before), default=None)
    if last is None:
        return {"start": None, "end": None, "why": f"no origin row before {before}"}
    after = min((t for t in _times(db, "origin") if t > last), default=None)
    return {"start": last + TIME_STEP, "end": after}


# The columns that name a row: its own id, or the ids it links (assoc).
ROW_KEYS = {"origin": ("orid",), "event": ("evid",), "arrival": ("arid",), "assoc": ("arid", "orid"),
            "wfdisc": ("wfid",)}


def _row_keys(db: str, table: str) -> set[tuple]:
    path = Path(f"{db}.{table}")
    if not path.exists():
        return set()
    cols = ROW_KEYS[table]
    return {tuple(r[c] for c in cols) for r in read_table(path, TABLES[table])}


def overlap(db: str, excerpt: str) -> dict[str, dict[str, int]]:
    """Per table: rows in the excerpt, and how many of them ``db`` already holds
    (matched by id, so a merge can tell done, not done and half done apart)."""
    out: dict[str, dict[str, int]] = {"excerpt": {}, "present": {}}
    for table in ROW_KEYS:
        wanted = _row_keys(excerpt, table)
        out["excerpt"][table] = len(wanted)
        out["present"][table] = len(wanted & _row_keys(db, table)) if wanted else 0
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m antelope_ha.idscan", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("ids")
    p.add_argument("db")
    p.add_argument("--lastid", required=True)
    p = sub.add_parser("gap")
    p.add_argument("db")
    p.add_argument("before", type=float)
    p.add_argument("after", type=float)
    p = sub.add_parser("overlap")
    p.add_argument("db")
    p.add_argument("excerpt")
    args = parser.parse_args(argv)
    try:
        if args.what == "ids":
            out = ids_report(args.db, args.lastid)
        elif args.what == "gap":
            out = gap(args.db, args.before)
        else:
            out = overlap(args.db, args.excerpt)
    except (TableFormatError, LastidError, OSError, ValueError) as exc:
        print(f"idscan: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
