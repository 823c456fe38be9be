"""CSS3.0 table layouts, parsing and the id scan, on real files."""
from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from antelope_ha import css30
from antelope_ha.css30 import (
    ID_KEYS,
    ID_OWNER,
    TABLES,
    Field,
    TableFormatError,
    append_rows,
    check_ids,
    read_table,
    scan_ids,
    write_table,
)

ORIGIN, ARRIVAL, WFDISC = TABLES["origin"], TABLES["arrival"], TABLES["wfdisc"]


# ---------------------------------------------------------------- layouts


@pytest.mark.parametrize("name, length", [
    # sum of widths + one space between fields + newline, from the schema formats
    ("lastid", 15 + 8 + 17 + 2 + 1),
    ("origin", 212 + 25 + 1),
    ("event", 71 + 5 + 1),
    ("arrival", 198 + 25 + 1),
    ("assoc", 134 + 18 + 1),
    ("wfdisc", 264 + 19 + 1),
    ("netmag", 100 + 10 + 1),
    ("remark", 113 + 3 + 1),
    ("sitechan", 130 + 10 + 1),
])
def test_record_lengths(name, length):
    assert TABLES[name].record_length == length
    assert len(TABLES[name].format_row({})) == length


def test_column_offsets_match_the_published_origin_layout():
    # origin columns as printed from Antelope's schema: orid at 48, lddate last, at 220
    assert ORIGIN.offset("orid") == 48
    assert ORIGIN.offset("lddate") == 220
    assert WFDISC.offset("wfid") == 34
    assert [f.name for f in TABLES["event"].fields] == ["evid", "evname", "prefor", "auth", "commid", "lddate"]


def test_every_id_key_is_defined_by_a_table_that_holds_it():
    # css3.0 keyname's range: arid|chanid|commid|edid|evid|inid|magid|orid|stassid|wfid
    assert sorted(ID_OWNER) == sorted(ID_KEYS) == [
        "arid", "chanid", "commid", "edid", "evid", "inid", "magid", "orid", "stassid", "wfid"]
    for key, owner in ID_OWNER.items():
        assert (owner, key) in ID_KEYS[key]
        assert TABLES[owner].field(key).fmt == "%8ld"
    for key, places in ID_KEYS.items():
        assert all(TABLES[t].field(f).fmt == "%8ld" for t, f in places), key


@pytest.mark.parametrize("table, length, offsets", [
    # from the schema dump's formats [D], and the real files of tests/data/antelope-samples
    ("instrument", 240, {"inid": 0}), ("sensor", 140, {"inid": 52, "chanid": 61}),
    ("origerr", 258, {"orid": 0, "commid": 231}), ("stamag", 118, {"magid": 0, "arid": 16, "orid": 25}),
    ("stassoc", 188, {"stassid": 0}), ("wfedit", 122, {"edid": 16}),
])
def test_the_added_layouts(table, length, offsets):
    assert TABLES[table].record_length == length
    assert {k: TABLES[table].offset(k) for k in offsets} == offsets


def test_null_row_prints_each_null_with_its_format():
    line = ORIGIN.format_row({"orid": 7})
    row = ORIGIN.parse_row(line)
    assert row["orid"] == 7 and row["evid"] == -1
    assert row["lat"] == -999.0 and row["etype"] == "-" and row["time"] == -9999999999.999
    assert line[ORIGIN.offset("lddate"):].startswith("-9999999999.99900")


# ---------------------------------------------------------------- format / parse


def test_format_row_writes_antelope_formats():
    line = ARRIVAL.format_row({"sta": "BAL", "time": 1700000012.5, "arid": 42, "iphase": "P", "snr": 12.3456789})
    assert line.startswith("BAL     1700000012.50000       42 ")  # %-6s, %17.5f, %8ld
    assert line.endswith(" -9999999999.99900\n")
    assert "    12.346 " in line  # snr is %10.5g


