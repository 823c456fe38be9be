"""The id scan's report and its command line (``python -m antelope_ha.idscan``),
as the site tool runs them on a site, in this process on a small database."""
from __future__ import annotations

import json
from pathlib import Path

import pytest

from antelope_ha.completeness import Coverage, coverage_bounds, take_inventory
from antelope_ha.css30 import TABLES, Problem, append_rows, write_table
from antelope_ha.excerpt import narrow
from antelope_ha.idscan import IdReport, id_ranges, ids_report, main
from antelope_ha.lastid import write_lastid

ARRIVAL = TABLES["arrival"]
T0 = 1_700_000_000.0


@pytest.fixture
def db(tmp_path: Path) -> Path:
    """arids 1..10 with 7 twice, one row deleted with dbmark (every field null),
    one row without an arid; lastid arid 8."""
    write_table(tmp_path / "db.arrival", ARRIVAL, [])
    append_rows(tmp_path / "db.arrival", ARRIVAL,
                [{"sta": "BAL", "time": T0 + a, "arid": a, "chan": "HHZ"} for a in [*range(1, 11), 7]]
                + [{}, {"sta": "BAL", "time": T0, "chan": "HHZ"}])
    write_lastid(tmp_path / "dbids.lastid", {"arid": 8}, T0)
    return tmp_path / "db"


def test_the_report_in_full(db: Path):
    arrivals = f"{db}.arrival"
    above = (f"arid: {arrivals} holds arid up to 10 but lastid is 8, so the id server would issue 9..10 "
             f"again; set lastid arid to 10 or more")
    twice = (f"arid: 1 arid values are used more than once in {arrivals} (1 extra rows; 7); a merge was "
             f"applied twice or two id servers were active: remove the duplicate rows before starting dbids")
    no_id = (f"arid: 1 rows of {arrivals} have no arid (null or not positive) but are not deleted rows "
             f"(other fields are set); every row of its owning table needs one")
    assert ids_report(str(db), f"{db.parent}/dbids.lastid").to_json() == {
        "db": str(db),
        "keys": {"arid": {"max": 10, "rows": 13, "lastid": 8, "duplicates": 1, "examples": [7], "deleted": 1,
                          "nulls": 1}},
        "problems": [above, twice, no_id],
        "ok": False,
        "found": [
            {"key": "arid", "kind": "above_lastid", "message": above, "count": 0, "ids": [], "span": [9, 10]},
            {"key": "arid", "kind": "duplicates", "message": twice, "count": 1, "ids": [7], "span": [7, 7]},
            {"key": "arid", "kind": "null_ids", "message": no_id, "count": 1, "ids": [], "span": None},
        ],
        "info": [f"arrival: 1 deleted rows (every field null: marked with dbmark, not yet removed with dbcrunch) "
                 f"in {arrivals}; they hold no arid and are skipped"],
        "duplicates": 1,
    }


def test_a_missing_lastid_table_is_the_first_problem(db: Path):
    report = ids_report(str(db), f"{db.parent}/missing.lastid")
    missing = f"{db.parent}/missing.lastid does not exist: the ID server has no lastid table"
    assert report.problems[0] == missing and not report.ok
    assert report.found[0] == Problem("-", "no_lastid", missing)
    assert [f.kind for f in report.found[1:]] == ["not_in_lastid", "duplicates", "null_ids"]
    assert report.keys["arid"].lastid is None
    assert IdReport.from_json(json.loads(json.dumps(report.to_json()))) == report


def test_a_clean_database_is_ok(tmp_path: Path):
    write_table(tmp_path / "db.arrival", ARRIVAL, [{"sta": "BAL", "time": T0, "arid": 3, "chan": "HHZ"}])
    write_lastid(tmp_path / "dbids.lastid", {"arid": 3}, T0)
    report = ids_report(str(tmp_path / "db"), str(tmp_path / "dbids.lastid"))
    assert report.ok and report.problems == [] and report.found == () and report.duplicates == 0


