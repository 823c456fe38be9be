"""The completeness rule of a recovery (antelope_ha/completeness.py), on
CSS3.0 databases written to disk as the simulated writers write them, and on
the real sample databases."""
from __future__ import annotations

import random
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from antelope_ha import completeness as K
from antelope_ha import outages as O
from antelope_ha.baseline import judge, take
from antelope_ha.css30 import ID_KEYS, ID_OWNER, TABLES, Problem, read_records, read_table, write_table
from antelope_ha.excerpt import narrow, plan_excerpts
from antelope_ha.idscan import IdReport
from antelope_ha.state import Authority, HAState

SAMPLES = Path(__file__).parent / "data" / "antelope-samples"
Rows = dict[str, list[dict]]

# A night on a pair, one moment a second: both sites record 1000-1009; MS is off
# 1010-1019 and BUS takes over at 1010.5; MS's ORB is back at 1020 while BUS
# still issues ids until 1022; MS takes authority back at 1025.
FAILOVER, FALLBACK = 1010.5, 1025.0
MS_LAST = 1009.0  # MS's last moment before the outage
GAP = [float(t) for t in range(1010, 1020)]
BUS_LASTID_AT_FAILOVER = 5000


class Ids:
    """An ID server: the next id per key."""

    def __init__(self, start: int):
        self.next = defaultdict(lambda: start + 1)

    def __call__(self, key: str) -> int:
        value = self.next[key]
        self.next[key] += 1
        return value

    def lastid(self) -> dict[str, int]:
        return {k: v - 1 for k, v in self.next.items()}


def record(rows: Rows, t: float, ids: Ids) -> None:
    """What the writers write for one ORB packet: an event, its origin at t, a P
    and an S arrival (t + 3, t + 12) with their assocs, a waveform segment [t, t + 1)."""
    evid, orid = ids("evid"), ids("orid")
    rows["event"].append({"evid": evid, "prefor": orid, "auth": "orb2dbt", "lddate": t})
    rows["origin"].append({"lat": 46.0, "lon": 11.0, "depth": 10.0, "time": t, "orid": orid, "evid": evid,
                           "jdate": 2026334, "nass": 2, "ndef": 2, "lddate": t})
    for phase, after in (("P", 3.0), ("S", 12.0)):
        arid = ids("arid")
        rows["arrival"].append({"sta": "STA1", "time": t + after, "arid": arid, "jdate": 2026334, "chan": "HHZ",
                                "iphase": phase, "lddate": t})
        rows["assoc"].append({"arid": arid, "orid": orid, "sta": "STA1", "phase": phase, "lddate": t})
    rows["wfdisc"].append({"sta": "STA1", "chan": "HHZ", "time": t, "wfid": ids("wfid"), "jdate": 2026334,
                           "endtime": t + 0.975, "nsamp": 40, "samprate": 40.0, "lddate": t})


def night() -> tuple[Rows, Rows, Ids, Ids]:
    """MS's own rows, BUS's rows, and the two ID servers after the night."""
    ms, bus = defaultdict(list), defaultdict(list)
    ms_ids = Ids(0)
    for t in range(1000, 1010):
        record(ms, float(t), ms_ids)
        record(bus, float(t), ms_ids)
    bus_ids = Ids(BUS_LASTID_AT_FAILOVER)
    for t in range(1010, 1023):
        record(bus, float(t), bus_ids)
    handed = Ids(0)
    handed.next.update(bus_ids.next)  # MS starts from BUS's lastid
    for t in range(1020, 1030):
        record(ms, float(t), handed)
    for t in range(1023, 1030):
        record(bus, float(t), handed)
    return ms, bus, bus_ids, handed


