"""dbids.lastid parsing and writing, and the failover lastid arithmetic."""
from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from antelope_ha.lastid import (
    LastidError,
    failover_lastid,
    format_lastid,
    parse_lastid,
    plan_failover_lastid,
    raised_lastid,
    read_lastid,
    write_lastid,
)
from antelope_ha.config import SiteConfig
from antelope_ha.runner import LocalRunner
from antelope_ha.site import Site

LDDATE = 1700000000.12345


def _line(name: str, value: int | str) -> str:
    """A lastid record as Datascope prints it: "%-15s %8ld %17.5f"."""
    return f"{name:<15} {value:>8} {LDDATE:17.5f}\n"


SAMPLE = _line("arid", 1725221) + _line("evid", 86259) + _line("orid", 86259) + _line("wfid", 5175599)
assert SAMPLE.splitlines()[0] == "arid             1725221  1700000000.12345"


def test_format_lastid_writes_the_css30_layout():
    text = format_lastid({"wfid": 5175599, "orid": 86259, "evid": 86259, "arid": 1725221}, LDDATE)
    assert text == SAMPLE
    assert all(len(line) == 42 for line in text.splitlines())


def test_read_and_write_a_real_file(tmp_path):
    path = tmp_path / "dbids.lastid"
    write_lastid(path, {"orid": 7, "arid": 12}, LDDATE)
    assert read_lastid(path) == {"arid": 12, "orid": 7}
    path.write_text(SAMPLE)
    assert read_lastid(path) == {"arid": 1725221, "evid": 86259, "orid": 86259, "wfid": 5175599}
    assert parse_lastid("", "empty") == {}


@pytest.mark.parametrize("text, message", [
    (SAMPLE + _line("orid", 12),
     r"dbids\.lastid, line 5: keyname orid is also on line 3; lastid has one row per key: "
     r"keep the row with the larger keyvalue \(86259\) and delete the other"),
    (_line("orid", -5),
     r"line 1: orid keyvalue is -5; the last id issued cannot be negative: set it to the highest orid in use"),
    (_line("orid", "12x4"),
     r"^/sites/bus/dbids\.lastid, line 1: lastid\.keyvalue \(columns 17-24\) is '12x4', expected an integer .* "
     r"A lastid line is keyname \(%-15s\), keyvalue \(%8ld\) and lddate \(%17\.5f\), one space apart$"),
    ("orid 12 1700000000\n", r"line 1: lastid record is 18 characters, expected 42"),
    (SAMPLE + "orid     ", r"line 5: the file ends without a newline, in the middle of a record \(an interrupted "
                          r"write\); restore it from its replica or rewrite it with format_lastid$"),
    (_line("Orid", 12), r"^/sites/bus/dbids\.lastid, line 1: keyname 'Orid' is not an id key name \(lower-case "
                        r"letters, digits, _\); correct the line$"),
    (SAMPLE.replace("\n", "\r\n"), r"line 1: control byte 0x0d at column 43 .* DOS line ends: convert it with dos2unix"),
])
def test_bad_lastid_is_refused_naming_line_and_fix(text, message):
    with pytest.raises(LastidError, match=message):
        parse_lastid(text, "/sites/bus/dbids.lastid")


def test_format_lastid_refuses_bad_values():
    with pytest.raises(ValueError, match="orid keyvalue must be a non-negative integer"):
        format_lastid({"orid": -1}, LDDATE)
    with pytest.raises(ValueError, match="not an id key name"):
        format_lastid({"a very long key name": 1}, LDDATE)


def test_raised_lastid_never_lowers_a_key():
    """Values are only ever raised. With the rule broken (``max()`` dropped, the
    value given simply replacing the current one) orid comes back 40: this test
    failed so, by hand, before the rule was put back."""
    current = {"orid": 100, "arid": 7}
    assert raised_lastid(current, {"orid": 40, "evid": 3}) == {"orid": 100, "arid": 7, "evid": 3}
    assert raised_lastid(current, {"orid": 101}) == {"orid": 101, "arid": 7}
    assert raised_lastid({}, {"orid": 0}) == {"orid": 0}
    assert current == {"orid": 100, "arid": 7}


def test_a_site_never_lowers_its_lastid_file(tmp_path):
    """The step as the flows run it, on a real file: asked for a value below
    the current lastid it writes nothing; asked for more it raises only that key."""
    path = tmp_path / "dbids" / "dbids.lastid"
    path.parent.mkdir()
    write_lastid(path, {"orid": 500, "arid": 9000}, LDDATE)
    site = Site(SiteConfig(name="bus", host="localhost", transport="local", rtexec_dir=str(tmp_path),
                           idserver_address="localhost:2498"), LocalRunner(cwd=str(tmp_path)))
    before = path.read_bytes()
    outcome = site.raise_lastid({"orid": 499, "arid": 1}, "test: lower values")
    assert (outcome.changed, outcome.detail) == (False, "lastid already covers every key")
    assert path.read_bytes() == before
    outcome = site.raise_lastid({"orid": 2, "arid": 9001}, "test: one key higher")
    assert outcome.changed and outcome.detail == "lastid raised: arid 9000 -> 9001"
    assert read_lastid(path) == {"orid": 500, "arid": 9001}


