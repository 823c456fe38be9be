"""Every check of the project over real Antelope databases (tests/data/antelope-samples):
id scan, the bounds of an outage, the completeness rule, a recovery merge on a
copy, descriptor read and edit. The expected answers were read off the files
with awk and by eye, not with this code."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from antelope_ha import completeness, idscan
from antelope_ha.css30 import TABLES, read_records, read_table
from antelope_ha.descriptor import DescriptorError, parse_descriptor, rewrite_dbidserver
from simsite.build import DB_TABLES
from simsite.programs import trexcerpt

SAMPLES = Path(__file__).parent / "data" / "antelope-samples"

# name -> (db, per key (rows, max id, lastid), problem kinds by key)
EXPECTED = {
    "dbcorrelate-testcase1": ("db", {"orid": (4, 4, 5), "evid": (4, 4, 5), "arid": (32, 36, 37), "wfid": (48, 48, 96)},
                              {}),
    "dbmon-demo": ("demo", {"orid": (1351, 1351, None), "wfid": (18, 15888, None), "chanid": (39, 2003, None),
                            "magid": (5, 600, None), "inid": (22, 2003, None)},
                   {k: "not_in_lastid" for k in ("orid", "wfid", "chanid", "magid", "inid")}),
    "autodrm-drm2db": ("db", {"wfid": (1, 1, 1)}, {}),
    "sac2db-simple": ("newdb", {"orid": (1, 1, 1), "evid": (1, 1, 1), "arid": (30, 30, 30), "wfid": (14, 14, 14),
                                "chanid": (14, 14, 14)}, {}),
}
ROWS = {  # rows of the tables a recovery moves (origin, event, arrival, assoc, wfdisc)
    "dbcorrelate-testcase1": {"origin": 4, "event": 4, "arrival": 32, "assoc": 32, "wfdisc": 48},
    "dbmon-demo": {"origin": 1351, "event": 0, "arrival": 0, "assoc": 9, "wfdisc": 18},
    "autodrm-drm2db": {"origin": 0, "event": 0, "arrival": 0, "assoc": 0, "wfdisc": 1},
    "sac2db-simple": {"origin": 1, "event": 1, "arrival": 30, "assoc": 27, "wfdisc": 14},
}


def copy(name: str, to: Path) -> Path:
    """A writable copy of a sample database; returns the database's path."""
    shutil.copytree(SAMPLES / name, to, dirs_exist_ok=True)
    for f in to.iterdir():
        f.chmod(0o644)
    return to / EXPECTED[name][0]


def ids_json(db: Path, capsys) -> idscan.IdReport:
    """The report the command prints, read back as the flows read it."""
    capsys.readouterr()
    assert idscan.main(["ids", str(db), "--lastid", f"{db}.lastid"]) == 0, capsys.readouterr().err
    return idscan.IdReport.from_json(json.loads(capsys.readouterr().out))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_the_id_scan_answers_right_on_each_sample(name, capsys):
    db_name, keys, problems = EXPECTED[name]
    report = ids_json(SAMPLES / name / db_name, capsys)
    assert {k: (v.rows, v.max, v.lastid) for k, v in report.keys.items()} == keys
    assert all(v.duplicates == v.deleted == v.nulls == 0 for v in report.keys.values())
    assert {p.key: p.kind for p in report.found} == problems
    assert report.ok is (not problems) and report.info == ()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_rows_deleted_with_dbmark_are_information_never_a_problem(name, tmp_path, capsys):
    """The second row of every owning table nulled, as dbmark leaves it before dbcrunch."""
    db = copy(name, tmp_path)
    db_name, keys, problems = EXPECTED[name]
    marked = {}
    for key, owner in (("orid", "origin"), ("evid", "event"), ("arid", "arrival"), ("wfid", "wfdisc"),
                       ("chanid", "sitechan"), ("magid", "netmag"), ("inid", "instrument")):
        path = Path(f"{db}.{owner}")
        if key in keys and keys[key][0] >= 2:
            lines = path.read_bytes().splitlines(keepends=True)
            lines[1] = TABLES[owner].null_record
            path.write_bytes(b"".join(lines))
            marked[key] = owner
    report = ids_json(db, capsys)
    assert {k: v.deleted for k, v in report.keys.items() if v.deleted} == {k: 1 for k in marked}
    assert {k: v.rows for k, v in report.keys.items()} == {k: v[0] for k, v in keys.items()}
    assert {p.key: p.kind for p in report.found} == problems  # no null_ids
    assert sorted(line.split(":")[0] for line in report.info) == sorted(marked.values())
    assert all("1 deleted rows (every field null: marked with dbmark, not yet removed with dbcrunch)" in line
               for line in report.info)
    assert in_scope(db) == {t: n - (t in marked.values()) for t, n in ROWS[name].items()}