def in_gap(bus: Rows) -> Rows:
    """BUS's events (and waveform segments) of the gap, whole."""
    orids = {o["orid"] for o in bus["origin"] if o["time"] in GAP}
    arids = {a["arid"] for a in bus["assoc"] if a["orid"] in orids}
    return {"event": [e for e in bus["event"] if e["prefor"] in orids],
            "origin": [o for o in bus["origin"] if o["orid"] in orids],
            "arrival": [a for a in bus["arrival"] if a["arid"] in arids],
            "assoc": [a for a in bus["assoc"] if a["orid"] in orids],
            "wfdisc": [w for w in bus["wfdisc"] if w["time"] in GAP]}


def write_db(db: Path, *parts: Rows) -> Path:
    db.parent.mkdir(parents=True, exist_ok=True)
    db.write_text("schema css3.0\n")
    for table in ("event", "origin", "arrival", "assoc", "wfdisc"):
        write_table(f"{db}.{table}", TABLES[table], [r for p in parts for r in p.get(table, [])])
    return db


def night_state() -> HAState:
    return HAState(authority=Authority(site="ms", epoch=3, since=FALLBACK, lastid=night()[2].lastid()),
                    history=[Authority(site="ms", epoch=1, since=900.0),
                             Authority(site="bus", epoch=2, since=FAILOVER,
                                       lastid={k: BUS_LASTID_AT_FAILOVER for k in ("evid", "orid", "arid", "wfid")})])


def outage() -> K.Outage:
    [found] = O.outages(night_state(), "ms", "bus")
    return found


def assess(ms_db: Path, bus_db: Path) -> K.Verdict:
    [verdict] = O.check_here(ms_db, bus_db, night_state())
    return verdict


@pytest.fixture
def sites(tmp_path: Path) -> Iterator[tuple[Path, Path, Rows, Rows]]:
    ms, bus, _, _ = night()
    yield tmp_path / "ms" / "db", write_db(tmp_path / "bus" / "db", bus), ms, bus


def drop(db: Path, table: str, predicate) -> list[str]:
    """Remove the lines of a table for which predicate(line) holds; return them."""
    path = Path(f"{db}.{table}")
    lines = path.read_text().splitlines(keepends=True)
    path.write_text("".join(line for line in lines if not predicate(line)))
    return [line for line in lines if predicate(line)]


# ---------------------------------------------------------------- the rule


def test_outage_ranges_come_from_lastid_at_each_epoch_change():
    o = outage()
    assert (o.epoch, o.since, o.until) == (2, FAILOVER, FALLBACK)
    assert o.ids["orid"] == (BUS_LASTID_AT_FAILOVER + 1, BUS_LASTID_AT_FAILOVER + 13)  # 1010-1022: 13 origins
    assert o.ids["arid"] == (BUS_LASTID_AT_FAILOVER + 1, BUS_LASTID_AT_FAILOVER + 26)


def test_before_recovery_every_row_of_the_gap_events_is_named_missing(sites):
    ms_db, bus_db, ms, bus = sites
    write_db(ms_db, ms)
    v = assess(ms_db, bus_db)
    assert v.window == (MS_LAST, 1026.0)  # MS's first moment after it took authority back
    assert [(g.start, g.end, g.moments) for g in v.gaps] == [(1010.0, 1019.0, 10)]
    # whole events of the gap; not BUS's copies of 1000-1009 whose S arrivals fall in the gap,
    # nor those of 1020-1022, which carry BUS's ids but MS recorded itself
    assert v.required == {"event": 10, "origin": 10, "arrival": 20, "assoc": 20, "wfdisc": 10}
    assert v.missing_by_table() == v.required and not v.present
    names = {str(m) for m in v.missing}
    assert f"origin orid {BUS_LASTID_AT_FAILOVER + 1} evid {BUS_LASTID_AT_FAILOVER + 1}" in names
    assert not v.orphans and not v.twice and not v.ok