def test_id_ranges():
    assert id_ranges([]) == {}
    assert id_ranges(["orid=1001-1276", "arid=5-5"]) == {"orid": (1001, 1276), "arid": (5, 5)}
    for bad in ("orid", "orid=1001", "=1-2", "orid=a-2", "orid=1-b", "orid:1-2", "or=id=1-2", "orid=1-2-3"):
        with pytest.raises(ValueError, match=rf"--ids '{bad}': expected KEY=FIRST-LAST, e.g. orid=1001-1276"):
            id_ranges([bad])


def run(capsys, *argv: str) -> tuple[int, object, str]:
    status = main(list(argv))
    out, err = capsys.readouterr()
    return status, (json.loads(out) if out else None), err


def test_each_command_prints_what_its_function_returns(db: Path, tmp_path: Path, capsys):
    lastid = f"{db.parent}/dbids.lastid"
    assert run(capsys, "ids", str(db), "--lastid", lastid) == (0, ids_report(str(db), lastid).to_json(), "")
    write_table(f"{db}.origin", TABLES["origin"], [{"lat": 0.0, "lon": 0.0, "depth": 0.0, "time": T0 + t,
                                                     "orid": t, "evid": t} for t in (1, 4, 8, 12)])
    assert run(capsys, "bounds", str(db), str(T0 + 5), str(T0 + 6)) == (0, {"start": T0 + 4, "end": T0 + 8}, "")
    assert coverage_bounds(str(db), T0 + 5, T0 + 6) == Coverage(T0 + 4, T0 + 8)
    inventory = take_inventory(str(db), T0 + 2, T0 + 4, {"arid": (3, 9)}).to_json()
    assert run(capsys, "inventory", str(db), str(T0 + 2), str(T0 + 4), "--ids", "arid=3-9") == (0, inventory, "")
    assert inventory != take_inventory(str(db), T0 + 2, T0 + 4, {}).to_json()  # --ids is read
    assert run(capsys, "inventory", str(db), str(T0 + 2), str(T0 + 4)) == (
        0, take_inventory(str(db), T0 + 2, T0 + 4, {}).to_json(), "")
    keep = tmp_path / "keep.json"
    keep.write_text(json.dumps({"arrival": []}))
    copy = tmp_path / "excerpt"
    copy.mkdir()
    write_table(copy / "db.arrival", ARRIVAL, [{"sta": "BAL", "time": T0, "arid": 3, "chan": "HHZ"}])
    status, out, err = run(capsys, "narrow", str(copy / "db"), str(keep))
    assert (status, err) == (0, "") and out == {"kept": {"arrival": 0}, "dropped": {"arrival": 1}, "absent": {}}
    assert narrow(copy / "db", {"arrival": []}).dropped == {"arrival": 0}  # narrowed once, by the command


def test_errors_go_to_stderr_with_status_1(db: Path, tmp_path: Path, capsys):
    bad = tmp_path / "bad.lastid"
    bad.write_text("orid 12\n")
    status, out, err = run(capsys, "ids", str(db), "--lastid", str(bad))
    assert (status, out) == (1, None)
    assert err.startswith(f"idscan: {bad}, line 1: lastid record is 7 characters") and err.endswith("apart\n")
    status, out, err = run(capsys, "inventory", str(db), "1", "2", "--ids", "arid")
    assert (status, out) == (1, None) and err.startswith("idscan: --ids 'arid': expected KEY=FIRST-LAST")
    status, out, err = run(capsys, "narrow", str(db), str(tmp_path / "absent.json"))
    assert (status, out) == (1, None) and err.startswith("idscan: ") and "absent.json" in err
    with pytest.raises(SystemExit):
        main(["ids", str(db)])  # --lastid is required
    with pytest.raises(SystemExit):
        main([])


def test_the_help_says_how_to_call_each_command(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert out.startswith("usage: python -m antelope_ha.idscan [-h] {ids,bounds,inventory,narrow}")
    assert "\n  ids DB --lastid FILE     max id, duplicates and deleted rows per key, checked\n" in out
    with pytest.raises(SystemExit):
        main(["inventory", "--help"])
    assert "[--ids KEY=FIRST-LAST]" in capsys.readouterr().out