def in_scope(db: Path) -> dict[str, int]:
    """Rows per moved table of an inventory over all time: every timed row and its event's rows."""
    rows = completeness.take_inventory(db, -1e12, 1e12, {}).rows
    return {t: sum(r.table == t for r in rows) for t in DB_TABLES}


def judged(bus: Path, ms: Path, window: tuple[float, float]) -> completeness.Verdict:
    """The completeness rule for a window given by hand, both inventories read here."""
    return completeness.assess_window(window, lambda a, b, r: completeness.take_inventory(bus, a, b, r),
                                      lambda a, b, r: completeness.take_inventory(ms, a, b, r))


@pytest.mark.parametrize("name, before, bounds", [  # last origin or wfdisc time before, first after (awk)
    ("dbcorrelate-testcase1", 1072920000.0, (1072918806.76, 1072922400.0)),
    ("dbmon-demo", 706177500.0, (706177337.18981, 706177781.5)),
    ("sac2db-simple", 711051100.0, (711051093.7, 711051502.09999)),
    ("autodrm-drm2db", 1145016000.0, (None, None)),  # its one wfdisc starts at that very second
])
def test_the_bounds_of_an_outage_on_each_sample(name, before, bounds):
    found = completeness.coverage_bounds(SAMPLES / name / EXPECTED[name][0], before, before)
    assert (found.start, found.end) == (pytest.approx(bounds[0]) if bounds[0] else None,
                                              pytest.approx(bounds[1]) if bounds[1] else None)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_sample_judged_against_itself_lacks_nothing(name):
    db = SAMPLES / name / EXPECTED[name][0]
    verdict = judged(db, db, (-1e12, 1e12))
    assert verdict.ok and not verdict.missing and verdict.present == verdict.required
    assert {t: verdict.required.get(t, 0) for t in ROWS[name]} == ROWS[name]