def test_a_complete_recovery_holds_and_stays_checked_after_the_merge(sites):
    ms_db, bus_db, ms, bus = sites
    write_db(ms_db, ms, in_gap(bus))
    v = assess(ms_db, bus_db)
    assert v.ok, v.problems()
    # merged rows are not MS's own recording: the gap is still seen, and checked
    assert [(g.start, g.end) for g in v.gaps] == [(1010.0, 1019.0)]
    assert v.present == v.required == {"event": 10, "origin": 10, "arrival": 20, "assoc": 20, "wfdisc": 10}


def test_a_missing_arrival_is_named_by_table_and_id(sites):
    ms_db, bus_db, ms, bus = sites
    gap = in_gap(bus)
    late = max(gap["arrival"], key=lambda a: a["time"])  # the S arrival of the gap's last event, after the gap
    assert late["time"] > GAP[-1] + 1
    gap["arrival"].remove(late)
    write_db(ms_db, ms, gap)
    v = assess(ms_db, bus_db)
    assert not v.ok
    assert [str(m) for m in v.missing] == [f"arrival arid {late['arid']}"]
    # and MS's assoc of it points at nothing
    orphan = f"assoc arid {late['arid']} orid {gap['assoc'][-1]['orid']}: arid {late['arid']} has no arrival row"
    assert v.orphans == [orphan]
    assert v.problems() == [f"1 arrival rows missing on MS: arrival arid {late['arid']}",
                            f"1 rows referencing a row it lacks (orphans) on MS: {orphan}"]


def test_the_missing_arrival_goes_unseen_by_a_rule_weakened_to_origins(sites, monkeypatch):
    """The test data of the test above tells the rule from a weakened one: with
    only origins checked, the same missing arrival passes. So weakening the rule
    makes test_a_missing_arrival_is_named_by_table_and_id fail."""
    ms_db, bus_db, ms, bus = sites
    gap = in_gap(bus)
    gap["arrival"].remove(max(gap["arrival"], key=lambda a: a["time"]))
    write_db(ms_db, ms, gap)
    monkeypatch.setattr(K, "TABLES_CHECKED", ("origin",))
    assert assess(ms_db, bus_db).ok


def test_a_copied_assoc_without_its_origin_is_an_orphan(sites):
    """What a time window alone merges: an S arrival in the gap of an event MS
    recorded itself, with its assoc, but not BUS's origin of that event."""
    ms_db, bus_db, ms, bus = sites
    early = next(a for a in bus["arrival"] if a["time"] in GAP and a["arid"] <= BUS_LASTID_AT_FAILOVER)
    assoc = next(a for a in bus["assoc"] if a["arid"] == early["arid"])
    write_db(ms_db, ms, in_gap(bus), {"arrival": [early], "assoc": [assoc]})
    v = assess(ms_db, bus_db)
    assert v.orphans == [f"assoc arid {early['arid']} orid {assoc['orid']}: orid {assoc['orid']} has no origin row"]
    assert not v.missing


def test_a_second_gap_is_found_and_required(tmp_path):
    """MS powered off again while the fallback waited: two gaps in one outage."""
    ms, bus, _, _ = night()
    second = [o["time"] for o in ms["origin"] if 1024 <= o["time"] <= 1026]
    for table in ("origin", "event", "arrival", "assoc", "wfdisc"):
        ms[table] = [r for r in ms[table] if not (1024 <= r.get("time", 0) <= 1026)]
    orids = {o["orid"] for o in ms["origin"]}
    ms["event"] = [e for e in ms["event"] if e["prefor"] in orids]
    ms["assoc"] = [a for a in ms["assoc"] if a["orid"] in orids]
    ms["arrival"] = [a for a in ms["arrival"] if a["arid"] in {x["arid"] for x in ms["assoc"]}]
    ms_db, bus_db = write_db(tmp_path / "ms" / "db", ms, in_gap(bus)), write_db(tmp_path / "bus" / "db", bus)
    v = assess(ms_db, bus_db)
    assert [(g.start, g.end) for g in v.gaps] == [(1010.0, 1019.0), (1024.0, 1026.0)]
    assert {m.row.time for m in v.missing if m.row.table == "origin"} == set(second)
    assert v.missing_by_table() == {"event": 3, "origin": 3, "arrival": 6, "assoc": 6, "wfdisc": 3}


