"""Datascope descriptors: parsing, and rewriting only the dbidserver line."""
from __future__ import annotations

import os
import stat

import pytest

from antelope_ha.descriptor import (
    DescriptorError,
    check_server,
    parse_descriptor,
    rewrite_dbidserver,
    set_dbidserver,
)

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
    ("schema css3.0\nDescription &Literal{\ndbidserver a:1\n}\n",
     r"db/db: no dbidserver line; add a line 'dbidserver host:port'"),
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


def test_rewrite_refuses_a_descriptor_without_dbidserver(tmp_path):
    path = tmp_path / "db"
    path.write_text("schema css3.0\n")
    with pytest.raises(DescriptorError, match=f"{path}: no dbidserver line"):
        rewrite_dbidserver(path, "bus:2498")
    assert path.read_text() == "schema css3.0\n" and os.listdir(tmp_path) == ["db"]


def test_latin1_bytes_are_kept(tmp_path):
    path = tmp_path / "db"
    raw = PLAIN.replace("free text", "Zürich \xff").encode("latin-1") + "ünicode".encode()
    path.write_bytes(raw)
    rewrite_dbidserver(path, "bus:2498")
    assert path.read_bytes() == raw.replace(b"idhost.example.org:2498", b"bus:2498")