def test_format_row_rejects_values_too_wide_naming_table_and_field():
    with pytest.raises(ValueError, match=r"origin\.orid: 123456789 prints as '123456789' \(9 characters\)"):
        ORIGIN.format_row({"orid": 123456789})
    with pytest.raises(ValueError, match=r"arrival\.sta: 'TOOLONG'"):
        ARRIVAL.format_row({"sta": "TOOLONG"})
    with pytest.raises(ValueError, match=r"origin: no field named oridd"):
        ORIGIN.format_row({"oridd": 1})
    with pytest.raises(ValueError, match=r"origin\.orid: expected an integer"):
        ORIGIN.format_row({"orid": 1.5})
    with pytest.raises(ValueError, match=r"origin\.lat: nan cannot be stored"):
        ORIGIN.format_row({"lat": float("nan")})
    with pytest.raises(ValueError, match=r"remark\.remark: .* control character"):
        TABLES["remark"].format_row({"remark": "two\nlines"})


def test_parse_row_errors_name_file_line_field_and_fix(tmp_path):
    good = ORIGIN.format_row({"orid": 12, "evid": 3})
    letters = good[:48] + "   12a45" + good[56:]
    with pytest.raises(TableFormatError) as e:
        ORIGIN.parse_row(letters, 7, tmp_path / "db.origin")
    msg = str(e.value)
    assert msg.startswith(f"{tmp_path / 'db.origin'}, line 7: origin.orid (columns 49-56) is '12a45'")
    assert "expected an integer printed as %8ld" in msg and "correct the value" in msg
    assert (e.value.lineno, e.value.path) == (7, str(tmp_path / "db.origin"))

    with pytest.raises(TableFormatError, match=r"line 2: origin record is 200 characters, expected 237"):
        ORIGIN.parse_row(good[:200], 2, "x")
    shifted = good[:47] + "x" + good[48:]
    with pytest.raises(TableFormatError, match=r"column 48 should be the space between time and orid"):
        ORIGIN.parse_row(shifted, 1, "x")
    with pytest.raises(TableFormatError, match=r"control byte 0x00 at column 1"):
        ORIGIN.parse_row("\0" * 237, 1, "x")
    with pytest.raises(TableFormatError, match=r"origin\.lddate \(columns 221-237\) is 'yesterday'"):
        ORIGIN.parse_row(good[:220] + "        yesterday\n", 1, "x")
    with pytest.raises(TableFormatError, match=r"origin\.time .* is '07/01/93', expected a number"):
        ORIGIN.parse_row(good[:30] + "         07/01/93" + good[47:], 1, "x")


def test_blank_text_reads_as_null_and_writes_as_dash():
    good = ORIGIN.format_row({"orid": 12, "evid": 3, "auth": "JSPC", "review": "y"})
    at = ORIGIN.offset("auth")
    blank = good[:at] + " " * 15 + good[at + 15:]
    row = ORIGIN.parse_row(blank, 1, "x")
    assert row["auth"] == "-" and row["review"] == "y"
    assert ORIGIN.format_row(row) == good.replace("JSPC           ", "-              ")


def test_an_lddate_printed_as_a_date_is_kept_as_text():
    sitechan = TABLES["sitechan"]
    line = sitechan.format_row({"sta": "AAK", "chan": "BHZ", "ondate": 1990001, "chanid": 7})
    for date in ("07/01/93", "Aug 11,1993"):
        row = sitechan.parse_row(line[:123] + date.rjust(17) + "\n", 1, "x")
        assert row["lddate"] == date and row["chanid"] == 7
        assert not sitechan.is_deleted(row)
        with pytest.raises(ValueError, match="sitechan.lddate: expected a number"):
            sitechan.format_row(row)  # writing stays strict