def test_a_row_with_an_id_bus_issued_is_required_wherever_it_is_timed(sites):
    """(a) does not depend on the window: a BUS event of its authority timed
    long after it, that MS never recorded, is required."""
    ms_db, bus_db, ms, bus = sites
    stray = defaultdict(list)
    ids = Ids(BUS_LASTID_AT_FAILOVER + 500)
    record(stray, 5000.0, ids)
    write_db(bus_db, bus, stray)
    write_db(ms_db, ms, in_gap(bus))
    o = outage()
    o = K.Outage(o.epoch, o.since, o.until, {k: (lo, hi + 1000) for k, (lo, hi) in o.ids.items()})
    v = K.assess(o, K.coverage_bounds(ms_db, o.since, o.until),
                 lambda a, b, r: K.take_inventory(bus_db, a, b, r), lambda a, b, r: K.take_inventory(ms_db, a, b, r))
    assert {m.row.time for m in v.missing if m.row.table == "origin"} == {5000.0}
    assert v.missing_by_table() == {"event": 1, "origin": 1, "arrival": 2, "assoc": 2, "wfdisc": 1}


def test_an_id_naming_two_rows_across_the_sites_is_reported(sites):
    ms_db, bus_db, ms, bus = sites
    taken = next(o for o in bus["origin"] if o["time"] == 1015.0)
    clash = dict(ms["origin"][-1], orid=taken["orid"])
    ms["origin"][-1] = clash
    write_db(ms_db, ms, in_gap(bus))
    v = assess(ms_db, bus_db)
    assert f"orid {taken['orid']}: 2 origin rows" in v.twice
    assert f"orid {taken['orid']}: one origin row on BUS, another on MS" in v.twice


def test_a_window_given_by_hand_requires_every_bus_event_in_it(sites):
    ms_db, bus_db, ms, bus = sites
    write_db(ms_db, ms)
    v = K.assess_window((1002.0, 1004.5), lambda a, b, r: K.take_inventory(bus_db, a, b, r),
                        lambda a, b, r: K.take_inventory(ms_db, a, b, r))
    # events 1002-1004 of BUS (MS recorded its own copies: a window by hand merges them all the same),
    # and the waveform segments of those moments
    assert v.missing_by_table() == {"event": 3, "origin": 3, "arrival": 6, "assoc": 6, "wfdisc": 3}


def test_rows_ms_holds_of_a_unit_it_holds_in_part_are_not_named_missing(sites):
    """A merge cut short left a gap event's event row on MS and nothing else of
    it: no time or link of MS's own reaches the event row, yet it is on MS, and
    only the rest of the event is missing (without the ids of BUS's units
    reaching MS's inventory, the event row is named missing too)."""
    ms_db, bus_db, ms, bus = sites
    gap = in_gap(bus)
    origin = gap["origin"].pop(0)
    gap["assoc"] = [a for a in gap["assoc"] if a["orid"] != origin["orid"]]
    arids = {a["arid"] for a in gap["assoc"]}
    gap["arrival"] = [a for a in gap["arrival"] if a["arid"] in arids]
    write_db(ms_db, ms, gap)
    v = K.assess_window((GAP[0], GAP[-1] + 0.5), lambda a, b, r: K.take_inventory(bus_db, a, b, r),
                        lambda a, b, r: K.take_inventory(ms_db, a, b, r))
    assert v.missing_by_table() == {"origin": 1, "arrival": 2, "assoc": 2}


