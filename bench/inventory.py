"""Benchmark of a recovery's completeness check on the site: the inventory of
one outage (completeness.take_inventory) and the bounds of MS's recording
(completeness.coverage_bounds), against the id scan of the same tables
(css30.scan_ids, which every recovery and fallback already runs) and ``cat``.

Generates a CSS3.0 database of about the requested size in a temporary
directory: one event every 10 s (1 origin, 1 event, 20 arrival, 20 assoc, 60
wfdisc rows), rows in time order as the writers append them. The outage is the
stretch of OUTAGE of the events at 80% of the night: the inventory lists the
rows timed in it, those carrying an id issued in it, and every row of their
units, as a recovery asks of each site. Timings are the best of 3 with a warm
page cache; peak memory is the child process's own.

    python -m bench.inventory [--size-mb 1024] [--quick]
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from antelope_ha.completeness import coverage_bounds, take_inventory
from antelope_ha.css30 import scan_ids
from bench import scan
from bench.scan import _best, _peak_rss_mb, _template

TABLES_WRITTEN = ("origin", "event", "arrival", "assoc", "wfdisc")
OUTAGE = 0.01  # share of the events in the outage
EVERY_S = 10.0
#: The inventory within 10x of the id scan: the previous release's was 10-12x on the nemesis's MS database
#: (4.8-5.6 s against 0.46 s) and doubled the length of its cycles.
TARGETS = {"scan": 10.0, "rss_mb": 200.0}
_T0 = 1_700_000_000.0

TEMPLATES = {
    "origin": _template("origin", ("orid", "evid"), ("time",), lat=46.5, lon=7.25, depth=8.0, nass=20, ndef=18,
                        etype="L", review="auto", algorithm="dbgenloc", auth="orbassoc", lddate=_T0),
    "event": _template("event", ("evid", "prefor"), auth="orbassoc", lddate=_T0),
    "arrival": _template("arrival", ("arid",), ("time",), sta="BAL", chan="HHZ", iphase="P", deltim=0.05,
                         amp=1234.5, per=0.4, snr=12.3, auth="dbp:auto", lddate=_T0),
    "assoc": _template("assoc", ("arid", "orid"), sta="BAL", phase="P", delta=0.52, seaz=120.5, esaz=300.25,
                       timeres=0.12, timedef="d", vmodel="iasp91", wgt=1.0, lddate=_T0),
    "wfdisc": _template("wfdisc", ("wfid",), ("time", "endtime"), sta="BAL", chan="HHZ", jdate=2023318,
                        nsamp=1000, samprate=100.0, calib=1.0, calper=1.0, instype="STS2", segtype="V",
                        datatype="sd", dir="wf/2023/318", dfile="BAL_HHZ_2023318_00.msd", lddate=_T0),
}
PER_EVENT = {"origin": 1, "event": 1, "arrival": 20, "assoc": 20, "wfdisc": 60}


def generate(db: Path, size_mb: int) -> tuple[float, float, dict[str, tuple[int, int]], int]:
    """Write the database; return the outage's window, the ids issued in it and the events written."""
    per_event = sum(n * len(TEMPLATES[t]) for t, n in PER_EVENT.items())
    events = max(100, size_mb * 2**20 // per_event)
    first, last = int(events * 0.8), int(events * (0.8 + OUTAGE))
    files = {t: open(f"{db}.{t}", "wb") for t in TABLES_WRITTEN}
    try:
        for chunk in range(0, events, 1000):
            out: dict[str, list[bytes]] = {t: [] for t in TABLES_WRITTEN}
            for e in range(chunk, min(events, chunk + 1000)):
                t, orid = _T0 + EVERY_S * e, e + 1
                out["origin"].append(TEMPLATES["origin"] % (t, orid, orid))
                out["event"].append(TEMPLATES["event"] % (orid, orid))
                for k in range(20):
                    arid = 20 * e + k + 1
                    out["arrival"].append(TEMPLATES["arrival"] % (t + 2.0 + k * 0.4, arid))
                    out["assoc"].append(TEMPLATES["assoc"] % (arid, orid))
                for k in range(60):
                    start = t + k * EVERY_S / 60
                    out["wfdisc"].append(TEMPLATES["wfdisc"] % (start, 60 * e + k + 1, start + 9.99))
            for table, lines in out.items():
                files[table].write(b"".join(lines))
    finally:
        for f in files.values():
            f.close()
    (db.parent / f"{db.name}").write_text("css3.0\n")
    ranges = {"orid": (first + 1, last), "evid": (first + 1, last), "arid": (20 * first + 1, 20 * last),
              "wfid": (60 * first + 1, 60 * last)}
    return _T0 + EVERY_S * first, _T0 + EVERY_S * last - 0.001, ranges, events


def run(size_mb: int, quick: bool = False) -> list[dict]:
    """Generate the database, time each figure, and return one row per figure (as bench.scan)."""
    repeat = 1 if quick else 3
    work = Path(tempfile.mkdtemp(prefix="inventorybench-"))
    try:
        db = work / "db"
        start, end, ranges, events = generate(db, size_mb)
        files = [f"{db}.{t}" for t in TABLES_WRITTEN]
        size = sum(os.path.getsize(f) for f in files)
        subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True)  # warm the cache
        cat_s, _ = _best(lambda: subprocess.run(["cat", *files], stdout=subprocess.DEVNULL, check=True), repeat)
        scan_s, _ = _best(lambda: scan_ids(db), repeat)
        inv_s, inv = _best(lambda: take_inventory(db, start, end, ranges), repeat)
        bounds_s, _ = _best(lambda: coverage_bounds(db, start, end), repeat)
        idle = _peak_rss_mb("import antelope_ha.completeness", db)
        peak = _peak_rss_mb(f"from antelope_ha.completeness import take_inventory\n"
                            f"take_inventory(sys.argv[1], {start!r}, {end!r}, {ranges!r})", db)
        in_scope = len(inv.rows)  # type: ignore[attr-defined]
        outage_events = ranges["orid"][1] - ranges["orid"][0] + 1
        expected = outage_events * sum(PER_EVENT.values())
        row = dict(baseline=None, ratio=None, target=None, met=None, answer=None)
        return [
            {**row, "figure": f"read limit, cat of {size / 2**20:.0f} MB", "value": cat_s, "unit": "s"},
            {**row, "figure": "id scan (scan_ids) vs read limit", "value": scan_s, "unit": "s", "baseline": cat_s,
             "ratio": scan_s / cat_s},
            {**row, "figure": f"inventory of an outage ({in_scope} rows in scope) vs id scan", "value": inv_s,
             "unit": "s", "baseline": scan_s, "ratio": inv_s / scan_s, "target": f"<= {TARGETS['scan']}x",
             "met": inv_s / scan_s <= TARGETS["scan"]},
            {**row, "figure": "bounds of MS's recording vs id scan", "value": bounds_s, "unit": "s",
             "baseline": scan_s, "ratio": bounds_s / scan_s},
            {**row, "figure": "inventory peak RSS (child process)", "value": peak, "unit": "MB", "baseline": idle,
             "ratio": peak / idle, "target": f"< {TARGETS['rss_mb']:.0f} MB", "met": peak < TARGETS["rss_mb"]},
            {**row, "figure": f"inventory lists the outage's {outage_events} events whole "
                              f"({expected} rows, {events} events in all)", "value": in_scope, "unit": "rows",
             "target": f"== {expected}", "met": in_scope == expected},
        ]
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    scan.main(argv, run, __doc__)


if __name__ == "__main__":
    main()