def test_a_row_of_nulls_is_a_deleted_row_and_readers_skip_it(tmp_path):
    assert ORIGIN.is_deleted(ORIGIN.parse_row(ORIGIN.null_record.decode()))
    blanks = " ".join(" " * f.width if f.kind == "str" else f.fmt % f.null for f in ORIGIN.fields) + "\n"
    live = ORIGIN.format_row({"orid": 5, "evid": 2, "time": 1e9})
    write = tmp_path / "db.origin"
    write.write_bytes((live + ORIGIN.null_record.decode() + blanks).encode())
    assert [r["orid"] for r in read_table(write, ORIGIN)] == [5]
    assert len(list(read_table(write, ORIGIN, deleted=True))) == 3
    assert not ORIGIN.is_deleted(ORIGIN.parse_row(ORIGIN.format_row({"auth": "x"})))  # one field set


def _value(field: Field) -> st.SearchStrategy:
    w = field.width
    if field.kind == "int":
        return st.integers(-(10 ** (w - 1) - 1), 10**w - 1)
    if field.kind == "str":
        chars = st.characters(min_codepoint=32, max_codepoint=255, blacklist_characters="\x7f")
        return st.text(chars, max_size=w).filter(lambda s: not s.endswith(" "))
    return st.floats(-(10.0 ** (w - 4)), 10.0 ** (w - 3), allow_nan=False)


@st.composite
def _row(draw, table: css30.Table) -> dict[str, object]:
    names = draw(st.sets(st.sampled_from([f.name for f in table.fields])))
    return {n: draw(_value(table.field(n))) for n in sorted(names)}


@settings(max_examples=300, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.data())
def test_format_then_parse_round_trips(data):
    table = data.draw(st.sampled_from(list(TABLES.values())))
    row = data.draw(_row(table))
    try:
        line = table.format_row(row)
    except ValueError:
        assume(False)  # a float whose printed form is too wide: rejected, tested above
    assert len(line) == table.record_length
    parsed = table.parse_row(line)
    assert table.format_row(parsed) == line
    for name, value in row.items():
        f = table.field(name)
        if f.kind == "str":
            assert parsed[name] == (value or "-")
        elif f.kind == "int":
            assert parsed[name] == value
        else:
            assert parsed[name] == float(f.fmt % value)


@settings(max_examples=500, suppress_health_check=[HealthCheck.filter_too_much])
@given(st.data())
def test_garbage_lines_raise_table_format_error_only(data):
    table = data.draw(st.sampled_from(list(TABLES.values())))
    if data.draw(st.booleans()):  # a well-formed record with a few bytes changed
        try:
            chars = list(table.format_row(data.draw(_row(table))))
        except ValueError:
            assume(False)
        for _ in range(data.draw(st.integers(1, 4))):
            chars[data.draw(st.integers(0, len(chars) - 1))] = data.draw(st.characters(max_codepoint=255))
        line = "".join(chars)
    else:
        line = data.draw(st.text(st.characters(max_codepoint=255), max_size=table.record_length + 3))
    try:
        row = table.parse_row(line, 1, "garbage")
    except TableFormatError as e:
        assert str(e).startswith("garbage, line 1: ")
    else:
        assert set(row) == {f.name for f in table.fields}


# ---------------------------------------------------------------- files


def _arrivals(ids):
    return [{"sta": "BAL", "time": 1700000000.0 + i, "arid": a, "chan": "HHZ", "iphase": "P"}
            for i, a in enumerate(ids)]


def test_write_read_append_round_trip(tmp_path):
    path = tmp_path / "db.arrival"
    write_table(path, ARRIVAL, _arrivals([1, 2]))
    append_rows(path, ARRIVAL, _arrivals([3]))
    rows = list(read_table(path, ARRIVAL))
    assert [r["arid"] for r in rows] == [1, 2, 3]
    assert rows[0]["sta"] == "BAL" and rows[0]["deltim"] == -1.0
    assert path.stat().st_size == 3 * ARRIVAL.record_length