def test_verification_blocks_on_ids_as_the_fallback_check_does():
    """Recovery's verification judges MS's whole id scan against its baseline:
    ids above lastid block even when old, an id used twice blocks when new or
    issued during the outage, an old duplicate is listed and does not block.
    A verification reading only the duplicates, or only the scan's ``ok``,
    fails one of these. The flow's own use of it: test_flows.py, the full cycle."""
    above = Problem("orid", "above_lastid", "orid: db.origin holds orid up to 6020 but lastid is 6000", 20)
    twice = Problem("wfid", "duplicates", "wfid: 1 wfid values are used more than once in db.wfdisc", 1, (7,))
    old = take(IdReport("db", {}, (above, twice), ()), None, "setup", now=0.0)
    verdicts = [K.Verdict((0.0, 1.0))]

    def problems(*found: Problem, outage: dict | None = None) -> list[str]:
        return K.verification_problems(verdicts, judge(IdReport("db", {}, found, ()), old, outage).blocking)

    assert problems(twice) == []
    assert problems(above) == [f"MS ids: {above.message} [the id server would issue ids already in the database]"]
    assert problems(twice, outage={"wfid": (5, 9)}) == [
        f"MS ids: {twice.message} [ids issued during the outage used twice: 7]"]
    new = replace(twice, ids=(7, 12), count=2)
    assert problems(new) == [f"MS ids: {new.message} [new since the baseline: 12]"]
    assert problems() == []


def test_a_damaged_line_is_named_with_its_file_and_line(sites):
    ms_db, bus_db, ms, _ = sites
    write_db(ms_db, ms)
    with open(f"{ms_db}.arrival", "a") as f:
        f.write("cut short\n")
    with pytest.raises(K.TableFormatError, match=r"db\.arrival, line 41: arrival record is 9 characters"):
        K.take_inventory(ms_db, 0, 2000, {})


# ---------------------------------------------------------------- excerpts


def test_excerpt_windows_cover_whole_events_and_narrowing_keeps_exactly_them(sites, tmp_path):
    ms_db, bus_db, ms, bus = sites
    write_db(ms_db, ms)
    v = assess(ms_db, bus_db)
    [plan], untimed = plan_excerpts([v])
    assert not untimed
    assert plan.start == 1010.0 and plan.end == 1019.0 + 12.0 + 0.002  # the last S arrival, after the gap
    # a time-window excerpt of it, as trexcerpt writes one: every row of BUS timed in it, more than MS lacks
    excerpt = tmp_path / "excerpt" / "db"
    shutil.copytree(bus_db.parent, excerpt.parent)
    report = narrow(excerpt, plan.keep)
    assert report.absent == {}
    kept = K.take_inventory(excerpt, 0, 10_000, {})
    assert sorted((r.table, r.digest) for r in kept.rows) == sorted((m.row.table, m.row.digest) for m in v.missing)
    again = narrow(excerpt, plan.keep)
    assert again.dropped == {t: 0 for t in again.dropped}  # narrowing twice changes nothing


def test_windows_of_two_gaps_apart_stay_two_and_widen_by_round():
    def verdict(unit: int, times: list[float]) -> K.Verdict:
        rows = [K.Row("arrival", i, f"d{unit}{i}", t, None, (("arid", unit * 10 + i),)) for i, t in enumerate(times)]
        return K.Verdict((0.0, 1.0), missing=[K.Lacking(r, unit, False) for r in rows], units={unit: rows})

    first, second = verdict(1, [100.0, 112.5]), verdict(2, [300.25, 301.0])
    plans, _ = plan_excerpts([first, second])
    assert [(p.start, p.end) for p in plans] == [(100.0, 112.502), (300.25, 301.002)]
    wider, _ = plan_excerpts([first, second], round_=1)
    assert [(p.start, p.end) for p in wider] == [(90.0, 122.502), (290.25, 311.002)]


# ---------------------------------------------------------------- real databases