def test_failover_lastid_covers_ms_ids_and_bus_own_ids():
    replicated = {"orid": 1000, "evid": 500, "arid": 90000}
    own_max = {"orid": 1700, "evid": 480, "wfid": 33}
    assert failover_lastid(replicated, 100, own_max) == {
        "orid": 1701,  # BUS already wrote orids up to 1700: above replicated + margin (1100)
        "evid": 600,  # replicated + margin, BUS's own max is below
        "arid": 90100,  # BUS has no arrivals yet
        "wfid": 34,  # never replicated: only BUS's own ids bound it
    }


def test_failover_lastid_takes_a_margin_per_key():
    assert failover_lastid({"orid": 10, "wfid": 10}, {"orid": 5, "wfid": 500}, {}) == {"orid": 15, "wfid": 510}
    with pytest.raises(ValueError, match="no failover margin for wfid"):
        failover_lastid({"orid": 10, "wfid": 10}, {"orid": 5}, {})
    with pytest.raises(ValueError, match="failover margin for orid is -1"):
        failover_lastid({"orid": 10}, -1, {})


def test_plan_explains_each_choice():
    plans = {p.key: p for p in plan_failover_lastid({"orid": 1000, "evid": 500}, 100, {"orid": 1700})}
    assert (plans["orid"].replicated, plans["orid"].margin, plans["orid"].own_max, plans["orid"].chosen) == (
        1000, 100, 1700, 1701)
    assert "own database already holds orid up to 1700" in plans["orid"].reason
    assert "above replicated 1000 + margin 100 = 1100" in plans["orid"].reason
    assert str(plans["evid"]) == ("evid: 600 (replicated 500 + margin 100: covers the ids MS may have issued "
                                  "since the last replication)")


ids = st.dictionaries(st.sampled_from(["orid", "evid", "arid", "wfid", "magid"]), st.integers(0, 10**7))


@given(replicated=ids, own_max=ids, margin=st.integers(0, 10**5))
def test_failover_lastid_never_reissues(replicated, own_max, margin):
    chosen = failover_lastid(replicated, margin, own_max)
    assert set(chosen) == set(replicated) | set(own_max)
    for key, value in chosen.items():
        assert value > own_max.get(key, -1)
        assert value >= replicated.get(key, 0) + (margin if key in replicated else 0)
        assert value in (replicated.get(key, -1) + margin, own_max.get(key, -2) + 1)


@given(st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,14}", fullmatch=True), st.integers(0, 99_999_999)),
       st.floats(0, 4e9))
def test_format_parse_round_trip(values, lddate):
    assert parse_lastid(format_lastid(values, lddate), "x") == values


@given(current=ids, values=ids)
def test_raised_lastid_is_at_least_both(current, values):
    raised = raised_lastid(current, values)
    assert set(raised) == set(current) | set(values)
    for key, value in raised.items():
        assert value == max(current.get(key, value), values.get(key, value))


def test_read_and_write_name_the_file_and_date_each_row(tmp_path):
    path = tmp_path / "dbids.lastid"
    path.write_text(_line("orid", -1))
    with pytest.raises(LastidError, match=rf"^{path}, line 1: orid keyvalue is -1"):
        read_lastid(path)
    write_lastid(path, {"orid": 7}, LDDATE)
    assert path.read_text() == _line("orid", 7)
    before = time.time()
    write_lastid(path, {"orid": 8})
    lddate = float(path.read_text().split()[2])
    assert before - 0.01 <= lddate <= time.time() + 0.01


def test_format_lastid_takes_integers_only():
    for bad in (True, 5.0, "5"):
        with pytest.raises(ValueError, match="orid keyvalue must be a non-negative integer"):
            format_lastid({"orid": bad}, LDDATE)


def test_plan_reasons_word_for_word():
    plans = {p.key: p for p in plan_failover_lastid({"orid": 1000, "evid": 500, "arid": 91},
                                                     {"orid": 100, "evid": 100, "arid": 10},
                                                     {"orid": 1700, "evid": 480, "arid": 100, "wfid": 33})}
    assert plans["orid"].reason == ("BUS's own database already holds orid up to 1700, above replicated 1000 + margin "
                                    "100 = 1100; starting above it keeps BUS from reissuing those ids")
    assert plans["evid"].reason == ("replicated 500 + margin 100: covers the ids MS may have issued since the last "
                                    "replication; BUS's own maximum 480 is below")
    assert plans["wfid"].reason == ("BUS's own database already holds wfid up to 33; starting above it keeps BUS "
                                    "from reissuing those ids")
    assert (plans["wfid"].margin, plans["wfid"].chosen) == (0, 34)  # never replicated: no margin asked for it
    # replicated + margin equal to BUS's own max + 1: the replica is the reason given
    assert (plans["arid"].chosen, plans["arid"].reason) == (
        101, "replicated 91 + margin 10: covers the ids MS may have issued since the last replication; "
                 "BUS's own maximum 100 is below")
