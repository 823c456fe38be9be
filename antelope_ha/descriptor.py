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

``dbidserver host:port`` names the id server the database takes new ids from.
Lines this module does not understand are kept byte for byte, and the text of a
``&Literal{`` block (or of a ``&Tbl{``/``&Arr{`` block) is never read as a
directive, even where a line in it starts with ``dbidserver``.
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


class DescriptorError(ValueError):
    """A descriptor that cannot be read or changed safely; the message names the file and the fix."""


@dataclass(frozen=True)
class Descriptor:
    schema: str | None
    dbpath: str | None
    dblocks: str | None
    dbidserver: str | None
    other_lines: tuple[str, ...]  # every other line, verbatim with its line ending


def check_server(server: str, source: str | os.PathLike[str] = "dbidserver") -> tuple[str, int]:
    """(host, port) of a ``host:port`` id server address, port 1-65535."""
    m = _SERVER_RE.fullmatch(server)
    port = int(m.group("port")) if m else 0
    if not m or not 1 <= port <= 65535:
        raise DescriptorError(f"{source}: {server!r} is not host:port with a port from 1 to 65535 "
                              "(for example idhost.example.org:2498)")
    return m.group("host"), port


def _scan(text: str, source) -> tuple[dict[str, tuple[int, re.Match]], list[str]]:
    """The directive lines (name -> (line index, match)) and all lines, with their endings."""
    lines = re.findall(r"[^\n]*\n|[^\n]+\Z", text)  # Datascope ends lines at \n only
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


def _server_of(m: re.Match, lineno: int, source) -> str:
    value, rest = m.group("value"), m.group("rest").strip()
    if rest and not rest.startswith("#"):
        raise DescriptorError(f"{source}, line {lineno}: unexpected {rest!r} after the dbidserver address; "
                              "write the line as dbidserver host:port")
    check_server(value, f"{source}, line {lineno}")
    return value


def parse_descriptor(text: str, source: str | os.PathLike[str]) -> Descriptor:
    """The directives of a descriptor's text; dbidserver is None when the line is absent."""
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


def _no_dbidserver(source: str | os.PathLike[str]) -> str:
    return (f"{source}: no dbidserver line; add a line 'dbidserver host:port' "
            "naming the id server before handing the database over")


def missing_descriptor(source: str | os.PathLike[str]) -> DescriptorError:
    """The error for a descriptor file that is not there."""
    return DescriptorError(f"{source}: no such database descriptor; correct the site's db setting "
                           "(the descriptor's path, relative to rtexec_dir) or create the descriptor")


def require_dbidserver(text: str, source: str | os.PathLike[str]) -> str:
    """The ID server a descriptor names; an error naming the file if it names none."""
    server = parse_descriptor(text, source).dbidserver
    if server is None:
        raise DescriptorError(_no_dbidserver(source))
    return server


def set_dbidserver(text: str, server: str, source: str | os.PathLike[str]) -> str:
    """The text with its dbidserver line naming ``server``; every other byte unchanged."""
    check_server(server)
    found, lines = _scan(text, source)
    if "dbidserver" not in found:
        raise DescriptorError(_no_dbidserver(source))
    i, m = found["dbidserver"]
    _server_of(m, i + 1, source)
    lines[i] = m.group("lead") + server + m.group("rest")
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