def sample_dbs() -> list[Path]:
    found = []
    for folder in sorted(p for p in SAMPLES.iterdir() if p.is_dir()):
        names = {p.name.split(".", 1)[0] for p in folder.iterdir() if "." in p.name}
        found += [folder / n for n in sorted(names)]
    return found


@pytest.mark.parametrize("db", sample_dbs(), ids=lambda p: p.parent.name)
def test_real_databases_give_the_right_answers(db: Path, tmp_path: Path):
    """Every record of a checked table is read (blank text, dates as lddate, no
    descriptor); a copy holds every row of its own; the references to rows the
    database does not hold (both sites hold them alike, as real pairs do) are
    counted and named apart, none an orphan of the recovery."""
    inv = K.take_inventory(db, -1e10, 1e10, {})
    files, unknown = K.table_files(db)
    rows = {t: p.read_text("latin-1").splitlines() for t, p in files}
    assert sorted(unknown) == sorted({p.name.split(".", 1)[1] for p in db.parent.glob(f"{db.name}.*")}
                                     - {t for t, _ in files} - {"lastid"})
    in_scope = {(r.table, r.line) for r in inv.rows}
    timed = {t for t in rows if "time" in {f.name for f in TABLES[t].fields}}
    assert {(t, i + 1) for t in timed for i in range(len(rows[t]))} <= in_scope
    copy = tmp_path / "copy" / db.name
    shutil.copytree(db.parent, copy.parent)
    v = K.assess_window((-1e10, 1e10), lambda a, b, r: K.take_inventory(db, a, b, r),
                        lambda a, b, r: K.take_inventory(copy, a, b, r))
    assert not v.missing and not v.twice and not v.orphans
    dangling = dangling_references(db)
    older = [n for n in v.notes if "neither site holds" in n]
    assert [n.split(",")[0] for n in older] == ([f"{dangling} references on MS to rows neither site holds"]
                                                if dangling else [])
    assert all(n.count(" has no ") == min(dangling, 10) for n in older)  # each row named, the first 10


def dangling_references(db: Path) -> int:
    """Ids of events (orid, arid, ...) a row holds that no row of the key's own
    table defines (none, when the database has no file of that table)."""
    tables = {t: list(read_table(p, TABLES[t])) for t, p in K.table_files(db)[0]}
    defined = {key: {r[key] for r in tables.get(owner, [])} for key, owner in ID_OWNER.items()}
    return sum(1 for key, places in ID_KEYS.items() if key not in K.STATIC_KEYS and key in ID_OWNER
               for table, name in places if table in tables and table != ID_OWNER[key]
               for r in tables[table] if r[name] > 0 and r[name] not in defined[key])


def test_outages_to_recover_are_those_not_yet_verified_else_the_last():
    def epoch(site: str, n: int) -> Authority:
        return Authority(site=site, epoch=n, since=100.0 * n, lastid={"orid": 10 * n})

    state = HAState(authority=epoch("ms", 5), history=[epoch("ms", 1), epoch("bus", 2), epoch("ms", 3),
                                                       epoch("bus", 4)])
    assert [(o.epoch, o.since, o.until, o.ids) for o in O.outages(state, "ms", "bus")] == [
        (2, 200.0, 300.0, {"orid": (21, 30)}), (4, 400.0, 500.0, {"orid": (41, 50)})]
    assert [o.epoch for o in O.to_recover(state, "ms", "bus")] == [2, 4]
    assert [o.epoch for o in O.to_recover(state.model_copy(update={"recovered_through": 2}), "ms", "bus")] == [4]
    assert [o.epoch for o in O.to_recover(state.model_copy(update={"recovered_through": 4}), "ms", "bus")] == [4]
    # a record stored before lastid and recovered_through were kept (it had recovery_windows) still loads
    old = HAState.model_validate({
        "authority": {"site": "ms", "epoch": 3, "since": 300.0}, "recovery_windows": {"2": [1.0, 2.0]},
        "history": [{"site": "ms", "epoch": 1, "since": 100.0}, {"site": "bus", "epoch": 2, "since": 200.0}]})
    assert [(o.epoch, o.ids) for o in O.to_recover(old, "ms", "bus")] == [(2, None)]  # judged by time only