def test_write_table_is_atomic_and_keeps_the_mode(tmp_path):
    path = tmp_path / "db.arrival"
    path.write_text("old\n")
    path.chmod(0o640)
    write_table(path, ARRIVAL, _arrivals([5]))
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert os.listdir(tmp_path) == ["db.arrival"]  # no temporary file left
    with pytest.raises(ValueError):
        write_table(path, ARRIVAL, [{"arid": "x"}])
    assert [r["arid"] for r in read_table(path, ARRIVAL)] == [5]  # unchanged by the failed write


def test_truncated_file_is_an_error_naming_the_partial_line(tmp_path):
    # Antelope ends every record with a newline: a last line without one is an
    # interrupted write, reported rather than silently read or dropped.
    path = tmp_path / "db.arrival"
    write_table(path, ARRIVAL, _arrivals([1, 2]))
    with open(path, "ab") as f:
        f.write(ARRIVAL.format_row(_arrivals([3])[0]).encode()[:100])
    with pytest.raises(TableFormatError, match=r"line 3: the file ends in the middle of a arrival record "
                                               r"\(100 of 224 bytes, no newline\).*remove the partial last line"):
        list(read_table(path, ARRIVAL))
    with pytest.raises(TableFormatError, match=r"line 3: the file ends in the middle"):
        scan_ids(tmp_path / "db", ["arrival"])
    with pytest.raises(TableFormatError, match="ends in the middle"):
        append_rows(path, ARRIVAL, _arrivals([4]))


# ---------------------------------------------------------------- id scan


def _reference(ids: list[int]) -> tuple:
    """What the scan must report, computed the obvious way."""
    positive = [i for i in ids if i > 0]
    counts: dict[int, int] = {}
    for i in positive:
        counts[i] = counts.get(i, 0) + 1
    dups = sorted(v for v, c in counts.items() if c > 1)
    return (len(ids), len(ids) - len(positive), max(positive, default=None), len(dups),
            len(positive) - len(counts), tuple(dups[:10]))


def _scanned(tmp_path: Path, table: str = "arrival") -> tuple:
    s = scan_ids(tmp_path / "db", [table]).keys[{v: k for k, v in ID_OWNER.items()}[table]]
    return s.rows, s.nulls, s.max_id, s.duplicated_values, s.duplicate_rows, s.duplicate_examples


@pytest.fixture
def small_blocks(monkeypatch):
    """Blocks of 7 records, so that runs and duplicates cross block boundaries."""
    monkeypatch.setattr(css30, "_BLOCK", 7 * ARRIVAL.record_length)


def test_scan_finds_max_and_rows_of_each_owning_table(tmp_path):
    write_table(tmp_path / "db.arrival", ARRIVAL, _arrivals(range(1, 2001, 2)))
    write_table(tmp_path / "db.origin", ORIGIN, [{"orid": o, "evid": 1} for o in (5, 9, 7)])
    scan = scan_ids(tmp_path / "db")
    assert scan.max_ids() == {"arid": 1999, "orid": 9}
    assert scan.keys["arid"].rows == 1000 and scan.keys["orid"].rows == 3
    assert scan.keys["arid"].duplicated_values == 0
    assert set(scan.missing) == {"event", "wfdisc", "sitechan", "netmag", "remark", "instrument", "stassoc", "wfedit"}
    assert check_ids(scan, {"arid": 1999, "orid": 9}) == []


def test_scan_finds_duplicates_after_a_merge_applied_twice(tmp_path, small_blocks):
    ids = list(range(1, 101)) + [200, 201] + list(range(40, 46)) + [201]
    write_table(tmp_path / "db.arrival", ARRIVAL, _arrivals(ids))
    assert _scanned(tmp_path) == (109, 0, 201, 7, 7, (40, 41, 42, 43, 44, 45, 201))


def test_scan_finds_an_adjacent_duplicate_in_a_long_sorted_table(tmp_path):
    ids = list(range(1, 51)) + list(range(50, 101))
    write_table(tmp_path / "db.arrival", ARRIVAL, _arrivals(ids))
    assert _scanned(tmp_path) == (101, 0, 100, 1, 1, (50,))


