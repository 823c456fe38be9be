"""Datascope descriptors: parsing, and rewriting only the dbidserver line."""
from __future__ import annotations

import calendar
import os
import re
import stat
import time

import pytest

from pathlib import Path

from antelope_ha.descriptor import (
    Descriptor,
    DescriptorError,
    backup_name,
    check_editable,
    check_server,
    parse_descriptor,
    rewrite_dbidserver,
    set_dbidserver,
)

SAMPLES = Path(__file__).parent / "data" / "antelope-samples"

PLAIN = """# Datascope Database Descriptor file

schema css3.0
dbpath /some/dir/{db}
dblocks nfs
dbidserver idhost.example.org:2498

Description &Literal{
free text
}
"""

# Everything a hand-kept descriptor may hold: CRLF endings, trailing blanks and tabs,
# comments, unknown lines, a Literal block with a line starting with dbidserver, a Tbl
# block, and no newline at the end of the file.
UNUSUAL = (
    "# Datascope Database Descriptor file   \r\n"
    "\r\n"
    "schema css3.0\r\n"
    "dbpath\t/data/db/{rt}:/archive/{db}  \r\n"
    "  # dbidserver commented:1 is not the directive\r\n"
    "dblocks nfs\r\n"
    "dbidserver   ms-ids.example.org:2498 \t # id server on MS\r\n"
    "unknown_setting  42\r\n"
    "Description &Literal{\r\n"
    "dbidserver bus-ids.example.org:2498\r\n"
    "   used during the 2019 drill\r\n"
    "}\r\n"
    "extra &Tbl{\r\n"
    "dbidserver nested:1\r\n"
    "}\r\n"
    "last line without newline  "
)


def test_parse_plain_descriptor():
    d = parse_descriptor(PLAIN, "db/db")
    assert (d.schema, d.dbpath, d.dblocks, d.dbidserver) == ("css3.0", "/some/dir/{db}", "nfs", "idhost.example.org:2498")
    assert d.other_lines == ("# Datascope Database Descriptor file\n", "\n", "\n", "Description &Literal{\n",
                             "free text\n", "}\n")


def test_parse_ignores_directives_inside_blocks_and_comments():
    d = parse_descriptor(UNUSUAL, "db/db")
    assert d.dbidserver == "ms-ids.example.org:2498"
    assert d.dbpath == "/data/db/{rt}:/archive/{db}"
    assert "dbidserver bus-ids.example.org:2498\r\n" in d.other_lines
    assert len(d.other_lines) == len(UNUSUAL.split("\n")) - 4  # all but the four directives
    assert d.other_lines[-1] == "last line without newline  "
    assert parse_descriptor("schema css3.0\n", "x").dbidserver is None


def test_set_dbidserver_changes_only_that_line_byte_for_byte():
    new = set_dbidserver(UNUSUAL, "bus-ids.example.org:2498", "db/db")
    expected = UNUSUAL.replace("dbidserver   ms-ids.example.org:2498 \t # id server on MS\r\n",
                               "dbidserver   bus-ids.example.org:2498 \t # id server on MS\r\n")
    assert new == expected
    assert new.count("\r\n") == UNUSUAL.count("\r\n") and new.endswith("without newline  ")
    assert set_dbidserver(new, "ms-ids.example.org:2498", "db/db") == UNUSUAL


@pytest.mark.parametrize("text, message", [
    ("dbidserver idhost\n", r"db/db, line 1: 'idhost' is not host:port"),
    ("dbidserver idhost:0\n", r"'idhost:0' is not host:port with a port from 1 to 65535"),
    ("dbidserver idhost:65536\n", r"'idhost:65536' is not host:port"),
    ("dbidserver idhost 2498\n", r"line 1: unexpected '2498' after the dbidserver address"),
    ("dbidserver a:1\n\ndbidserver b:2\n", r"db/db: dbidserver is on line 1 and again on line 3; keep one dbidserver line"),
    ("dbidserver a:1\nDescription &Literal{\ntext\n", r"the &Literal\{ block opened on line 2 is never closed"),
])
def test_bad_descriptor_is_refused_with_the_fix(text, message):
    with pytest.raises(DescriptorError, match=message):
        set_dbidserver(text, "bus:2498", "db/db")


def test_server_argument_is_checked():
    assert check_server("[::1]:2498") == ("[::1]", 2498)
    assert check_server("10.0.0.5:1") == ("10.0.0.5", 1)
    for bad in ("bus", "bus:", ":2498", "bus:99999", "bus:2498 ", "bu s:1"):
        with pytest.raises(DescriptorError, match="is not host:port"):
            set_dbidserver(PLAIN, bad, "db/db")


