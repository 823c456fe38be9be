"""The ``lastid`` table of the id server database (``dbids.lastid``), and the
arithmetic that hands the id server over from one site to the other.

Layout (css3.0 ``lastid``: Fields ( keyname keyvalue lddate ), Primary ( keyname );
keyname %-15s, keyvalue %8ld, lddate %17.5f epoch seconds; "exactly one row for each
keyname"): see css30.TABLES["lastid"] and the sources cited there. keyvalue is the last
value issued for the key; the id server issues keyvalue + 1 next.
"""
from __future__ import annotations

import os
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass

from antelope_ha.css30 import TABLES, TableFormatError, atomic_write

LASTID = TABLES["lastid"]
_KEYNAME_RE = re.compile(r"[a-z][a-z0-9_]{0,14}")


class LastidError(ValueError):
    """A lastid table that cannot be trusted as it is; the message names the file, the line and the fix."""


def parse_lastid(text: str, source: str | os.PathLike[str]) -> dict[str, int]:
    """keyname -> keyvalue of a lastid table's text. Every line must be a well-formed
    record; a keyname given twice or a negative keyvalue is an error, because either
    would let the id server issue an id that may already exist."""
    values: dict[str, int] = {}
    first_line: dict[str, int] = {}
    lines = text.split("\n")
    if lines[-1]:
        raise LastidError(
            f"{source}, line {len(lines)}: the file ends without a newline, in the middle of a record "
            "(an interrupted write); restore it from its replica or rewrite it with format_lastid")
    for lineno, line in enumerate(lines[:-1], 1):
        try:
            row = LASTID.parse_row(line, lineno, source)
        except TableFormatError as e:
            raise LastidError(f"{e}. A lastid line is keyname (%-15s), keyvalue (%8ld) and lddate "
                              "(%17.5f), one space apart") from e
        name, value = str(row["keyname"]), int(row["keyvalue"])
        if not _KEYNAME_RE.fullmatch(name):
            raise LastidError(f"{source}, line {lineno}: keyname {name!r} is not an id key name "
                              "(lower-case letters, digits, _); correct the line")
        if name in values:
            raise LastidError(
                f"{source}, line {lineno}: keyname {name} is also on line {first_line[name]}; lastid has "
                f"one row per key: keep the row with the larger keyvalue ({max(value, values[name])}) "
                "and delete the other")
        if value < 0:
            raise LastidError(f"{source}, line {lineno}: {name} keyvalue is {value}; the last id issued "
                              f"cannot be negative: set it to the highest {name} in use")
        values[name], first_line[name] = value, lineno
    return values


def read_lastid(path: str | os.PathLike[str]) -> dict[str, int]:
    """keyname -> keyvalue of a lastid table file such as ``dbids.lastid``."""
    with open(path, "rb") as f:
        return parse_lastid(f.read().decode("latin-1"), path)


def format_lastid(values: Mapping[str, int], lddate: float) -> str:
    """A lastid table's text, one record per key in keyname order; lddate in epoch seconds."""
    for name, value in values.items():
        if not _KEYNAME_RE.fullmatch(name):
            raise ValueError(f"lastid: {name!r} is not an id key name (lower-case letters, digits, _; at most 15)")
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ValueError(f"lastid: {name} keyvalue must be a non-negative integer, got {value!r}")
    return "".join(LASTID.format_row({"keyname": k, "keyvalue": values[k], "lddate": lddate})
                   for k in sorted(values))


def write_lastid(path: str | os.PathLike[str], values: Mapping[str, int], lddate: float | None = None) -> None:
    """Replace a lastid table atomically (lddate: now if not given)."""
    text = format_lastid(values, time.time() if lddate is None else lddate)
    atomic_write(path, text.encode("latin-1"))


def raised_lastid(current: Mapping[str, int], values: Mapping[str, int]) -> dict[str, int]:
    """``current`` with each key of ``values`` raised to at least its value: a
    lastid is never lowered (a lower one would let dbids reissue ids already
    handed out); keys only in ``current`` are kept as they are."""
    return {**current, **{k: max(current.get(k, 0), v) for k, v in values.items()}}


@dataclass(frozen=True)
class LastidPlan:
    """How the lastid of one key is chosen at failover; shown to operators before they approve."""

    key: str
    replicated: int | None  # MS's lastid as last replicated to BUS
    margin: int
    own_max: int | None  # highest id of this key in BUS's own database
    chosen: int
    reason: str

    def __str__(self) -> str:
        return f"{self.key}: {self.chosen} ({self.reason})"


def plan_failover_lastid(
    replicated: Mapping[str, int], margin: int | Mapping[str, int], own_max: Mapping[str, int]
) -> list[LastidPlan]:
    """The lastid BUS's id server starts from, per key, with the reason for each value.

    For every key in either mapping: max(replicated + margin, own_max + 1).

    - replicated + margin: MS may have issued ids after the last replication of its
      lastid reached BUS; the margin must cover every id MS can issue in one replication
      interval, so BUS never issues an id that MS's database already holds.
    - own_max + 1: BUS must never reissue an id already in its own database (it may hold
      rows written with ids from MS's server after the replicated copy was taken).
    """
    plans = []
    for key in sorted(set(replicated) | set(own_max)):
        rep, own = replicated.get(key), own_max.get(key)
        if isinstance(margin, Mapping):
            if rep is not None and key not in margin:
                raise ValueError(f"no failover margin for {key}; give one for every key in the replicated lastid")
            m = margin.get(key, 0)
        else:
            m = margin
        if m < 0:
            raise ValueError(f"failover margin for {key} is {m}; it must be zero or more")
        from_ms = None if rep is None else rep + m
        from_own = None if own is None else own + 1
        if from_own is not None and (from_ms is None or from_own > from_ms):
            chosen = from_own
            reason = (f"BUS's own database already holds {key} up to {own}"
                      + ("" if rep is None else f", above replicated {rep} + margin {m} = {from_ms}")
                      + "; starting above it keeps BUS from reissuing those ids")
        else:
            chosen = from_ms
            reason = (f"replicated {rep} + margin {m}: covers the ids MS may have issued since the "
                      f"last replication" + ("" if own is None else f"; BUS's own maximum {own} is below"))
        plans.append(LastidPlan(key, rep, m, own, chosen, reason))
    return plans


def failover_lastid(
    replicated: Mapping[str, int], margin: int | Mapping[str, int], own_max: Mapping[str, int]
) -> dict[str, int]:
    """keyname -> lastid for BUS's id server at failover; see plan_failover_lastid for why."""
    return {p.key: p.chosen for p in plan_failover_lastid(replicated, margin, own_max)}