def test_scan_finds_a_whole_block_merged_twice(tmp_path, small_blocks):
    ids = list(range(1, 101)) + list(range(61, 141))
    write_table(tmp_path / "db.arrival", ARRIVAL, _arrivals(ids))
    assert _scanned(tmp_path) == _reference(ids) == (180, 0, 140, 40, 40, tuple(range(61, 71)))


def test_scan_counts_null_ids(tmp_path, small_blocks):
    write_table(tmp_path / "db.arrival", ARRIVAL, _arrivals([1, -1, 2, 3, -1, 3]))
    assert _scanned(tmp_path) == (6, 2, 3, 1, 1, (3,))
    problems = check_ids(scan_ids(tmp_path / "db", ["arrival"]), {"arid": 3})
    assert [p.kind for p in problems] == ["duplicates", "null_ids"]


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(1, 60), st.integers(1, 99_999_999), st.just(-1)), max_size=200),
       sort=st.booleans())
def test_scan_agrees_with_a_plain_count(tmp_path_factory, ids, sort):
    tmp = tmp_path_factory.mktemp("scan")
    ids = sorted(ids) if sort else ids
    old = css30._BLOCK
    css30._BLOCK = 5 * ARRIVAL.record_length
    try:
        write_table(tmp / "db.arrival", ARRIVAL, _arrivals(ids))
        assert _scanned(tmp) == _reference(ids)
    finally:
        css30._BLOCK = old


def _write_with_deleted(path: Path, ids: list) -> None:
    """Arrivals with these arids; None stands for a row deleted with dbmark (all null)."""
    path.write_bytes(b"".join(ARRIVAL.null_record if a is None else ARRIVAL.format_row(r).encode()
                              for a, r in zip(ids, _arrivals([-1 if a is None else a for a in ids]))))


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.one_of(st.integers(1, 60), st.integers(1, 99_999_999), st.just(-1), st.just(None)),
                    max_size=300),
       order=st.sampled_from(["as drawn", "sorted", "sorted, then a block appended again"]),
       block_rows=st.sampled_from([5, 64]), block_runs=st.sampled_from([1, 8]), max_runs=st.sampled_from([2, 10_000]))