def test_rewrite_file_atomically_with_backup_and_mode(tmp_path):
    path = tmp_path / "db"
    path.write_bytes(UNUSUAL.encode())
    path.chmod(0o640)
    assert rewrite_dbidserver(path, "bus-ids.example.org:2498") is True
    assert path.read_bytes() == set_dbidserver(UNUSUAL, "bus-ids.example.org:2498", "x").encode()
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    backups = [p for p in tmp_path.iterdir() if p.name != "db"]
    assert len(backups) == 1 and backups[0].name.startswith("db-") and backups[0].suffix == ".bak"
    assert backups[0].read_bytes() == UNUSUAL.encode()


def test_rewrite_converges_without_touching_the_file(tmp_path):
    path = tmp_path / "db"
    path.write_text(PLAIN)
    os.utime(path, ns=(1_000_000_000, 1_000_000_000))
    assert rewrite_dbidserver(path, "idhost.example.org:2498") is False
    assert path.stat().st_mtime_ns == 1_000_000_000
    assert os.listdir(tmp_path) == ["db"]


# What cssdescriptor and dbcreate write, byte for byte (dbmon-demo's descriptor), and
# hand-written variants seen in antelope_contrib (bin/export/events/examples/dbfull/reno).
DBMON = (SAMPLES / "dbmon-demo" / "demo").read_text()


def test_an_empty_or_none_dbidserver_names_no_id_server():
    assert DBMON == "#\nschema css3.0\ndblocks local\ndbidserver \ndbpath \n"
    d = parse_descriptor(DBMON, "demo")
    assert (d.schema, d.dblocks, d.dbidserver, d.dbpath, d.two_line) == ("css3.0", "local", None, None, False)
    for line in ("dbidserver\n", "dbidserver none\n", "dbidserver   NONE  # not yet\n"):
        assert parse_descriptor("schema css3.0\n" + line, "x").dbidserver is None


@pytest.mark.parametrize("text, expected", [
    (DBMON, DBMON.replace("dbidserver \n", "dbidserver bus:2498\n")),
    ("schema css3.0\ndbidserver\ndblocks\n", "schema css3.0\ndbidserver bus:2498\ndblocks\n"),
    ("schema css3.0\ndbidserver none # none yet\r\n", "schema css3.0\ndbidserver bus:2498 # none yet\r\n"),
    # no dbidserver line: one is added after the last directive, with its line ending
    ("# db\r\nschema css3.0\r\ndbpath ./{db}\r\nDescription &Literal{\r\ndbidserver x:1\r\n}\r\n",
     "# db\r\nschema css3.0\r\ndbpath ./{db}\r\ndbidserver bus:2498\r\nDescription &Literal{\r\n"
     "dbidserver x:1\r\n}\r\n"),
    ("schema css3.0", "schema css3.0\ndbidserver bus:2498\n"),
    ("# only a comment\n", "# only a comment\ndbidserver bus:2498\n"),
])
def test_pointing_a_descriptor_at_a_server_fills_or_adds_the_line_only(text, expected):
    new = set_dbidserver(text, "bus:2498", "db")
    assert new == expected
    assert parse_descriptor(new, "db").dbidserver == "bus:2498"
    assert set_dbidserver(new, "bus:2498", "db") == new


def test_a_real_descriptor_round_trips_byte_for_byte(tmp_path):
    """dbmon-demo's descriptor pointed at BUS's server and back at MS's, through the
    file edit the flows use: only the dbidserver line ever differs from the original."""
    path = tmp_path / "demo"
    path.write_bytes((SAMPLES / "dbmon-demo" / "demo").read_bytes())
    assert rewrite_dbidserver(path, "bus-ids.example.org:2498") is True
    assert path.read_bytes() == DBMON.replace("dbidserver \n", "dbidserver bus-ids.example.org:2498\n").encode()
    assert rewrite_dbidserver(path, "ms-ids.example.org:2498") is True
    back = path.read_bytes().replace(b"dbidserver ms-ids.example.org:2498\n", b"dbidserver \n")
    assert back == (SAMPLES / "dbmon-demo" / "demo").read_bytes()
    assert rewrite_dbidserver(path, "ms-ids.example.org:2498") is False


def test_the_old_two_line_descriptor_is_read_and_editing_it_is_refused_with_the_conversion(tmp_path):
    text = (SAMPLES / "dbcorrelate-testcase1" / "db").read_text()
    assert text == "css3.0\n./{db}:/data/dbmaster/{reno}\n"
    d = parse_descriptor(text, "db")
    assert (d.schema, d.dbpath, d.dbidserver, d.two_line) == ("css3.0", "./{db}:/data/dbmaster/{reno}", None, True)
    path = tmp_path / "db"
    path.write_text(text)
    for edit in (lambda: rewrite_dbidserver(path, "bus:2498"), lambda: check_editable(text, path)):
        with pytest.raises(DescriptorError) as e:
            edit()
        assert str(e.value) == (
            f"{path}: an old two-line descriptor ('css3.0', then the dbpath), which cannot name an id server; "
            "rewrite it in the keyword form, then run again:\nschema css3.0\n"
            "dbpath ./{db}:/data/dbmaster/{reno}\ndbidserver host:port\n")
    assert path.read_text() == text and os.listdir(tmp_path) == ["db"]
    converted = "schema css3.0\ndbpath ./{db}:/data/dbmaster/{reno}\ndbidserver host:2498\n"
    assert parse_descriptor(converted, "db").dbpath == d.dbpath


