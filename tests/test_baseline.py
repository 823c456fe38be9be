"""The baseline of old id problems: which problems of a scan block, on real scan reports."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from antelope_ha.baseline import Baseline, judge, outage_ids, take
from antelope_ha.css30 import TABLES, Problem, append_rows, write_table
from antelope_ha.idscan import IdReport, ids_report
from antelope_ha.lastid import write_lastid
from antelope_ha.state import HAState

SAMPLES = Path(__file__).parent / "data" / "antelope-samples"
ARRIVAL = TABLES["arrival"]
T0, T1 = 1_700_000_000.0, 1_700_086_400.0


def arrivals(path: Path, arids: list[int]) -> None:
    append_rows(path, ARRIVAL, [{"sta": "BAL", "time": T0 + a, "arid": a, "chan": "HHZ"} for a in arids])


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """A database with one old duplicate (arid 7 twice) and a lastid that covers it."""
    write_table(tmp_path / "db.arrival", ARRIVAL, [])
    arrivals(tmp_path / "db.arrival", [*range(1, 101), 7])
    write_lastid(tmp_path / "dbids.lastid", {"arid": 100}, T0)
    return tmp_path / "db"


def report(db: Path) -> IdReport:
    return ids_report(str(db), f"{db.parent}/dbids.lastid")


def test_an_old_duplicate_is_listed_with_when_first_seen_and_does_not_block(db):
    base = take(report(db), None, "setup", now=T0)
    assert [(p.key, p.kind, p.ids, p.first_seen) for p in base.problems] == [("arid", "duplicates", [7], T0)]
    verdict = judge(report(db), base)
    assert verdict.blocking == []
    assert verdict.old == [f"{report(db).problems[0]} (first seen 2023-11-14 22:13 UTC)"]


def test_a_new_duplicate_blocks_and_names_only_the_new_ids(db):
    base = take(report(db), None, "setup", now=T0)
    arrivals(db.parent / "db.arrival", [42, 42])
    (blocking,) = judge(report(db), base).blocking
    assert "2 arid values are used more than once" in blocking and blocking.endswith("[new since the baseline: 42]")


def test_without_a_baseline_every_problem_blocks(db):
    (blocking,) = judge(report(db), None).blocking
    assert blocking.endswith("[no baseline of old problems on record for this site: antelope-ha baseline takes one]")


def test_a_duplicate_among_the_ids_issued_during_the_outage_blocks_even_if_in_the_baseline(db):
    base = take(report(db), None, "taken during the outage", now=T0)
    outage = outage_ids({"arid": 5}, {"arid": 60})
    assert outage == {"arid": (6, 60)}
    (blocking,) = judge(report(db), base, outage).blocking
    assert blocking.endswith("[ids issued during the outage used twice: 7]")
    assert judge(report(db), base, outage_ids({"arid": 10}, {"arid": 60})).blocking == []
    assert outage_ids(None, {"arid": 60, "orid": 0}) == {"arid": (1, 60)}  # no replica: any id may be BUS's


def test_ids_above_lastid_always_block(db):
    base = take(report(db), None, "setup", now=T0)
    write_lastid(db.parent / "dbids.lastid", {"arid": 90}, T0)
    old = take(report(db), base, "again", now=T1)
    assert {p.kind for p in old.problems} == {"duplicates", "above_lastid"}
    (blocking,) = judge(report(db), old).blocking
    assert "would issue 91..100 again" in blocking and blocking.endswith("would issue ids already in the database]")


def test_retaking_keeps_first_seen_and_drops_what_was_fixed(db):
    base = take(report(db), None, "setup", now=T0)
    arrivals(db.parent / "db.arrival", [42])
    again = take(report(db), base, "fallback", now=T1)
    assert sorted((p.ids, p.first_seen) for p in again.problems) == [([7], T0), ([42], T1)]
    path = db.parent / "db.arrival"
    lines = path.read_bytes().splitlines(keepends=True)
    path.write_bytes(b"".join(line for line in lines if b"       7 " not in line[24:34]))  # arid 7 removed
    assert [p.ids for p in take(report(db), again, "later", now=T1 + 1).problems] == [[42]]


def test_a_key_without_lastid_row_is_old_unless_bus_issued_that_key(tmp_path):
    """dbmon-demo as it is: a lastid with arid only, while five other keys have ids."""
    for f in (SAMPLES / "dbmon-demo").iterdir():
        shutil.copy(f, tmp_path / f.name)
    r = ids_report(str(tmp_path / "demo"), str(tmp_path / "demo.lastid"))
    assert sorted(p.key for p in r.found) == ["chanid", "inid", "magid", "orid", "wfid"]
    assert {p.kind for p in r.found} == {"not_in_lastid"}
    base = take(r, None, "setup", now=T0)
    assert judge(r, base).blocking == [] and len(judge(r, base).old) == 5
    (blocking,) = judge(r, base, {"orid": (1400, 1500)}).blocking
    assert blocking.startswith("orid: lastid has no orid row") and "issued during the outage (1400..1500)" in blocking


def test_more_rows_without_an_id_than_in_the_baseline_block(db):
    arrivals(db.parent / "db.arrival", [-1])
    base = take(report(db), None, "setup", now=T0)
    assert judge(report(db), base).blocking == []
    arrivals(db.parent / "db.arrival", [-1])
    (blocking,) = judge(report(db), base).blocking
    assert blocking.endswith("[1 more rows without an id than in the baseline]")


def test_the_state_record_keeps_baselines_and_reads_records_without_them(db):
    state = HAState.initial("ms").with_baseline("ms", report(db), "setup")
    again = HAState.model_validate_json(state.model_dump_json())
    assert again.baselines["ms"].problems[0].ids == [7] and isinstance(again.baselines["ms"], Baseline)
    legacy = state.model_dump(mode="json")
    del legacy["baselines"]
    assert HAState.model_validate(legacy).baselines == {}


# --- on reports as the scan writes them, problem by problem ------------------------------------------
def dup(key: str, ids: list[int], count: int | None = None) -> Problem:
    return Problem(key, "duplicates", f"{key}: used twice {ids}", len(ids) if count is None else count, tuple(ids))


def other(key: str, kind: str, count: int = 0) -> Problem:
    return Problem(key, kind, f"{key}: {kind}", count)


def found(*problems: Problem) -> IdReport:
    return IdReport("db", {}, problems, ())


def test_each_key_and_kind_is_its_own_problem():
    base = take(found(dup("orid", [7]), other("arid", "null_ids", 2), dup("arid", [8])), None, "setup", now=T0)
    assert base.duplicated("arid") == {8} and base.duplicated("orid") == {7}
    assert base.duplicate_count("arid") == 1
    assert base.has("arid", "duplicates").ids == [8] and base.has("orid", "null_ids") is None
    assert base.has("arid", "null_ids").count == 2
    later = take(found(dup("arid", [7]), other("arid", "null_ids", 2)), base, "again", now=T1)
    assert [(p.key, p.kind, p.ids, p.first_seen) for p in later.problems] == [
        ("arid", "duplicates", [7], T1),  # arid 7 is new: orid's 7 was the old one
        ("arid", "null_ids", [], T0)]


def test_old_duplicates_keep_their_date_and_only_the_new_ones_are_counted_new():
    first = take(found(dup("arid", [7, 8])), None, "setup", now=T0)
    second = take(found(dup("arid", [7, 8, 42])), first, "again", now=T1)
    third = take(found(dup("arid", [8, 42, 50])), second, "later", now=T1 + 1)
    assert [(p.ids, p.count, p.first_seen) for p in third.problems] == [([8], 1, T0), ([42], 1, T1),
                                                                       ([50], 1, T1 + 1)]
    over = take(found(dup("arid", [8, 42], count=5)), third, "beyond the listed", now=T1 + 2)
    assert [(p.ids, p.count) for p in over.problems] == [([8], 1), ([42], 1), ([], 3)]


def test_an_old_problem_is_listed_with_when_its_own_key_and_kind_were_first_seen():
    base = take(found(dup("orid", [7])), None, "setup", now=T0)
    base = take(found(dup("orid", [7]), dup("arid", [7]), other("arid", "not_in_lastid")), base, "again",
                now=T1)
    verdict = judge(found(dup("arid", [7]), dup("orid", [7]), other("arid", "not_in_lastid")), base)
    assert verdict.blocking == []
    assert verdict.old == ["arid: used twice [7] (first seen 2023-11-15 22:13 UTC)",
                           "orid: used twice [7] (first seen 2023-11-14 22:13 UTC)",
                           "arid: not_in_lastid (first seen 2023-11-15 22:13 UTC)"]


def test_why_each_problem_blocks_word_for_word():
    base = take(found(dup("arid", [7]), other("arid", "null_ids", 1), other("wfid", "not_in_lastid")),
                None, "setup", now=T0)
    many = list(range(100, 111))
    cases = [
        (dup("arid", [5, 60]), {"arid": (5, 60)}, "ids issued during the outage used twice: 5, 60"),
        (dup("arid", many), {"arid": (1, 1000)},
         "ids issued during the outage used twice: 100, 101, 102, 103, 104, 105, 106, 107, 108, 109"),
        (dup("arid", [7, *many]), {}, "new since the baseline: 100, 101, 102, 103, 104, 105, 106, 107, 108, 109"),
        (dup("arid", [7], count=2), {}, "more duplicated ids than in the baseline"),
        (dup("arid", [7]), {"arid": (8, 60)}, None),
        (other("orid", "null_ids", 1), {}, "new since the baseline"),
        (other("arid", "null_ids", 3), {}, "2 more rows without an id than in the baseline"),
        (other("wfid", "not_in_lastid"), {"wfid": (3, 9)}, "wfid ids were issued during the outage (3..9)"),
        (other("wfid", "above_lastid"), {}, "the id server would issue ids already in the database"),
    ]
    for problem, outage, why in cases:
        verdict = judge(found(problem), base, outage)
        assert verdict.blocking == ([] if why is None else [f"{problem.message} [{why}]"]), problem
    assert judge(found(dup("arid", [7])), None).blocking == [
        "arid: used twice [7] [no baseline of old problems on record for this site: antelope-ha baseline takes one]"]


def test_the_ids_bus_may_have_issued_per_key():
    assert outage_ids({"orid": 5, "arid": 60}, {"arid": 60, "orid": 9, "wfid": 4}) == {"orid": (6, 9), "wfid": (1, 4)}
    assert outage_ids({}, {"orid": 0, "arid": 1}) == {"arid": (1, 1)}
