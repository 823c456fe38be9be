"""Benchmark of css30.scan_ids against its baselines, in one run, in four row orders.

Generates a CSS3.0 database of about the requested size in a temporary
directory (per event: 1 origin, 1 event, 20 arrival, 20 assoc, 60 wfdisc rows;
ids increasing with gaps, as when two sites share one id server), then writes
its owning tables in each order real tables come in and times, with a warm
page cache:

  read limit   ``cat`` of the owning table files to /dev/null
  awk|sort     an awk | sort -n | uniq -c | awk pipeline computing the same answer
  scan_ids     this project's scan, in process; its peak memory in a child process

The orders:

  rising       rows in id order, as the writers append them
  shuffled     rows in random order
  time-sorted  as dbsort by time leaves a table: each row's time is its write
               order plus up to WINDOW rows of jitter (the wfdiscs of one hour's
               segments, the arrivals of one event, start seconds apart)
  merged       rising, with MERGED of the rows (a block of ids BUS issued during an
               outage) missing from their place and appended at the end, as a
               recovery merge leaves the table

and last the rising tables with DUPLICATES rows appended again (a merge applied
twice), which sends the scan through its second pass: answers checked against
awk's, no read-limit target.

    python -m bench.scan --size-mb 1024 [--size-mb 4096] [--quick]
"""
from __future__ import annotations

import argparse
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from antelope_ha.css30 import ID_OWNER, TABLES, scan_ids

OWNED = ("origin", "event", "arrival", "wfdisc")  # the owning tables this database has
PER_EVENT = {"origin": 1, "event": 1, "arrival": 20, "assoc": 20, "wfdisc": 60}
KEY_OF = {table: key for key, table in ID_OWNER.items()}
TARGETS = {"read": 2.0, "awk": 5.0, "rss_mb": 200.0}
DUPLICATES = 10
WINDOW = 60
MERGED = 0.02
ORDERS = ("rising", "shuffled", "time-sorted", "merged")
SEED = 13


def _template(table: str, ids: tuple[str, ...], times: tuple[str, ...] = (), **values: object) -> bytes:
    """A record of ``table`` as a bytes %-template with ``%8d`` in place of each id field
    and ``%17.5f`` in place of each time field: its values go in the order of the fields."""
    t = TABLES[table]
    line = t.format_row({**{k: 0 for k in ids + times}, **values}).encode("latin-1")
    holes = [(t.offset(n), 8, b"%8d") for n in ids] + [(t.offset(n), 17, b"%17.5f") for n in times]
    for off, width, hole in sorted(holes, reverse=True):
        line = line[:off] + hole + line[off + width:]
    return line


_T0 = 1_700_000_000.0
TEMPLATES = {
    "origin": _template("origin", ("orid", "evid"), lat=46.5, lon=7.25, depth=8.0, time=_T0, nass=20,
                        ndef=18, etype="L", review="auto", algorithm="dbgenloc", auth="orbassoc",
                        lddate=_T0),
    "event": _template("event", ("evid", "prefor"), auth="orbassoc", lddate=_T0),
    "arrival": _template("arrival", ("arid",), sta="BAL", time=_T0 + 12.5, chan="HHZ", iphase="P",
                         deltim=0.05, amp=1234.5, per=0.4, snr=12.3, auth="dbp:auto", lddate=_T0),
    "assoc": _template("assoc", ("arid", "orid"), sta="BAL", phase="P", delta=0.52, seaz=120.5,
                       esaz=300.25, timeres=0.12, timedef="d", vmodel="iasp91", wgt=1.0, lddate=_T0),
    "wfdisc": _template("wfdisc", ("wfid",), sta="BAL", chan="HHZ", time=_T0, jdate=2023318,
                        endtime=_T0 + 3599.99, nsamp=360000, samprate=100.0, calib=1.0, calper=1.0,
                        instype="STS2", segtype="V", datatype="sd", dir="wf/2023/318",
                        dfile="BAL_HHZ_2023318_00.msd", lddate=_T0),
}

Rows = dict[str, list]  # per table, each row's ids: an int, or a tuple for two-id templates