def test_an_older_orphan_of_ms_own_rows_is_a_note_not_a_failure(sites):
    """MS's own assoc pointing at an arrival neither site holds was there before
    the outage: listed apart, it does not fail the recovery."""
    ms_db, bus_db, ms, bus = sites
    orid = next(o["orid"] for o in ms["origin"] if o["time"] == 1005.0)
    ms["assoc"].append(dict(next(a for a in ms["assoc"] if a["orid"] == orid), arid=99_999))
    write_db(ms_db, ms, in_gap(bus))
    v = assess(ms_db, bus_db)
    assert v.ok and not v.orphans
    assert any("neither site holds" in n for n in v.notes)


# ---------------------------------------------------------------- the inventory's reading


def scope_by_hand(db: Path, start: float, end: float, ranges: K.IdRanges) -> set[tuple[str, int]]:
    """(table, line) of the rows an inventory must list, from the generic record parser:
    timed in the window or carrying an id of the ranges, then every row linked to those."""
    key_of = {(t, f): k for k, places in ID_KEYS.items() for t, f in places}
    rows = {}
    for table in ("event", "origin", "arrival", "assoc", "wfdisc", "netmag"):
        path = Path(f"{db}.{table}")
        if not path.exists():
            continue
        for line, (row, _) in enumerate(read_records(path, TABLES[table], deleted=True), 1):
            if TABLES[table].is_deleted(row):
                continue
            ids = {(key_of[(table, f)], v) for f, v in row.items() if (table, f) in key_of and v > 0}
            rows[(table, line)] = (row.get("time"), ids)
    scope = {at for at, (t, ids) in rows.items()
             if (t is not None and t > K.NULL_TIME and start <= t <= end)
             or any(k in ranges and ranges[k][0] <= v <= ranges[k][1] for k, v in ids)}
    while True:
        links = {(k, v) for at in scope for k, v in rows[at][1] if k not in K.STATIC_KEYS}
        more = {at for at, (_, ids) in rows.items() if at not in scope and ids & links}
        if not more:
            return scope
        scope |= more


def shuffled_night(db: Path, seed: int) -> Path:
    """A night's rows in random order (as dbsort or a merge leaves them), with rows deleted
    with dbmark, unassociated arrivals, assocs of one origin pointing at another's arrivals,
    and some orids of assocs printed with leading zeros (a program other than Antelope's)."""
    rng = random.Random(seed)
    ms, bus, _, _ = night()
    rows = {t: [dict(r) for r in bus[t] + ms[t]] for t in bus}
    for a in rows["assoc"][::7]:
        a["arid"] = rng.choice(rows["arrival"])["arid"]
    rows["arrival"] += [{"sta": "STA2", "time": 1000.0 + rng.uniform(0, 40), "arid": 90_000 + i, "jdate": 2026334,
                         "chan": "HHZ", "iphase": "P", "lddate": 0.0} for i in range(30)]
    for table in rows:
        rng.shuffle(rows[table])
    write_db(db, rows)
    for table in ("origin", "wfdisc"):
        with open(f"{db}.{table}", "ab") as f:
            f.write(TABLES[table].null_record * 3)
    path, off = Path(f"{db}.assoc"), TABLES["assoc"].offset("orid")
    lines = path.read_bytes().splitlines(keepends=True)
    for i in range(0, len(lines), 9):
        lines[i] = lines[i][:off] + b"%08d" % int(lines[i][off:off + 8]) + lines[i][off + 8:]
    path.write_bytes(b"".join(lines))
    return db


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_an_inventory_lists_exactly_the_rows_in_scope_across_many_blocks(tmp_path, monkeypatch, seed):
    """Blocks of a few records each: a unit spread over many blocks and passes is still listed whole."""
    db = shuffled_night(tmp_path / "db", seed)
    monkeypatch.setattr(K, "_BLOCK", 3 * TABLES["wfdisc"].record_length)
    rng = random.Random(seed)
    for start, end, ranges in [(1012.0, 1013.5, {}), (0.0, 0.0, {"arid": (5001, 5004)}),
                               (1015.0, 1016.0, {"orid": (1, 3), "wfid": (5010, 5011)}),
                               (rng.uniform(1000, 1020), rng.uniform(1020, 1040), {"evid": (5003, 5003)}),
                               (-1e12, 1e12, {})]:
        listed = K.take_inventory(db, start, end, ranges).rows
        assert {(r.table, r.line) for r in listed} == scope_by_hand(db, start, end, ranges), (start, end, ranges)
        lines = {t: Path(f"{db}.{t}").read_bytes().splitlines() for t in {r.table for r in listed}}
        assert all(r.digest == K.line_digest(lines[r.table][r.line - 1]) for r in listed)
    lines = sum(len(Path(f"{db}.{t}").read_bytes().splitlines()) for t in ("event", "origin", "arrival", "assoc",
                                                                             "wfdisc"))
    assert len(K.take_inventory(db, -1e12, 1e12, {}).rows) == lines - 6  # every row but the deleted ones