def test_latin1_bytes_are_kept(tmp_path):
    path = tmp_path / "db"
    raw = PLAIN.replace("free text", "Zürich \xff").encode("latin-1") + "ünicode".encode()
    path.write_bytes(raw)
    rewrite_dbidserver(path, "bus:2498")
    assert path.read_bytes() == raw.replace(b"idhost.example.org:2498", b"bus:2498")


# --- word for word, and the edges of the format ---------------------------------------------------
def test_the_errors_name_the_file_the_line_and_the_fix():
    with pytest.raises(DescriptorError) as e:
        check_server("bus")
    assert str(e.value) == ("dbidserver: 'bus' is not host:port with a port from 1 to 65535 "
                            "(for example idhost.example.org:2498)")
    assert check_server("bus:65535") == ("bus", 65535)
    for text, message in [
        ("schema css3.0\ndbidserver idhost\n", "db/db, line 2: 'idhost' is not host:port"),
        ("schema css3.0\ndbidserver idhost:1 2\n",
         "db/db, line 2: unexpected '2' after the dbidserver address; write the line as dbidserver host:port"),
        ("dbpath a\ndbpath b\n", "db/db: dbpath is on line 1 and again on line 2; keep one dbpath line"),
        ("x &Tbl{\n", "db/db: the &Tbl{ block opened on line 1 is never closed; add a line holding only }"),
    ]:
        for read in (parse_descriptor, check_editable):
            with pytest.raises(DescriptorError) as e:
                read(text, "db/db")
            assert str(e.value).startswith(message), (text, str(e.value))


def test_blocks_nest_and_a_literal_block_ends_at_its_first_closing_line():
    text = ("schema css3.0\n"
            "extra &Tbl{\n  one\n  inner &Arr{  \n    dbidserver nested:1\n  }\n  dbidserver nested:2\n}\n"
            "Description &Literal{\nends with a brace {\n}\n"
            "dbidserver real:3\n")
    d = parse_descriptor(text, "db")
    assert d.dbidserver == "real:3"
    assert len(d.other_lines) == len(text.splitlines()) - 2


def test_an_empty_or_one_line_descriptor_is_read():
    assert parse_descriptor("", "db") == Descriptor(None, None, None, None, ())
    d = parse_descriptor("css3.0\n", "db")
    assert (d.schema, d.dbpath, d.dbidserver, d.other_lines, d.two_line) == ("css3.0", None, None, (), True)
    with pytest.raises(DescriptorError) as e:
        check_editable("css3.0\n", "db")
    assert str(e.value).endswith("then run again:\nschema css3.0\ndbidserver host:port\n")


def test_a_missing_or_bad_descriptor_file_is_named(tmp_path):
    with pytest.raises(DescriptorError) as e:
        rewrite_dbidserver(tmp_path / "db", "bus:1")
    assert str(e.value) == (f"{tmp_path / 'db'}: no such database descriptor; correct the site's db setting "
                            "(the descriptor's path, relative to rtexec_dir) or create the descriptor")
    (tmp_path / "db").write_text("dbidserver idhost\n")
    with pytest.raises(DescriptorError, match=rf"^{tmp_path / 'db'}, line 1: 'idhost' is not host:port"):
        rewrite_dbidserver(tmp_path / "db", "bus:1")


def test_the_backup_is_named_by_the_utc_time_of_the_edit(monkeypatch):
    monkeypatch.setenv("TZ", "Asia/Tokyo")  # local time 9 hours off: the name is in UTC all the same
    time.tzset()
    try:
        before = time.time_ns()
        name = backup_name("db")
        after = time.time_ns()
    finally:
        monkeypatch.undo()
        time.tzset()
    m = re.fullmatch(r"db-(\d{8}T\d{6})\.(\d{9})Z\.bak", name)
    assert m, name
    ns = calendar.timegm(time.strptime(m.group(1), "%Y%m%dT%H%M%S")) * 10**9 + int(m.group(2))
    assert before <= ns <= after


def test_the_backup_name_keeps_every_nanosecond(monkeypatch):
    """A float division would round ...999999999 ns up into the next second."""
    monkeypatch.setattr(time, "time_ns", lambda: 1_700_000_000_999_999_999)
    assert backup_name("db") == "db-20231114T221320.999999999Z.bak"