def test_scan_agrees_with_a_plain_count_on_every_path(tmp_path_factory, ids, order, block_rows, block_runs, max_runs):
    """Blocks split into runs or marked whole, long runs kept or (over the limit) marked,
    deleted rows and null ids in any block: the answer is always the plain count's."""
    if order != "as drawn":
        ids = sorted(ids, key=lambda a: -2 if a is None else a)
    if order.endswith("again"):
        ids += ids[len(ids) // 3:len(ids) // 2]
    tmp = tmp_path_factory.mktemp("scan")
    saved = css30._BLOCK, css30._BLOCK_RUNS, css30._MAX_RUNS
    css30._BLOCK, css30._BLOCK_RUNS, css30._MAX_RUNS = block_rows * ARRIVAL.record_length, block_runs, max_runs
    try:
        _write_with_deleted(tmp / "db.arrival", ids)
        s = scan_ids(tmp / "db", ["arrival"]).keys["arid"]
    finally:
        css30._BLOCK, css30._BLOCK_RUNS, css30._MAX_RUNS = saved
    live = [a for a in ids if a is not None]
    rows, nulls, max_id, values, extra, examples = _reference(live)
    assert (s.rows, s.nulls, s.deleted, s.max_id) == (len(ids), nulls, len(ids) - len(live), max_id)
    assert (s.duplicated_values, s.duplicate_rows, s.duplicate_examples) == (values, extra, examples)
    dups = sorted({a for a in live if a > 0 and live.count(a) > 1})
    assert s.duplicated_ids == tuple(dups[:css30.LISTED])


def test_scan_converts_every_digit_of_marked_ids(tmp_path, monkeypatch):
    """Ids of one to eight digits in no order go through the whole-block conversion."""
    monkeypatch.setattr(css30, "_BLOCK_RUNS", 1)
    ids = [99_999_999, 1, 10_000_000, 90_909_090, 12_345_678, 7, 5_000_001, 99_999_999, 80, 1]
    write_table(tmp_path / "db.arrival", ARRIVAL, _arrivals(ids))
    assert _scanned(tmp_path) == _reference(ids) == (10, 0, 99_999_999, 2, 2, (1, 99_999_999))


def test_scan_of_shuffled_and_time_sorted_tables_finds_the_one_duplicate(tmp_path):
    import random
    rng = random.Random(7)
    ids = list(range(1, 60_000, 2)) + [33_333]  # the last one already used
    for order in ("shuffled", "time-sorted"):
        if order == "shuffled":
            rng.shuffle(ids)
        else:
            ids.sort(key=lambda a: a + rng.randrange(200))
        write_table(tmp_path / "db.arrival", ARRIVAL, _arrivals(ids))
        assert _scanned(tmp_path) == _reference(ids) == (30_001, 0, 59_999, 1, 1, (33_333,)), order


def test_scan_reports_a_bad_id_with_its_line(tmp_path, small_blocks):
    path = tmp_path / "db.arrival"
    write_table(path, ARRIVAL, _arrivals(range(1, 21)))
    data = bytearray(path.read_bytes())
    off = 12 * ARRIVAL.record_length + ARRIVAL.offset("arid")
    data[off:off + 8] = b"   1 300"  # a space inside the number
    path.write_bytes(bytes(data))
    with pytest.raises(TableFormatError, match=r"db\.arrival, line 13: arrival\.arid \(columns 26-33\) is '1 300'"):
        scan_ids(tmp_path / "db", ["arrival"])


def test_scan_reports_a_record_of_the_wrong_length(tmp_path, small_blocks):
    path = tmp_path / "db.arrival"
    write_table(path, ARRIVAL, _arrivals(range(1, 21)))
    lines = path.read_bytes().splitlines(keepends=True)
    lines[9] = lines[9][:50] + lines[9][51:]  # one byte lost
    path.write_bytes(b"".join(lines))
    with pytest.raises(TableFormatError, match=r"line 10: arrival record is 222 characters, expected 223"):
        scan_ids(tmp_path / "db", ["arrival"])


def test_remark_ids_repeat_by_design(tmp_path):
    remark = TABLES["remark"]
    write_table(tmp_path / "db.remark", remark,
                [{"commid": 4, "lineno": 1, "remark": "first"}, {"commid": 4, "lineno": 2, "remark": "second"}])
    s = scan_ids(tmp_path / "db", ["remark"]).keys["commid"]
    assert (s.max_id, s.rows, s.duplicates_checked, s.duplicated_values) == (4, 2, False, 0)


def test_check_ids_explains_each_problem(tmp_path):
    write_table(tmp_path / "db.arrival", ARRIVAL, _arrivals([1, 2, 3, 2]))
    write_table(tmp_path / "db.origin", ORIGIN, [{"orid": 10}])
    problems = check_ids(scan_ids(tmp_path / "db"), {"arid": 2})
    by_kind = {p.kind: str(p) for p in problems}
    assert set(by_kind) == {"above_lastid", "duplicates", "not_in_lastid"}
    assert "holds arid up to 3 but lastid is 2" in by_kind["above_lastid"]
    assert "would issue 3..3 again; set lastid arid to 3 or more" in by_kind["above_lastid"]
    assert "1 arid values are used more than once" in by_kind["duplicates"] and "(1 extra rows; 2)" in by_kind["duplicates"]
    assert "lastid has no orid row" in by_kind["not_in_lastid"]


def test_scan_rejects_a_table_that_owns_no_key(tmp_path):
    with pytest.raises(ValueError, match="assoc: not the owning table"):
        scan_ids(tmp_path / "db", ["assoc"])