@pytest.mark.parametrize("table,field,bad", [("origin", "time", "1015.0x0000"), ("assoc", "orid", "12 45"),
                                             ("arrival", "arid", "-"), ("wfdisc", "samprate", "forty")])
def test_a_field_the_inventory_reads_that_is_not_a_number_is_named_with_its_line(tmp_path, monkeypatch, table, field,
                                                                                  bad):
    db = write_db(tmp_path / "db", night()[1])
    monkeypatch.setattr(K, "_BLOCK", 4 * TABLES[table].record_length)
    path = Path(f"{db}.{table}")
    lines = path.read_bytes().splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if i > 8 and TABLES[table].parse_row(line.decode(), i + 1, path)
              .get("time", 1015.0) >= 1015.0)
    t = TABLES[table]
    off, width = t.offset(field), t.field(field).width
    lines[at] = lines[at][:off] + bad.rjust(width).encode() + lines[at][off + width:]
    path.write_bytes(b"".join(lines))
    with pytest.raises(K.TableFormatError, match=rf"db\.{table}, line {at + 1}: {table}\.{field} is"):
        K.take_inventory(db, 1014.0, 1016.0, {"orid": (5001, 5020), "arid": (5001, 5040)})


def test_records_a_writer_appends_while_the_inventory_reads_wait_for_the_next_check(tmp_path, monkeypatch):
    """The inventory reads the records in the file as it starts: MS's writers run during a recovery's
    last check, and a record half written must neither fail the check nor join it."""
    db = write_db(tmp_path / "db", night()[1])
    monkeypatch.setattr(K, "_BLOCK", 4 * TABLES["assoc"].record_length)
    before = K.take_inventory(db, 1012.0, 1014.0, {})
    line = Path(f"{db}.assoc").read_bytes().splitlines(keepends=True)[24]  # an assoc the window takes
    blocks, appended = K._TableFile.blocks, []

    def appending(self):
        for block in blocks(self):
            if self.name == "assoc" and not appended:
                with open(self.path, "ab") as f:  # one more record, and half of the next
                    f.write(line + line[:40])
                appended.append(line)
            yield block

    monkeypatch.setattr(K._TableFile, "blocks", appending)
    assert K.take_inventory(db, 1012.0, 1014.0, {}).rows == before.rows and appended
    with pytest.raises(K.TableFormatError, match=r"db\.assoc, line \d+: assoc record is 40 characters"):
        K.take_inventory(db, 1012.0, 1014.0, {})  # a record cut short before the check began is named
