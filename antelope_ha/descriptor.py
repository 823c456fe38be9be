"""Datascope database descriptor files (``db/db``) and their ``dbidserver`` line.

A descriptor is a text file named like the database::

    # Datascope Database Descriptor file
    schema css3.0
    dbpath /some/dir/{db}
    dblocks nfs
    dbidserver idhost.example.org:2498

    Description &Literal{
    free text
    }

``dbidserver host:port`` names the id server the database takes new ids from;
a ``dbidserver`` line left empty (as cssdescriptor and dbcreate write it) or set
to ``none`` names none. Lines this module does not understand are kept byte for
byte, and the text of a ``&Literal{`` block (or of a ``&Tbl{``/``&Arr{`` block)
is never read as a directive, even where a line in it starts with ``dbidserver``.

The old two-line form, the schema name then the dbpath (``css3.0`` then
``./{db}:/data/dbmaster/{reno}``), is read; it cannot name an id server, so
pointing it at one is refused with the keyword form to write instead.
"""
from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from antelope_ha.css30 import atomic_write

DIRECTIVES = ("schema", "dbpath", "dblocks", "dbidserver")
_SERVER_RE = re.compile(
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9](?:[A-Za-z0-9.-]*[A-Za-z0-9])?):(?P<port>[0-9]{1,5})")
_DIRECTIVE_RE = re.compile(r"(?P<lead>[ \t]*(?P<name>\S+)(?P<gap>[ \t]*))(?P<value>[^ \t\r\n]*)(?P<rest>[^\n]*\n?)")
_BLOCK_START_RE = re.compile(r"[ \t]*\S+[ \t]+&(?P<kind>Literal|Tbl|Arr)\{[ \t\r]*\n?")
_NO_SERVER = ("", "none")  # an empty dbidserver value, or none: no id server


class DescriptorError(ValueError):
    """A descriptor that cannot be read or changed safely; the message names the file and the fix."""


@dataclass(frozen=True)
class Descriptor:
    schema: str | None
    dbpath: str | None
    dblocks: str | None
    dbidserver: str | None  # None: no id server (no line, an empty one, or none)
    other_lines: tuple[str, ...]  # every other line, verbatim with its line ending
    two_line: bool = False  # the old form: the schema name, then the dbpath, no keywords


def check_server(server: str, source: str | os.PathLike[str] = "dbidserver") -> tuple[str, int]:
    """(host, port) of a ``host:port`` id server address, port 1-65535."""
    m = _SERVER_RE.fullmatch(server)
    if not m or not 1 <= int(m.group("port")) <= 65535:
        raise DescriptorError(f"{source}: {server!r} is not host:port with a port from 1 to 65535 "
                              "(for example idhost.example.org:2498)")
    return m.group("host"), int(m.group("port"))


def _lines(text: str) -> list[str]:
    return re.findall(r"[^\n]*\n|[^\n]+\Z", text)  # Datascope ends lines at \n only


def _two_line(lines: list[str]) -> bool:
    """The old form starts with a bare schema name: one word, not a keyword or comment."""
    words = lines[0].split() if lines else []
    return len(words) == 1 and words[0] not in DIRECTIVES and not words[0].startswith("#")


def _scan(text: str, source) -> tuple[dict[str, tuple[int, re.Match]], list[str]]:
    """The directive lines (name -> (line index, match)) and all lines, with their endings."""
    lines = _lines(text)
    found: dict[str, tuple[int, re.Match]] = {}
    block: str | None = None
    depth = opened = 0
    for i, line in enumerate(lines):
        if block == "Literal":
            if line.strip() == "}":
                block = None
            continue
        if block:
            depth += line.rstrip().endswith("{") - (line.strip() == "}")
            block = block if depth else None
            continue
        start = _BLOCK_START_RE.fullmatch(line)
        if start:
            block, depth, opened = start.group("kind"), 1, i + 1
            continue
        m = _DIRECTIVE_RE.fullmatch(line)
        if not m or m.group("name") not in DIRECTIVES:
            continue
        name = m.group("name")
        if name in found:
            raise DescriptorError(f"{source}: {name} is on line {found[name][0] + 1} and again on line {i + 1}; "
                                  f"keep one {name} line")
        found[name] = (i, m)
    if block:
        raise DescriptorError(f"{source}: the &{block}{{ block opened on line {opened} is never closed; "
                              "add a line holding only }")
    return found, lines