def _times(db: Path, table: str) -> list[float]:
    path = Path(f"{db}.{table}")
    return sorted(float(r["time"]) for r in read_table(path, TABLES[table])) if path.exists() else []


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_recovery_merge_of_a_window_on_a_copy_brings_back_every_row(name, tmp_path, capsys):
    """BUS holds the whole sample; MS lacks a window of it (origins, arrivals and wfdiscs
    timed in it, the events and assocs that hang on them). Extract on BUS, merge on MS
    with the trexcerpt stand-in, as recovery does; then MS holds every row BUS holds."""
    bus = copy(name, tmp_path / "bus")
    if not bus.exists():  # sac2db and autodrm wrote no descriptor: one as cssdescriptor writes it
        bus.write_text("#\nschema css3.0\ndblocks none\ndbidserver\ndbpath\n")
    times = sorted(set(_times(bus, "origin") + _times(bus, "wfdisc")))  # moments: the rule requires their rows
    start, end = times[len(times) // 3], times[2 * len(times) // 3] + 0.001
    ms = copy(name, tmp_path / "ms")
    if not ms.exists():
        ms.write_text(bus.read_text())
    tables = {t: list(read_records(Path(f"{ms}.{t}"), TABLES[t])) if Path(f"{ms}.{t}").exists() else []
              for t in DB_TABLES}
    gone_orids = {r["orid"] for r, _ in tables["origin"] if start <= r["time"] < end}
    gone_arids = {r["arid"] for r, _ in tables["arrival"] if start <= r["time"] < end}
    keep = {
        "origin": lambda r: r["orid"] not in gone_orids, "event": lambda r: r["prefor"] not in gone_orids,
        "arrival": lambda r: r["arid"] not in gone_arids, "assoc": lambda r: r["arid"] not in gone_arids,
        "wfdisc": lambda r: not start <= r["time"] < end,
    }
    for t, records in tables.items():  # the lines kept stay byte for byte as the sample has them
        if Path(f"{ms}.{t}").exists():
            Path(f"{ms}.{t}").write_bytes(b"".join(line for r, line in records if keep[t](r)))
    removed = {(t, completeness.line_digest(line[:-1])) for t, records in tables.items()
               for r, line in records if not keep[t](r)}
    assert removed

    before = judged(bus, ms, (start, end))
    assert before.missing and {(m.row.table, m.row.digest) for m in before.missing} <= removed

    excerpt = tmp_path / "excerpt" / "x"
    assert trexcerpt.main(["-v", "-e", str(bus), str(excerpt), repr(start), repr(end)]) == 0
    assert trexcerpt.main(["-v", "-a", "-e", str(excerpt), str(ms), repr(start), repr(end)]) == 0
    after = judged(bus, ms, (start, end))
    assert after.ok and after.present == after.required == before.required
    for t in DB_TABLES:  # every line of BUS, read independently of the merge, is on MS byte for byte
        if Path(f"{bus}.{t}").exists():
            assert sorted(Path(f"{ms}.{t}").read_bytes().splitlines()) == \
                sorted(Path(f"{bus}.{t}").read_bytes().splitlines()), t
    report = ids_json(ms, capsys)
    assert all(v.duplicates == 0 for v in report.keys.values())
    merged = {t: Path(f"{ms}.{t}").read_bytes() for t in DB_TABLES if Path(f"{ms}.{t}").exists()}
    assert trexcerpt.main(["-v", "-a", "-e", str(excerpt), str(ms), repr(start), repr(end)]) == 0  # again
    assert "already present" in capsys.readouterr().out
    assert {t: Path(f"{ms}.{t}").read_bytes() for t in merged} == merged


@pytest.mark.parametrize("name, schema, dbpath, server", [
    ("dbcorrelate-testcase1", "css3.0", "./{db}:/data/dbmaster/{reno}", None),
    ("dbmon-demo", "css3.0", None, None),
])
def test_each_samples_descriptor_is_read_and_edited_or_refused(name, schema, dbpath, server, tmp_path):
    db = copy(name, tmp_path)
    original = db.read_bytes()
    d = parse_descriptor(original.decode(), db)
    assert (d.schema, d.dbpath, d.dbidserver) == (schema, dbpath, server)
    if d.two_line:
        with pytest.raises(DescriptorError, match="old two-line descriptor"):
            rewrite_dbidserver(db, "bus:2498")
        assert db.read_bytes() == original
    else:
        assert rewrite_dbidserver(db, "bus:2498") is True
        assert parse_descriptor(db.read_text(), db).dbidserver == "bus:2498"
        assert db.read_bytes().replace(b"dbidserver bus:2498\n", b"dbidserver \n") == original


@pytest.mark.parametrize("name", ["autodrm-drm2db", "sac2db-simple"])
def test_a_sample_without_descriptor_is_named_with_the_fix(name, tmp_path):
    db = copy(name, tmp_path)
    with pytest.raises(DescriptorError, match=f"{db}: no such database descriptor; correct the site's db setting"):
        rewrite_dbidserver(db, "bus:2498")


@pytest.mark.parametrize("module", ["css30", "lastid", "descriptor", "idscan"])
def test_the_site_side_modules_parse_as_python_3_8(module):
    """They run on the Antelope hosts with the host's own python3 (3.8 or later)."""
    import ast

    source = (Path(__file__).parent.parent / "antelope_ha" / f"{module}.py").read_text()
    ast.parse(source, feature_version=(3, 8))
    assert "from __future__ import annotations" in source  # annotations are never evaluated