def generate(db: Path, size_mb: int) -> tuple[Rows, dict[str, int]]:
    """Write the assoc table (not scanned) and return the id tuples of each owning
    table's rows, in id order, and the next unused id per key."""
    per_event = sum(n * TABLES[t].record_length for t, n in PER_EVENT.items())
    events = max(1, size_mb * 2**20 // per_event)
    next_id = {"orid": 1, "evid": 1, "arid": 1, "wfid": 1}

    def ids(key: str, count: int) -> list[int]:
        # every other id or so: the id server also serves the other site
        start = next_id[key]
        out = [start + 2 * i + (i % 3 == 0) for i in range(count)]
        next_id[key] = out[-1] + 2
        return out

    orids, evids = ids("orid", events), ids("evid", events)
    arids, wfids = ids("arid", 20 * events), ids("wfid", 60 * events)
    with open(f"{db}.assoc", "wb") as f:
        for first in range(0, len(arids), 40_000):
            f.write(b"".join(TEMPLATES["assoc"] % (a, orids[i // 20])
                             for i, a in enumerate(arids[first:first + 40_000], first)))
    rows = {"origin": list(zip(orids, evids)), "event": list(zip(evids, orids)), "arrival": arids, "wfdisc": wfids}
    return rows, next_id


def in_order(rows: list, order: str, rng: random.Random) -> list:
    """The rows of one table in one of ORDERS (module docstring)."""
    if order == "shuffled":
        out = list(rows)
        rng.shuffle(out)
        return out
    if order == "time-sorted":
        return [r for _, r in sorted(((i + rng.uniform(0, WINDOW), r) for i, r in enumerate(rows)),
                                     key=lambda kr: kr[0])]
    if order == "merged":
        n = max(1, int(len(rows) * MERGED))
        at = len(rows) * 4 // 5
        return rows[:at] + rows[at + n:] + rows[at:at + n]
    return rows


def write_owned(db: Path, rows: Rows, order: str) -> None:
    rng = random.Random(SEED)
    for table in OWNED:
        ordered = in_order(rows[table], order, rng)
        with open(f"{db}.{table}", "wb") as f:
            for first in range(0, len(ordered), 40_000):
                f.write(b"".join(TEMPLATES[table] % r for r in ordered[first:first + 40_000]))


def append_merge(db: Path, next_id: dict[str, int]) -> None:
    """Append what a recovery merge could leave: a block of new ids from the other site,
    then DUPLICATES rows whose ids are already in the table (a merge applied twice)."""
    for table in OWNED:
        key = KEY_OF[table]
        path = Path(f"{db}.{table}")
        L = TABLES[table].record_length
        rows = path.stat().st_size // L
        with open(path, "r+b") as f:
            dup = []
            for i in range(DUPLICATES):
                f.seek((rows * (i + 1) // (DUPLICATES + 1)) * L)
                dup.append(f.read(L))
            block = []
            for i in range(1000):
                rec = bytearray(dup[i % len(dup)])
                off = TABLES[table].offset(key)
                rec[off:off + 8] = b"%8d" % (next_id[key] + 1000 + i)
                block.append(bytes(rec))
            f.seek(0, os.SEEK_END)
            f.write(b"".join(block) + b"".join(dup))


def _files(db: Path) -> list[str]:
    return [f"{db}.{t}" for t in OWNED]


def scan_answer(db: Path) -> dict[str, tuple]:
    scan = scan_ids(db, OWNED)
    return {k: (s.rows, s.nulls, s.max_id or 0, s.duplicated_values, s.duplicate_rows, s.duplicate_examples)
            for k, s in scan.keys.items()}


def _awk_pipeline(path: str, offset: int) -> str:
    return (
        f"LC_ALL=C awk '{{ print substr($0, {offset + 1}, 8) + 0 }}' {path}"
        " | LC_ALL=C sort -n | LC_ALL=C uniq -c"
        " | LC_ALL=C awk '{ rows += $1; if ($2 <= 0) nulls += $1; else { max = $2;"
        " if ($1 > 1) { dv++; dr += $1 - 1; if (dv <= 10) ex = ex (dv > 1 ? \",\" : \"\") $2 } } }"
        " END { printf \"%d %d %d %d %d %s\\n\", rows, nulls, max, dv, dr, ex }'"
    )


def awk_answer(db: Path) -> dict[str, tuple]:
    out = {}
    for table in OWNED:
        key = KEY_OF[table]
        line = subprocess.run(_awk_pipeline(f"{db}.{table}", TABLES[table].offset(key)), shell=True,
                              check=True, capture_output=True, text=True).stdout.split()
        rows, nulls, mx, dv, dr = map(int, line[:5])
        examples = tuple(int(x) for x in line[5].split(",")) if len(line) > 5 else ()
        out[key] = (rows, nulls, mx, dv, dr, examples)
    return out


def _best(fn, repeat: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def _peak_rss_mb(code: str, db: Path) -> float:
    """Peak resident memory of a child Python running ``code`` (with ``db`` as argv[1]).

    Read from the child's own VmHWM: on Linux ru_maxrss survives exec, so a child's
    ru_maxrss (RUSAGE_SELF or, in the parent, RUSAGE_CHILDREN) starts at this process's size.
    """
    prog = (f"import resource, sys\n{code}\n"
            "try:\n    print(open('/proc/self/status').read().split('VmHWM:')[1].split()[0])\n"
            "except OSError:\n    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)")
    out = subprocess.run([sys.executable, "-c", prog, str(db)], check=True, capture_output=True, text=True,
                         cwd=Path(__file__).resolve().parent.parent)
    return int(out.stdout.split()[-1]) / 1024


def run(size_mb: int, quick: bool = False) -> list[dict]:
    """Generate a database of about size_mb MB, measure each order, and return one row
    per figure: figure, value, unit, baseline, ratio, target, met, answer."""
    repeat = 1 if quick else 3
    work = Path(tempfile.mkdtemp(prefix="scanbench-"))
    try:
        db = work / "db"
        rows_of, next_id = generate(db, size_mb)
        files = _files(db)
        idle = _peak_rss_mb("import antelope_ha.css30", db)
        out: list[dict] = []

        def measure(label: str, read_target: float | None) -> None:
            size = sum(os.path.getsize(f) for f in files)
            subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the cache
            cat_s, _ = _best(lambda: subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True), repeat)
            awk_s, awk = _best(lambda: awk_answer(db), 1)
            scan_s, ours = _best(lambda: scan_answer(db), repeat)
            peak = _peak_rss_mb("from antelope_ha.css30 import scan_ids\nscan_ids(sys.argv[1])", db)
            out.extend([
                dict(figure=f"{label}: read limit, cat of {size / 2**20:.0f} MB", value=cat_s, unit="s",
                     baseline=None, ratio=None, target=None, met=None, answer=None),
                dict(figure=f"{label}: awk|sort|uniq pipeline", value=awk_s, unit="s",
                     baseline=None, ratio=None, target=None, met=None, answer=awk),
                dict(figure=f"{label}: scan_ids vs read limit", value=scan_s, unit="s", baseline=cat_s,
                     ratio=scan_s / cat_s, target=read_target and f"<= {read_target}x",
                     met=read_target and scan_s / cat_s <= read_target, answer=ours),
                dict(figure=f"{label}: scan_ids speed-up over awk", value=scan_s, unit="s", baseline=awk_s,
                     ratio=awk_s / scan_s, target=f">= {TARGETS['awk']}x faster",
                     met=awk_s / scan_s >= TARGETS["awk"], answer=None),
                dict(figure=f"{label}: scan_ids peak RSS (child process)", value=peak, unit="MB",
                     baseline=idle, ratio=peak / idle, target=f"< {TARGETS['rss_mb']:.0f} MB",
                     met=peak < TARGETS["rss_mb"], answer=None),
            ])

        for order in ORDERS:
            write_owned(db, rows_of, order)
            measure(order, TARGETS["read"])
        write_owned(db, rows_of, "rising")
        append_merge(db, next_id)
        # a merged table with duplicates needs the second pass, a second read: no read-limit target
        measure(f"merged twice, {DUPLICATES} duplicates", None)
        return out
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _print(rows: list[dict]) -> None:
    def num(x, unit=""):
        return "" if x is None else f"{x:.3f}{unit}" if isinstance(x, float) else str(x)

    table = [("figure", "measured", "baseline", "ratio", "target", "met")]
    for r in rows:
        table.append((r["figure"], num(r["value"], " " + r["unit"]), num(r["baseline"], " " + r["unit"]),
                      num(r["ratio"], "x"), r["target"] or "", {None: "", True: "yes", False: "NO"}[r["met"]]))
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    agree = [r for r in rows if r["answer"] is not None]
    for awk, ours in zip(agree[0::2], agree[1::2]):
        print(f"{awk['figure'].split(':')[0]}: scan answer {'equals' if awk['answer'] == ours['answer'] else 'DIFFERS FROM'}"
              f" the awk answer: {ours['answer']}")


def main(argv: list[str] | None = None, measure: Callable[[int, bool], list[dict]] = run,
         doc: str = __doc__) -> None:
    """The command line of a benchmark on generated databases of given sizes (this one's by default)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--size-mb", type=int, action="append", help="database size (repeatable); default 1024")
    parser.add_argument("--quick", action="store_true", help="one repetition per timing instead of best of 3")
    args = parser.parse_args(argv)
    for size in args.size_mb or [1024]:
        print(f"\n== {size} MB database, Python {sys.version.split()[0]}, {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}")
        _print(measure(size, args.quick))
    print(f"\n(maxrss of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB)")


if __name__ == "__main__":
    main()