def _server_of(m: re.Match, lineno: int, source) -> str | None:
    value, rest = m.group("value"), m.group("rest").strip()
    if rest and not rest.startswith("#"):
        raise DescriptorError(f"{source}, line {lineno}: unexpected {rest!r} after the dbidserver address; "
                              "write the line as dbidserver host:port")
    if value.lower() in _NO_SERVER:
        return None
    check_server(value, f"{source}, line {lineno}")
    return value


def parse_descriptor(text: str, source: str | os.PathLike[str]) -> Descriptor:
    """The directives of a descriptor's text; dbidserver is None when no id server is named."""
    lines = _lines(text)
    if _two_line(lines):
        dbpath = lines[1].strip() if len(lines) > 1 else ""
        return Descriptor(lines[0].strip(), dbpath or None, None, None, (), two_line=True)
    found, lines = _scan(text, source)

    def value(name: str) -> str | None:
        if name not in found:
            return None
        i, m = found[name]
        if name == "dbidserver":
            return _server_of(m, i + 1, source)
        return (m.group("value") + m.group("rest")).strip() or None

    used = {i for i, _ in found.values()}
    return Descriptor(value("schema"), value("dbpath"), value("dblocks"), value("dbidserver"),
                      tuple(line for i, line in enumerate(lines) if i not in used))


def _two_line_refused(text: str, source: str | os.PathLike[str]) -> DescriptorError:
    d = parse_descriptor(text, source)
    keyword_form = f"schema {d.schema}\n" + (f"dbpath {d.dbpath}\n" if d.dbpath else "") + "dbidserver host:port\n"
    return DescriptorError(
        f"{source}: an old two-line descriptor ({d.schema!r}, then the dbpath), which cannot name an id "
        f"server; rewrite it in the keyword form, then run again:\n{keyword_form}")


def check_editable(text: str, source: str | os.PathLike[str]) -> Descriptor:
    """The descriptor, if set_dbidserver can point it at an id server; else the error saying
    how to convert it. Read before a takeover edits anything."""
    d = parse_descriptor(text, source)
    if d.two_line:
        raise _two_line_refused(text, source)
    return d


def missing_descriptor(source: str | os.PathLike[str]) -> DescriptorError:
    """The error for a descriptor file that is not there."""
    return DescriptorError(f"{source}: no such database descriptor; correct the site's db setting "
                           "(the descriptor's path, relative to rtexec_dir) or create the descriptor")


def set_dbidserver(text: str, server: str, source: str | os.PathLike[str]) -> str:
    """The text with its dbidserver line naming ``server``; every other byte unchanged.

    An empty (or none) dbidserver line is filled in; a descriptor with no such line gets
    one after its last directive (or at its end), with that line's line ending. The old
    two-line form is refused (it has no place for the line)."""
    check_server(server)
    if _two_line(_lines(text)):
        raise _two_line_refused(text, source)
    found, lines = _scan(text, source)
    if "dbidserver" in found:
        i, m = found["dbidserver"]
        _server_of(m, i + 1, source)
        lead = m.group("lead") if m.group("gap") else m.group("lead") + " "
        lines[i] = lead + server + m.group("rest")
        return "".join(lines)
    at = max((i for i, _ in found.values()), default=len(lines) - 1)
    ending = "\r\n" if lines and lines[max(at, 0)].endswith("\r\n") else "\n"
    if lines and not lines[at].endswith("\n"):
        lines[at] += ending
    lines.insert(at + 1, f"dbidserver {server}{ending}")
    return "".join(lines)


def backup_name(name: str) -> str:
    """``<name>-<UTC time>.bak``: not ``<name>.bak``, which Datascope would take for a table."""
    now = time.time_ns()
    return time.strftime(f"{name}-%Y%m%dT%H%M%S", time.gmtime(now // 10**9)) + f".{now % 10**9:09d}Z.bak"


def rewrite_dbidserver(path: str | os.PathLike[str], server: str) -> bool:
    """Point a descriptor file at ``server``. Returns False, touching nothing, if it already does.

    Otherwise the previous content is kept as ``<name>-<UTC time>.bak`` beside it (not
    ``<name>.bak``, which Datascope would take for a table of the database) and the file is
    replaced atomically, keeping its mode.
    """
    path = Path(path)
    try:
        text = path.read_bytes().decode("latin-1")  # byte for byte, whatever the encoding
    except FileNotFoundError:
        raise missing_descriptor(path) from None
    if parse_descriptor(text, path).dbidserver == server:
        return False
    new = set_dbidserver(text, server, path)
    shutil.copy2(path, path.with_name(backup_name(path.name)))
    atomic_write(path, new.encode("latin-1"))
    return True
